"""``theseus cluster bootstrap|status|teardown -f hosts.yaml``: a cluster of real machines
set up, inspected and removed over SSH (docs/machines.md).

Registered by ``theseus.cli.main``. Parses options, runs ``theseus.provision`` and prints its
reports as tables; after a bootstrap it saves and selects the CLI context named after the
cluster (its servers, CA and admin token), so that ``theseus nodes`` works at once.
"""

from __future__ import annotations

import asyncio
import datetime
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from theseus.cli import contexts
from theseus.cli.output import console, err_console
from theseus.cluster.commands import default_state_dir
from theseus.provision import hosts as hosts_file
from theseus.provision.plan import PHASES, Step
from theseus.provision.wheelhouse import WheelhouseError
from theseus.provision.workstation import ClusterChangeRefused, Workstation, state_dir_for

# The runner and teardown (asyncssh: 0.2 s of imports) are imported by the commands that use
# them, not by every other command of the CLI.
if TYPE_CHECKING:
    from theseus.provision.run import Report, StepResult
    from theseus.provision.teardown import HostStatus

cluster_app = typer.Typer(
    name="cluster",
    help="Set a cluster of machines up over SSH, see how it is, tear it down "
    "(the hosts file: docs/machines.md).",
    no_args_is_help=True,
)

FileOption = Annotated[
    Path,
    typer.Option(
        "--file",
        "-f",
        help="The hosts file (docs/machines.md): the cluster's name, each host's SSH address, "
        "advertise address and role.",
        show_default=False,
    ),
]
StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where this workstation keeps the cluster's CA, admin token and host records "
        "[default: $XDG_STATE_HOME/theseus/clusters/<cluster>]",
        show_default=False,
    ),
]
AcceptOption = Annotated[
    list[str] | None,
    typer.Option(
        "--accept-host-key",
        metavar="HOST=SHA256:...",
        help="Trust this host key (the fingerprint an earlier run printed) for HOST (its name "
        "or address) and record it in the host's known_hosts file. Repeatable.",
    ),
]

STYLE = {"ok": "green", "changed": "yellow", "skipped": "dim", "failed": "bold red"}


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(1)


def _load(path: Path, state_dir: Path | None) -> tuple[hosts_file.HostsFile, Workstation]:
    try:
        hosts = hosts_file.load(path)
    except hosts_file.HostsFileError as exc:
        raise _fail(str(exc)) from None
    return hosts, Workstation(state_dir_for(hosts.cluster, state_dir), hosts.cluster)


def _accepted(values: list[str] | None) -> dict[str, str]:
    accepted: dict[str, str] = {}
    for value in values or []:
        host, sep, fingerprint = value.partition("=")
        if not sep or not fingerprint.startswith("SHA256:"):
            raise typer.BadParameter(
                f"{value!r}: give HOST=SHA256:... (as printed)", param_hint="--accept-host-key"
            )
        accepted[host] = fingerprint
    return accepted


def _wheelhouse_dir(explicit: Path | None) -> Path:
    return explicit if explicit is not None else default_state_dir() / "wheelhouse"


def _progress(result: StepResult) -> None:
    if result.status == "skipped":
        return
    style = STYLE.get(result.status, "")
    console.print(
        f"[dim]·[/] {result.host:<12} {result.phase:<10} [{style}]{result.status}[/] "
        f"[dim]{result.duration:.1f}s {escape(result.found)}[/]"
    )


def _table(report: Report, phases: tuple[str, ...], title: str) -> Table:
    """A row per step, a column per host: status and duration (``-``: not a step of it)."""
    hosts: dict[str, dict[str, StepResult]] = {}
    for result in report.results:
        hosts.setdefault(result.host, {})[result.phase] = result
    table = Table(title=title, title_justify="left")
    table.add_column("step")
    for host in hosts:
        table.add_column(host)
    for phase in phases:
        cells = []
        for results in hosts.values():
            found = results.get(phase)
            if found is None:
                cells.append("[dim]-[/]")
            else:
                style = STYLE.get(found.status, "")
                cells.append(f"[{style}]{found.status}[/] [dim]{found.duration:.1f}s[/]")
        table.add_row(phase, *cells)
    return table


def _print_failures(report: Report, command: str) -> None:
    for result in report.failed:
        err_console.print(
            f"[bold red]{escape(result.phase)} failed on {escape(result.host)}:[/] "
            f"{escape(result.error or '')}"
        )
    err_console.print(
        f"Fix the cause and run the same command again ({escape(command)}): the steps already "
        "done are found done and left as they are."
    )


def _print_plan(plans: dict[str, list[Step]]) -> None:
    for host, steps in plans.items():
        console.print(f"[bold]{escape(host)}[/]")
        for step in steps:
            if step.error is not None:
                console.print(f"  {step.phase:<10} [bold red]would fail:[/] {escape(step.error)}")
            elif not step.needed:
                console.print(f"  {step.phase:<10} [green]ok[/] [dim]{escape(step.check)}[/]")
            else:
                console.print(f"  {step.phase:<10} [yellow]change[/] [dim]{escape(step.check)}[/]")
                for command in step.commands:
                    console.print(f"      $ {escape(command.show())}")


def _save_context(report: Report) -> None:
    context = contexts.Context(
        servers=report.servers, ca=report.ca_pem.decode(), token=report.admin_token
    )
    path = contexts.set_context(report.cluster, context)
    console.print(
        f"CLI context [bold]{escape(report.cluster)}[/] saved in {path} and made current: "
        "`theseus nodes` talks to this cluster now."
    )


def _drop_context(cluster: str) -> None:
    saved = contexts.load()
    if cluster in saved.contexts:
        del saved.contexts[cluster]
        if saved.current == cluster:
            saved.current = None
        contexts.save(saved)


def bootstrap_command(
    file: FileOption,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Connect to every host and look at it (read only), then print each step's "
            "commands without running any: nothing changes on the hosts or here (but host keys "
            "accepted with --accept-host-key are recorded).",
        ),
    ] = False,
    accept_host_key: AcceptOption = None,
    state_dir: StateDirOption = None,
    wheelhouse_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the wheelhouse hosts install Theseus from is built and cached "
            "[default: $XDG_STATE_HOME/theseus/wheelhouse]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Set every host of the hosts file up, or bring it back to what the file says.

    Phases, each on every host at once: preflight, packages, docker, theseus, config,
    services, etcd, servers, agents (docs/machines.md says what each one does).

    Running it again changes nothing. An agent host added to the file is added.

    A failed step stops the run at the end of its phase: fix the cause, run it again.

    An unknown host key stops the run before anything changes and prints its fingerprint.

    At the end the CLI's current context is this cluster's: `theseus nodes` works at once.
    """
    from theseus.provision.run import Bootstrap, BootstrapError

    hosts, ws = _load(file, state_dir)
    boot = Bootstrap(hosts, ws, _wheelhouse_dir(wheelhouse_dir), _accepted(accept_host_key))
    boot.progress = _progress
    try:
        if dry_run:
            _print_plan(asyncio.run(boot.dry_run()))
            return
        report = asyncio.run(boot.run())
    except (BootstrapError, ClusterChangeRefused, WheelhouseError) as exc:
        raise _fail(str(exc)) from None
    console.print(_table(report, PHASES, f"cluster {hosts.cluster}: bootstrap"))
    if report.failed:
        _print_failures(report, f"theseus cluster bootstrap -f {shlex.quote(str(file))}")
        raise typer.Exit(1)
    changed = sum(1 for r in report.results if r.status == "changed")
    console.print(
        f"[green]cluster {escape(hosts.cluster)} is up[/] in {report.elapsed:.1f}s "
        f"({changed} steps changed something); servers: {', '.join(report.servers)}"
    )
    _save_context(report)


def _since(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _status_table(cluster: str, rows: list[HostStatus]) -> Table:
    """A row per service of each host, with the host's versions and its node on its first."""
    table = Table(title=f"cluster {cluster}", title_justify="left")
    columns = ("host", "service", "state", "pid", "since", "theseus", "docker", "etcd", "node")
    for column in columns:
        table.add_column(column)
    for row in rows:
        facts = row.facts
        names = (["etcd", "server"] if row.host.is_server else []) + (
            ["agent"] if row.host.is_agent else []
        )
        node = "-"
        if row.host.is_agent:
            node = (
                "[dim]unknown[/]"
                if row.node is None
                else f"{row.node.status} ({row.node.eligibility}, {row.node.tasks} tasks)"
            )
        for index, name in enumerate(names):
            state = facts.service(name)
            first = index == 0
            table.add_row(
                f"{row.host.name} ({row.host.role})" if first else "",
                name,
                "[green]running[/]" if state.running else "[red]stopped[/]",
                str(state.pid or "-") if state.running else "-",
                _since(state.since) if state.running else "-",
                f"{facts.theseus_version or '-'} ({facts.build or 'none'})" if first else "",
                (facts.docker or "[red]no answer[/]") if first else "",
                ((facts.etcd or "-") if row.host.is_server else "-") if first else "",
                node if first else "",
            )
    return table


def status_command(
    file: FileOption, accept_host_key: AcceptOption = None, state_dir: StateDirOption = None
) -> None:
    """Show every host's services, versions and node.

    Per host: each service running or stopped (pid, since), the Theseus version and build on
    it, Docker's and etcd's versions, and its node as the API sees it.
    """
    from theseus.provision.run import Bootstrap, BootstrapError
    from theseus.provision.teardown import status

    hosts, ws = _load(file, state_dir)
    boot = Bootstrap(hosts, ws, _wheelhouse_dir(None), _accepted(accept_host_key))
    try:
        rows = asyncio.run(status(boot))
    except BootstrapError as exc:
        raise _fail(str(exc)) from None
    console.print(_status_table(hosts.cluster, rows))


def teardown_command(
    file: FileOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    keep_packages: Annotated[
        bool,
        typer.Option(
            "--keep-packages", help="Leave the Debian packages bootstrap installed in place."
        ),
    ] = False,
    accept_host_key: AcceptOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Remove the cluster from every host, and this workstation's state of it.

    Agents, servers and etcd stopped, in that order; the containers of the cluster's tasks
    removed from each host's engine; the units or supervisors, everything made under each
    host's prefix and the packages bootstrap installed removed (see --keep-packages).

    Then the cluster's CA, admin token and records here, and its CLI context.
    """
    from theseus.provision.run import Bootstrap, BootstrapError
    from theseus.provision.teardown import TEARDOWN_PHASES, teardown

    hosts, ws = _load(file, state_dir)
    if not yes:
        typer.confirm(
            f"Remove cluster {hosts.cluster} from {len(hosts.hosts)} hosts, with its tasks' "
            "containers and etcd's data?",
            abort=True,
        )
    boot = Bootstrap(hosts, ws, _wheelhouse_dir(None), _accepted(accept_host_key))
    boot.progress = _progress
    try:
        report = asyncio.run(teardown(boot, keep_packages))
    except BootstrapError as exc:
        raise _fail(str(exc)) from None
    console.print(_table(report, TEARDOWN_PHASES, f"cluster {hosts.cluster}: teardown"))
    if report.failed:
        _print_failures(report, f"theseus cluster teardown -f {shlex.quote(str(file))}")
        raise typer.Exit(1)
    _drop_context(hosts.cluster)
    console.print(f"[green]cluster {escape(hosts.cluster)} removed[/] in {report.elapsed:.1f}s")


def register(app: typer.Typer) -> None:
    cluster_app.command("bootstrap")(bootstrap_command)
    cluster_app.command("status")(status_command)
    cluster_app.command("teardown")(teardown_command)
    app.add_typer(cluster_app)
