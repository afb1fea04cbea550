"""The ``theseus`` command: builds the typer app from one module per noun.

``main()`` is the console-script entry point (``pyproject.toml``) and ``python -m theseus``.
Global options (``--server``) land in ``ctx.obj`` as a ``CliState`` that commands read through
``theseus.cli.output.connect``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from theseus.api.client import DEFAULT_SERVER
from theseus.cli import (
    agent_cmd,
    cluster_cmds,
    deployments_cmd,
    images_cmd,
    logs_cmd,
    nodes_cmd,
    registry_cmd,
    server_cmd,
    workloads,
)
from theseus.cli.output import state_of

app = typer.Typer(
    name="theseus",
    help="Theseus: declare services in a short YAML file; Theseus runs them across your "
    "machines, keeps them running and lets them find each other.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global_options(
    ctx: typer.Context,
    server: Annotated[
        str,
        typer.Option(
            "--server",
            "-s",
            envvar="THESEUS_SERVER",
            help="Address of a Theseus server, or several separated by commas: the CLI moves "
            "to the next one when a server does not answer.",
        ),
    ] = DEFAULT_SERVER,
) -> None:
    state_of(ctx).server = server


workloads.register(app)
deployments_cmd.register(app)
logs_cmd.register(app)
registry_cmd.register(app)
nodes_cmd.register(app)
cluster_cmds.register(app)
images_cmd.register(app)
server_cmd.register(app)
agent_cmd.register(app)


def main() -> None:
    app()
