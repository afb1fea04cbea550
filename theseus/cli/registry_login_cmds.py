"""The CLI of image registries' logins: ``theseus registry-login HOST``, ``registry-logout
HOST`` and ``registry-logins``. (``theseus registry`` is the service-discovery registry.)

Registered by ``theseus.cli.main``; the server stores the logins (``/v1/acl/registry-logins``)
and hands them to agents for their pulls. The password is read from stdin
(``--password-stdin``) or from a prompt on a terminal, never from the command line, where
``ps`` and the shell's history would show it; it is never printed.
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from theseus.api.access import registry_host_problem
from theseus.api.access_client import AccessApi
from theseus.cli.access_cmds import JsonOption, when
from theseus.cli.output import connect, console, fail, print_json, print_table, table

HostArgument = Annotated[str, typer.Argument(help="The registry's HOST[:PORT], as in image names.")]


def _host(host: str) -> str:
    problem = registry_host_problem(host)
    if problem is not None:
        raise typer.BadParameter(problem, param_hint="HOST")
    return host


def read_password(from_stdin: bool) -> str:
    """The password: stdin's first line with ``--password-stdin``, else a hidden prompt
    when stdin is a terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        fail("stdin is not a terminal: give the password on stdin with --password-stdin")
    if not password:
        fail("the password is empty")
    return password


def registry_login(
    ctx: typer.Context,
    host: HostArgument,
    username: Annotated[str, typer.Option("--username", "-u", help="The registry's user.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
) -> None:
    """Store a private image registry's login in the cluster, for the agents' pulls (admin)."""
    host = _host(host)
    password = read_password(password_stdin)
    with connect(ctx) as client:
        info = AccessApi(client).registry_login(host, username, password)
    console.print(f"stored the login of {info.username} for registry {info.host}")


def registry_logout(ctx: typer.Context, host: HostArgument) -> None:
    """Forget a registry's login (admin); pulls from it go without credentials."""
    with connect(ctx) as client:
        info = AccessApi(client).registry_logout(_host(host))
    console.print(f"removed the login for registry {info.host}")


def registry_logins(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """The registries the cluster has logins for, and their users (never passwords)."""
    with connect(ctx) as client:
        logins = AccessApi(client).registry_logins().logins
    if json_out:
        print_json(logins)
        return
    view = table("HOST", "USERNAME", "STORED", "BY")
    for login in logins:
        view.add_row(login.host, login.username, when(login.created_at), login.created_by)
    print_table(view)


def register(app: typer.Typer) -> None:
    app.command("registry-login")(registry_login)
    app.command("registry-logout")(registry_logout)
    app.command("registry-logins")(registry_logins)
