"""``theseus registry SERVICE`` (what containers see) and ``theseus cleanup`` (rebuild it)."""

from __future__ import annotations

from typing import Annotated

import typer

from theseus.cli.output import connect, console, format_group, print_json, print_table, table

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    @app.command("registry")
    def show_registry(
        ctx: typer.Context,
        service: Annotated[str, typer.Argument(help="Service whose registered instances to show.")],
        json_out: JsonOption = False,
    ) -> None:
        """Show a service's registered instances: what guestutils and watchers see."""
        with connect(ctx) as client:
            entries = client.registry(service)
        if json_out:
            print_json(entries)
            return
        view = table("GROUP", "INSTANCE", "HOST", "PORTS (name=host port->container port)")
        for group in entries.groups:
            for container in group.containers:
                ports = " ".join(
                    f"{name}={m.host_port}->{m.container_port}"
                    for name, m in sorted(container.port_mapping.items())
                )
                view.add_row(
                    format_group(service, group.labels),
                    container.instance_name,
                    container.instance_host,
                    ports,
                )
        if not view.row_count:
            console.print(f"no registered instances of {service!r}")
            return
        print_table(view)

    @app.command()
    def cleanup(ctx: typer.Context, json_out: JsonOption = False) -> None:
        """Rebuild the service registry from task state and show what changed.

        The original's /cleanup. Safe at any time."""
        with connect(ctx) as client:
            result = client.cleanup()
        if json_out:
            print_json(result)
            return
        for verb, keys in (("added", result.added), ("removed", result.removed)):
            for key in keys:
                console.print(f"{verb:<8} {key}")
        for key in result.updated:
            console.print(f"updated  {key}")
        if not (result.added or result.removed or result.updated):
            console.print("the registry already matched task state; nothing changed")
