"""``theseus up`` and ``theseus down``: a whole cluster on this one machine.

Registered by ``theseus.cli.main``. ``up``/``down`` are thin: the supervision itself lives in
``theseus.cluster.local``; this module only parses options and prints.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from theseus.cli.output import (
    console,
    err_console,
)
from theseus.cluster import local
from theseus.cluster.commands import DRIVERS, ClusterConfig, default_state_dir
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
    console.print(f"  API         {record.api_url}  (docs: {record.api_url}/docs)")
    console.print(f"  etcd        {record.etcd_endpoint}")
    if record.cluster_id:
        console.print(f"  cluster id  {record.cluster_id}")
    ready = {n.name for n in result.nodes}
    for agent in record.by_role("agent"):
        status = "ready" if agent.name in ready else "not ready"
        console.print(f"  {agent.name:<11} {agent.address}  ({status}, pid {agent.pid})")
    console.print(f"  state dir   {record.state_dir}")
    console.print(f"  logs        {Path(record.state_dir) / 'logs'}")
    server = "" if record.port == 5000 else f" -s {record.api_url}"
    state = (
        "" if Path(record.state_dir) == default_state_dir() else f" --state-dir {record.state_dir}"
    )
    console.print("next:")
    console.print(f"  theseus{server} deploy -f examples/test.json")
    console.print(f"  theseus{server} ps")
    console.print(f"  theseus{server} nodes")
    console.print(f"  theseus down{state}")


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
    ) -> None:
        """Start etcd, a server and N agents on this machine (idempotent)."""
        if driver is not None and driver not in DRIVERS:
            raise typer.BadParameter(f"must be one of {', '.join(DRIVERS)}", param_hint="--driver")
        config = ClusterConfig(
            state_dir=(state_dir or default_state_dir()).absolute(),
            nodes=nodes,
            port=port,
            etcd_port=etcd_port,
            driver=driver,
            node_cpus=node_cpus,
            node_mem=node_mem,
            python=sys.executable,
        )
        try:
            result = local.up(config, _say)
        except (local.ClusterError, StateFileError) as exc:
            raise _cluster_error(exc) from None
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
