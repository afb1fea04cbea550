"""The CLI of credentials: ``theseus acl bootstrap``, ``theseus token``, ``theseus join-token``,
``theseus audit``, ``theseus context`` and ``theseus ca``.

Registered by ``theseus.cli.main``. The server does the work (``/v1/acl/...``, ``/v1/audit``)
except for ``theseus ca``, which makes a CA and certificates in a local directory for setting
a cluster up by hand (docs/security.md), and ``theseus context``, which edits the CLI's own
configuration file (``theseus.cli.contexts``). Secrets are printed once, when created, and
never again.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Annotated

import typer

from theseus.api.access_client import AccessApi
from theseus.cli import contexts
from theseus.cli.output import connect, console, fail, print_json, print_table, table
from theseus.security import pki
from theseus.security.files import PkiDir
from theseus.security.tokens import Scope

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``24h``, ``7d`` or plain seconds → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 10m, 24h or 7d")
    return float(match[1]) * _UNITS[match[2] or "s"]


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


acl_app = typer.Typer(help="Bootstrap the cluster's access control.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)
join_app = typer.Typer(help="Join tokens for new agents.", no_args_is_help=False)
context_app = typer.Typer(help="The CLI's saved clusters (as kubeconfig's contexts).")
ca_app = typer.Typer(help="A cluster CA and certificates, for setting up by hand.")


@acl_app.command("bootstrap")
def bootstrap(
    ctx: typer.Context,
    save_as: Annotated[
        str | None,
        typer.Option("--save-context", help="Save the server, CA and token as this context."),
    ] = None,
) -> None:
    """Issue the cluster's first admin token. Works once per cluster."""
    with connect(ctx) as client:
        created = AccessApi(client).bootstrap()
        servers = client.servers.addresses
    if save_as:
        state = ctx.find_root().obj
        ca = state.ca_cert.read_text() if state is not None and state.ca_cert else None
        path = contexts.set_context(
            save_as, contexts.Context(servers=servers, ca=ca, token=created.token)
        )
        console.print(f"saved context {save_as} in {path}")
    console.print(f"admin token (shown once, keep it safe): {created.token}")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="What the token is for (shown in audits).")],
    scope: Annotated[
        list[Scope], typer.Option(help="read, write or admin (each includes those before).")
    ],
    ttl: Annotated[str | None, typer.Option(help="Lifetime, e.g. 24h (default: none).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Create an API token; its secret is printed this once."""
    with connect(ctx) as client:
        created = AccessApi(client).create_token(
            name, list(scope), parse_duration(ttl) if ttl else None
        )
    if json_out:
        print_json(created)
        return
    console.print(created.token)


@token_app.command("list")
def token_list(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Every API token (never their secrets)."""
    with connect(ctx) as client:
        tokens = AccessApi(client).tokens().tokens
    if json_out:
        print_json(tokens)
        return
    view = table("ID", "NAME", "SCOPES", "CREATED", "EXPIRES", "BY")
    for t in tokens:
        view.add_row(
            t.id, t.name, ",".join(t.scopes), when(t.created_at), when(t.expires_at), t.created_by
        )
    print_table(view)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke an API token at once, on every server."""
    with connect(ctx) as client:
        revoked = AccessApi(client).revoke_token(token_id)
    console.print(f"revoked token {revoked.id} ({revoked.name})")


@token_app.command("whoami")
def token_whoami(ctx: typer.Context) -> None:
    """Who the server takes this CLI for."""
    with connect(ctx) as client:
        me = AccessApi(client).whoami()
    console.print(f"{me.kind} {me.name} ({', '.join(me.scopes) or 'no scopes'})")


@join_app.callback(invoke_without_command=True)
def join_token(
    ctx: typer.Context,
    ttl: Annotated[str, typer.Option(help="How long agents may join with it.")] = "24h",
) -> None:
    """Print a new join token for `theseus agent --join https://SERVER --token ...`."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx) as client:
        created = AccessApi(client).create_join_token(parse_duration(ttl))
    console.print(created.token)


@join_app.command("list")
def join_list(ctx: typer.Context, json_out: JsonOption = False) -> None:
    with connect(ctx) as client:
        listing = AccessApi(client).join_tokens().join_tokens
    if json_out:
        print_json(listing)
        return
    view = table("ID", "CREATED", "EXPIRES", "BY")
    for t in listing:
        view.add_row(t.id, when(t.created_at), when(t.expires_at), t.created_by)
    print_table(view)


@join_app.command("revoke")
def join_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a join token: no agent can join with it any more (those that did stay)."""
    with connect(ctx) as client:
        AccessApi(client).revoke_join_token(token_id)
    console.print(f"revoked join token {token_id}")


def audit(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="How far back, e.g. 10m.")] = "1h",
    json_out: JsonOption = False,
) -> None:
    """Recent writes through the API, and who made them."""
    start = datetime.datetime.now().timestamp() - parse_duration(since)
    with connect(ctx) as client:
        records = AccessApi(client).audit(since=start).records
    if json_out:
        print_json(records)
        return
    view = table("TIME", "WHO", "METHOD", "PATH", "STATUS")
    for r in records:
        view.add_row(when(r.at), r.who, r.method, r.path, str(r.status))
    print_table(view)


@context_app.command("list")
def context_list() -> None:
    saved = contexts.load()
    for name, context in sorted(saved.contexts.items()):
        mark = "*" if name == saved.current else " "
        console.print(f"{mark} {name}  {','.join(context.servers)}")


@context_app.command("use")
def context_use(name: Annotated[str, typer.Argument()]) -> None:
    saved = contexts.load()
    if name not in saved.contexts:
        fail(f"no context {name!r} (see `theseus context list`)")
    saved.current = name
    contexts.save(saved)
    console.print(f"using context {name}")


@context_app.command("set")
def context_set(
    name: Annotated[str, typer.Argument()],
    server: Annotated[str, typer.Option(help="Server URL(s), comma-separated.")],
    ca_cert: Annotated[Path | None, typer.Option(help="The cluster CA's certificate.")] = None,
    token: Annotated[
        str | None, typer.Option(envvar="THESEUS_TOKEN", help="API token.", show_default=False)
    ] = None,
) -> None:
    """Save a cluster's address, CA and token, and make it the current context."""
    context = contexts.Context(
        servers=[s.strip() for s in server.split(",") if s.strip()],
        ca=ca_cert.read_text() if ca_cert else None,
        token=token,
    )
    console.print(f"saved context {name} in {contexts.set_context(name, context)}")


@ca_app.command("init")
def ca_init(
    directory: Annotated[Path, typer.Option("--dir", help="Where to keep the CA.")],
    cluster: Annotated[str, typer.Option(help="A name for the cluster.")] = "theseus",
) -> None:
    """Create a cluster CA (ca.pem, ca-key.pem). Keep ca-key.pem on servers only."""
    files = PkiDir(directory)
    if files.ca_cert.exists():
        fail(f"{files.ca_cert} exists already: one CA per cluster")
    files.write_ca(pki.create_ca(cluster))
    console.print(f"created the CA in {directory} (pin {pki.ca_fingerprint(files.read_ca())})")


@ca_app.command("issue")
def ca_issue(
    directory: Annotated[Path, typer.Option("--dir", help="The CA's directory.")],
    role: Annotated[pki.Role, typer.Option(help="server, etcd or client.")],
    name: Annotated[str, typer.Option(help="The holder's name.")],
    address: Annotated[
        list[str] | None, typer.Option(help="An address the holder serves on (repeat).")
    ] = None,
    days: Annotated[float, typer.Option(min=0.001)] = pki.SERVER_DAYS,
    out: Annotated[str | None, typer.Option(help="File name (default: the role).")] = None,
) -> None:
    """Issue a certificate and key from the CA (agents get theirs by joining)."""
    files = PkiDir(directory)
    try:
        issued = pki.issue(
            files.read_ca_pair(), name=name, role=role, addresses=address or [], days=days
        )
    except pki.PkiError as exc:
        fail(str(exc))
    files.write(out or role.value, issued)
    console.print(f"wrote {files.cert(out or role.value)} and {files.key(out or role.value)}")


def register(app: typer.Typer) -> None:
    app.add_typer(acl_app, name="acl")
    app.add_typer(token_app, name="token")
    app.add_typer(join_app, name="join-token")
    app.add_typer(context_app, name="context")
    app.add_typer(ca_app, name="ca")
    app.command("audit")(audit)
