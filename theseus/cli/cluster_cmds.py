"""``theseus up`` and ``theseus down``: a whole cluster on this one machine.

Registered by ``theseus.cli.main``. ``up``/``down`` are thin: the supervision itself lives in
``theseus.cluster.local``; this module only parses options and prints.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from theseus.cli import contexts
from theseus.cli.output import (
    console,
    err_console,
)
from theseus.cluster import local
from theseus.cluster.commands import (
    DRIVERS,
    ClusterConfig,
    default_state_dir,
    parse_node_attributes,
)
from theseus.cluster.statefile import StateFileError

StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where etcd's data, logs and the cluster record live "
        "[default: $XDG_STATE_HOME/theseus or ~/.local/state/theseus]",
        show_default=False,
    ),
]


def _say(message: str) -> None:
    console.print(f"[dim]·[/] {message}")


def _cluster_error(exc: local.ClusterError | StateFileError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
    if isinstance(exc, local.ClusterError) and exc.log is not None:
        err_console.print(f"--- last lines of {exc.log} ---", style="dim")
        err_console.print(exc.log_tail or "", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def print_summary(result: local.UpResult) -> None:
    record = result.record
    if result.already_running:
        console.print(f"[green]a cluster is already running from {record.state_dir}[/]")
    else:
        console.print("[green]cluster is up[/]")
    if len(record.servers) == 1:
        console.print(f"  API         {record.api_url}  (docs: {record.api_url}/docs)")
    else:
        for url, process in zip(record.servers, record.by_role("server"), strict=False):
            role = local.server_role(url, local.record_access(record))
            console.print(f"  API         {url}  ({role}, pid {process.pid}; docs: {url}/docs)")
    if len(record.etcd_ports) == 1:
        console.print(f"  etcd        {record.etcd_endpoint}")
    else:
        members = zip(record.etcd_endpoints, record.by_role("etcd"), strict=False)
        for endpoint, process in members:
            console.print(f"  {process.name:<11} {endpoint}  (pid {process.pid})")
    if record.cluster_id:
        console.print(f"  cluster id  {record.cluster_id}")
    ready = {n.name for n in result.nodes}
    for agent in record.by_role("agent"):
        status = "ready" if agent.name in ready else "not ready"
        console.print(f"  {agent.name:<11} {agent.address}  ({status}, pid {agent.pid})")
    console.print(f"  state dir   {record.state_dir}")
    console.print(f"  logs        {Path(record.state_dir) / 'logs'}")
    default = (record.port == 5000 and len(record.servers) == 1) or record.api_url.startswith(
        "https"
    )  # a secure cluster's address is in the CLI context
    server = "" if default else f" -s {record.server_address}"
    state = (
        "" if Path(record.state_dir) == default_state_dir() else f" --state-dir {record.state_dir}"
    )
    console.print("next:")
    console.print(f"  theseus{server} deploy -f examples/test.json")
    console.print(f"  theseus{server} ps")
    console.print(f"  theseus{server} nodes")
    console.print(f"  theseus down{state}")


SECURE_CONTEXT = "local-secure"


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        nodes: Annotated[int, typer.Option(min=1, max=200, help="Number of agents.")] = 3,
        port: Annotated[int, typer.Option(min=1, max=65535, help="Server API port.")] = 5000,
        etcd_port: Annotated[
            int, typer.Option(min=1, max=65534, help="etcd client port (peer port: +1).")
        ] = 2379,
        state_dir: StateDirOption = None,
        driver: Annotated[
            str | None, typer.Option(help=f"Agents' driver: {', '.join(DRIVERS)}.")
        ] = None,
        node_cpus: Annotated[
            float | None, typer.Option(min=0.01, help="CPUs each node offers [default: measured]")
        ] = None,
        node_mem: Annotated[
            float | None, typer.Option(min=1, help="MB each node offers [default: measured]")
        ] = None,
        attribute: Annotated[
            list[str] | None,
            typer.Option(
                "--attr",
                help="Node attribute for placement constraints, repeatable: KEY=VALUE on "
                "every node, or KEY=V1,V2,... handed out in turn (--attr rack=r1,r2: node-1 "
                "r1, node-2 r2, node-3 r1).",
                show_default=False,
            ),
        ] = None,
        host_volume: Annotated[
            list[str] | None,
            typer.Option(
                metavar="NAME=/PATH[:ro]",
                help="A host directory every node offers to specs by name (`volumes: "
                "[NAME:/in/container]`), repeatable; see `theseus agent --help`.",
                show_default=False,
            ),
        ] = None,
        ha: Annotated[
            bool,
            typer.Option(
                "--ha",
                help="High availability: 3 etcd members and 2 servers (same as "
                "--etcd-members 3 --servers 2). Kill the leader or an etcd member and the "
                "cluster carries on.",
            ),
        ] = False,
        servers: Annotated[
            int | None,
            typer.Option(
                min=1,
                max=9,
                help="Number of servers, on --port, --port + 1, ... (one leads, all serve "
                "the API; agents are given all of them). (default: 1; 2 with --ha)",
                show_default=False,
            ),
        ] = None,
        etcd_members: Annotated[
            int | None,
            typer.Option(
                min=1,
                max=7,
                help="Number of etcd members, on --etcd-port, --etcd-port + 2, ... (3 survive "
                "the loss of one; their data is kept apart from a cluster of another size). "
                "(default: 1; 3 with --ha)",
                show_default=False,
            ),
        ] = None,
        secure: Annotated[
            bool,
            typer.Option(
                "--secure",
                help="The whole security model on this machine: a cluster CA, TLS, API tokens "
                "(an admin token is bootstrapped), agents joined with a join token and talking "
                "mutual TLS; the CLI's context is saved so that `theseus ps` just works.",
            ),
        ] = False,
    ) -> None:
        """Start etcd, a server and N agents on this machine (idempotent).

        With --ha: 3 etcd members and 2 servers (API on --port and --port + 1).

        Agents are given every server; so is the CLI: -s URL1,URL2 or THESEUS_SERVER.
        """
        if driver is not None and driver not in DRIVERS:
            raise typer.BadParameter(f"must be one of {', '.join(DRIVERS)}", param_hint="--driver")
        try:
            attributes = parse_node_attributes(attribute or [])
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--attr") from None
        config = ClusterConfig(
            state_dir=(state_dir or default_state_dir()).absolute(),
            nodes=nodes,
            port=port,
            etcd_port=etcd_port,
            driver=driver,
            node_cpus=node_cpus,
            node_mem=node_mem,
            python=sys.executable,
            servers=servers or (2 if ha else 1),
            etcd_members=etcd_members or (3 if ha else 1),
            attributes=attributes,
            host_volumes=tuple(host_volume or ()),
            secure=secure,
        )
        try:
            result = local.up(config, _say)
        except (local.ClusterError, StateFileError) as exc:
            raise _cluster_error(exc) from None
        if result.ca_cert is not None and result.admin_token is not None:
            context = contexts.Context(
                servers=result.record.servers,
                ca=result.ca_cert.decode(),
                token=result.admin_token,
            )
            path = contexts.set_context(SECURE_CONTEXT, context)
            _say(f"saved the CLI context {SECURE_CONTEXT} (admin token, CA) in {path}")
        else:
            console.print(
                "[yellow]development mode:[/] plain HTTP and no authentication on loopback "
                "(anyone on this machine can use the cluster); `theseus up --secure` runs "
                "the secure model"
            )
        print_summary(result)

    @app.command()
    def down(
        state_dir: StateDirOption = None,
        purge: Annotated[
            bool, typer.Option("--purge", help="Also delete the state dir (etcd data, logs).")
        ] = False,
    ) -> None:
        """Stop the cluster `theseus up` started and remove its containers."""
        try:
            local.down((state_dir or default_state_dir()).absolute(), purge, _say)
        except (local.ClusterError, StateFileError) as exc:
            raise _cluster_error(exc) from None
