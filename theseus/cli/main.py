"""The ``theseus`` command: builds the typer app from one module per noun.

``main()`` is the console-script entry point (``pyproject.toml``) and ``python -m theseus``.
Global options (``--server``) land in ``ctx.obj`` as a ``CliState`` that commands read through
``theseus.cli.output.connect``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from theseus.api.client import DEFAULT_SERVER
from theseus.cli import (
    access_cmds,
    agent_cmd,
    cluster_cmds,
    deployments_cmd,
    events_cmd,
    images_cmd,
    logs_cmd,
    nodes_cmd,
    provision_cmd,
    registry_cmd,
    registry_login_cmds,
    server_cmd,
    top_cmd,
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
        str | None,
        typer.Option(
            "--server",
            "-s",
            envvar="THESEUS_SERVER",
            help="Address of a Theseus server, or several separated by commas: the CLI moves "
            f"to the next one when a server does not answer (default: the current context's, "
            f"else {DEFAULT_SERVER}).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="THESEUS_TOKEN",
            help="API token (default: the current context's).",
            show_default=False,
        ),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            "--ca-cert",
            envvar="THESEUS_CA_CERT",
            help="The cluster CA's certificate, to verify https servers (default: the current "
            "context's).",
            show_default=False,
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            envvar="THESEUS_CONTEXT",
            help="A saved context to use instead of the current one (`theseus context list`).",
            show_default=False,
        ),
    ] = None,
) -> None:
    state = state_of(ctx)
    state.server, state.token, state.ca_cert, state.context = server, token, ca_cert, context


workloads.register(app)
deployments_cmd.register(app)
logs_cmd.register(app)
registry_cmd.register(app)
nodes_cmd.register(app)
top_cmd.register(app)
cluster_cmds.register(app)
provision_cmd.register(app)
images_cmd.register(app)
server_cmd.register(app)
agent_cmd.register(app)
access_cmds.register(app)
registry_login_cmds.register(app)
events_cmd.register(app)


def main() -> None:
    app()
