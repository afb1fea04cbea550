"""``theseus deploy``, ``ps``, ``scale`` and ``rm``: the commands that change or show workloads.

Registered on the app by ``theseus.cli.main``. ``deploy`` sends the document text unchanged to
``POST /deploy`` (the original's endpoint) and then, unless ``--detach``, follows the affected
groups (``theseus.cli.progress``) until they converge, fail or the deadline passes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from theseus.cli.output import (
    TASK_COLUMNS,
    change_line,
    connect,
    console,
    err_console,
    fail,
    parse_label_options,
    plan_lines,
    print_changes,
    print_json,
    print_table,
    table,
    task_row,
)
from theseus.cli.progress import follow_deployment, watch_targets
from theseus.model.spec import SpecError, parse_deploy_document, parse_document_text

LabelsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--labels",
        "-l",
        help="One label per option (labels may contain commas or spaces); repeat for a set. "
        "`--labels ''` names the group without labels.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _read_document(file: str) -> tuple[str, str]:
    """The document's text and its content type; ``-`` reads stdin."""
    if file == "-":
        return sys.stdin.read(), "application/x-yaml"
    try:
        text = Path(file).read_text()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    kind = "application/json" if file.endswith(".json") else "application/x-yaml"
    return text, kind


def register(app: typer.Typer) -> None:
    @app.command()
    def deploy(
        ctx: typer.Context,
        file: Annotated[
            str, typer.Option("--file", "-f", help="Deploy document (YAML or JSON; - for stdin).")
        ],
        detach: Annotated[
            bool, typer.Option("--detach", "-d", help="Return once the change is accepted.")
        ] = False,
        timeout: Annotated[
            float, typer.Option(help="Seconds to wait for convergence before giving up.")
        ] = 300.0,
        json_out: JsonOption = False,
    ) -> None:
        """Apply a deploy:/remove: document, then follow the rollout until it converges."""
        text, content_type = _read_document(file)
        try:
            document = parse_deploy_document(parse_document_text(text))
        except SpecError as exc:  # fail fast, with the same paths the server would report
            err_console.print("[bold red]error:[/] invalid deploy document")
            for error in exc.errors:
                err_console.print(f"  {error['path']}: {error['message']}", soft_wrap=True)
            raise typer.Exit(1) from None
        with connect(ctx) as client:
            result = client.deploy(text, content_type)
            if json_out:
                print_json(result)
            else:
                for change in result.changes:
                    console.print(change_line(change))
            targets = watch_targets(result, document)
            if detach or not targets:
                return
            code = follow_deployment(client, targets, timeout)
        if code:
            raise typer.Exit(code)

    @app.command()
    def plan(
        ctx: typer.Context,
        file: Annotated[
            str, typer.Option("--file", "-f", help="Deploy document (YAML or JSON; - for stdin).")
        ],
        json_out: JsonOption = False,
    ) -> None:
        """Show what `deploy -f FILE` would do, and change nothing.

        Each group's action, the fields an update changes, where new tasks would go, which
        would wait and why, and how long a node cut off from every server keeps its tasks
        (stop_after_server_loss_seconds). A rolling update shows its first step."""
        text, content_type = _read_document(file)
        with connect(ctx) as client:
            result = client.deploy(text, content_type, dry_run=True)
        if json_out:
            print_json(result)
            return
        for change in result.changes:
            console.print(change_line(change))
            for line in plan_lines(change):
                console.print(line)

    @app.command()
    def ps(
        ctx: typer.Context,
        service: Annotated[str | None, typer.Argument(help="Only this service's tasks.")] = None,
        all_tasks: Annotated[
            bool, typer.Option("--all", "-a", help="Include stopped and exited tasks.")
        ] = False,
        json_out: JsonOption = False,
    ) -> None:
        """List tasks: where they run, their ports and state."""
        with connect(ctx) as client:
            tasks = client.tasks(service=service, include_stopped=all_tasks).tasks
        if json_out:
            print_json(tasks)
            return
        if not tasks:
            console.print("no tasks" + (f" for service {service!r}" if service else ""))
            return
        view = table(*TASK_COLUMNS)
        now = time.time()
        for task in tasks:
            view.add_row(*task_row(task, now))
        print_table(view)

    @app.command()
    def scale(
        ctx: typer.Context,
        service: Annotated[str, typer.Argument(help="Service to scale.")],
        instances: Annotated[int, typer.Argument(min=0, help="Desired number of instances.")],
        labels: LabelsOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Change a group's instance count; running tasks are kept, none is restarted."""
        wanted = parse_label_options(labels)
        with connect(ctx) as client:
            result = client.scale(service, instances, wanted)
        print_changes(result, json_out)

    @app.command("rm")
    def remove(
        ctx: typer.Context,
        service: Annotated[str, typer.Argument(help="Service to remove.")],
        labels: LabelsOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Remove one group of a service (--labels), or all of its groups; their tasks stop."""
        wanted = parse_label_options(labels)
        with connect(ctx) as client:
            result = client.remove(service, wanted)
        print_changes(result, json_out)
