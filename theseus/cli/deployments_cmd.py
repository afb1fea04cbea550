"""``theseus deployments``, ``history``, ``rollback`` and ``restart``: controlled rollouts.

* ``theseus deployments [--all]`` lists running deployments (with ``--all`` the finished ones
  kept too, newest first); ``theseus deployments cancel ID [--force]`` cancels one: its group
  goes back to the version before it, or with ``--force`` stays where it is;
* ``theseus history SERVICE`` lists a group's kept spec versions, the current one marked;
* ``theseus rollback SERVICE [VERSION]`` gives the group an earlier version's spec again;
* ``theseus restart SERVICE`` replaces every task of the group with a fresh one, same spec.

Registered by ``theseus.cli.main``; the work is the server's (``/v1/deployments``,
``/v1/groups/{service}/versions|rollback|restart``), the semantics Marathon's and Nomad's
(``docs/deployments.md``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape

from theseus.api.rollouts import VersionInfo
from theseus.cli.output import (
    connect,
    console,
    format_age,
    format_group,
    parse_label_options,
    print_changes,
    print_json,
    print_table,
    table,
)
from theseus.model.deployments import DeploymentRecord

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
LabelsOption = Annotated[
    list[str] | None,
    typer.Option("--labels", "-l", help="The group's labels, one per option."),
]
DEPLOYMENT_COLUMNS = ("ID", "SERVICE", "KIND", "VERSION", "STATUS", "PROGRESS", "AGE", "MESSAGE")
_STATUS_STYLE = {
    "running": "yellow",
    "successful": "green",
    "failed": "red",
    "cancelled": "magenta",
    "superseded": "dim",
}

deployments_app = typer.Typer(
    help="List deployments (changes of a group being rolled out); cancel one.",
    no_args_is_help=False,
)


def deployment_row(deployment: DeploymentRecord, now: float) -> list[str]:
    start = deployment.from_version
    versions = f"{start if start is not None else '-'}→{deployment.to_version}"
    status = f"[{_STATUS_STYLE[deployment.status]}]{deployment.status}[/]"
    age = format_age(now - deployment.started_at)
    if deployment.running:
        age += f" (deadline in {format_age(deployment.deadline - now)})"
    return [
        deployment.id,
        escape(format_group(deployment.service, deployment.labels)),
        deployment.kind,
        versions,
        status,
        f"{deployment.ready}/{deployment.instances}",
        age,
        escape(deployment.message),
    ]


@deployments_app.callback(invoke_without_command=True)
def deployments(
    ctx: typer.Context,
    include_finished: Annotated[
        bool, typer.Option("--all", "-a", help="Include finished deployments (newest first).")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """List running deployments (--all: finished ones too)."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx) as client:
        listing = client.deployments(include_finished).deployments
    if json_out:
        print_json(listing)
        return
    if not listing:
        console.print("no running deployments" if not include_finished else "no deployments")
        return
    view = table(*DEPLOYMENT_COLUMNS)
    now = time.time()
    for deployment in listing:
        view.add_row(*deployment_row(deployment, now))
    print_table(view)


@deployments_app.command()
def cancel(
    ctx: typer.Context,
    deployment_id: Annotated[
        str, typer.Argument(help="The deployment (see `theseus deployments`).")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Only mark it cancelled; do not roll back.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Cancel a running deployment: its group goes back to the version before it."""
    with connect(ctx) as client:
        cancelled = client.cancel_deployment(deployment_id, force)
    if json_out:
        print_json(cancelled)
        return
    console.print(f"{cancelled.id} {cancelled.status}: {escape(cancelled.message)}")


def version_row(version: VersionInfo) -> list[str]:
    when = datetime.fromtimestamp(version.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    marker = "*" if version.current else ""
    return [
        f"{version.number}{marker}",
        version.digest,
        when,
        escape(", ".join(version.images)),
        str(version.instances),
        version.deployment or "-",
    ]


def register(app: typer.Typer) -> None:
    app.add_typer(deployments_app, name="deployments")

    @app.command()
    def history(
        ctx: typer.Context,
        service: Annotated[str, typer.Argument(help="The service.")],
        labels: LabelsOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """List a group's kept spec versions (newest first; * marks the current one)."""
        with connect(ctx) as client:
            listing = client.versions(service, parse_label_options(labels))
        if json_out:
            print_json(listing)
            return
        view = table("VERSION", "DIGEST", "CREATED (UTC)", "IMAGES", "INSTANCES", "DEPLOYMENT")
        for version in listing.versions:
            view.add_row(*version_row(version))
        print_table(view)

    @app.command()
    def rollback(
        ctx: typer.Context,
        service: Annotated[str, typer.Argument(help="The service.")],
        version: Annotated[
            int | None,
            typer.Argument(min=1, help="The version to go back to (default: the previous one)."),
        ] = None,
        labels: LabelsOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Give a group an earlier version's spec again (a new version, rolled out)."""
        with connect(ctx) as client:
            result = client.rollback(service, version, parse_label_options(labels))
        print_changes(result, json_out)

    @app.command()
    def restart(
        ctx: typer.Context,
        service: Annotated[str, typer.Argument(help="The service.")],
        labels: LabelsOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Replace every task of a group with a fresh one of the same spec, rolled out under
        its upgrade strategy (a deployment of kind restart; Marathon's app restart)."""
        with connect(ctx) as client:
            result = client.restart(service, parse_label_options(labels))
        print_changes(result, json_out)
