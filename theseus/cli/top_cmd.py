"""``theseus top [SERVICE]``: what each running task uses, live (as ``docker stats`` and
``kubectl top``).

Registered by ``theseus.cli.main``. One ``GET /v1/stats`` per refresh: the server asks the
agents of the tasks' nodes for their latest samples (taken every agent's ``--stats-interval``,
10 s by default, from the tasks' cgroups). ``--once`` prints one table and exits; a pod has a
row for its total and one per member.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from theseus.api.schemas import ContainerUsage, StatsList
from theseus.cli.output import (
    connect,
    console,
    format_bytes,
    format_cores,
    print_json,
    print_table,
    table,
)

COLUMNS = (
    "TASK",
    "SERVICE",
    "NODE",
    "CPU",
    "THROTTLED",
    "MEM",
    "LIMIT",
    "MEM %",
    "RSS",
    "CACHE",
    "PIDS",
    "NET RX / TX",
    "OOM",
)


def usage_cells(usage: ContainerUsage) -> list[str]:
    """The figures of one row (from ``CPU`` on); ``-`` for what was not measured."""
    working_set, limit = usage.memory_working_set_bytes, usage.memory_limit_bytes
    percent = "-"
    if working_set is not None and limit:
        percent = f"{100 * working_set / limit:.1f}%"
    throttled = "-"
    if usage.cpu_throttled_seconds is not None:
        throttled = f"{usage.cpu_throttled_seconds:.1f}s"
    network = "-"
    if usage.network_rx_bytes is not None and usage.network_tx_bytes is not None:
        network = f"{format_bytes(usage.network_rx_bytes)} / {format_bytes(usage.network_tx_bytes)}"
    return [
        format_cores(usage.cpu_cores),
        throttled,
        format_bytes(working_set),
        format_bytes(limit) if limit is not None else "none",
        percent,
        format_bytes(usage.memory_rss_bytes),
        format_bytes(usage.memory_cache_bytes),
        "-" if usage.processes is None else str(usage.processes),
        network,
        "-" if usage.oom_kills is None else str(usage.oom_kills),
    ]


def stats_table(listing: StatsList) -> Table:
    view = table(*COLUMNS)
    for task in listing.tasks:
        if not task.samples:
            continue
        sample = task.samples[-1]
        view.add_row(task.task_id, escape(task.service), task.node, *usage_cells(sample))
        for name, member in sample.members.items():
            view.add_row(f"  └ {escape(name)}", "", "", *usage_cells(member))
    return view


def _footer(listing: StatsList, service: str | None) -> Text:
    shown = sum(1 for t in listing.tasks if t.samples)
    what = f"service {service}" if service else "the cluster"
    line = f"{shown} running tasks of {what}"
    if listing.unreachable:
        line += f"; no answer from the agents of {', '.join(listing.unreachable)}"
    return Text(line, style="dim")


def register(app: typer.Typer) -> None:
    @app.command()
    def top(
        ctx: typer.Context,
        service: Annotated[
            str | None, typer.Argument(help="Only this service's tasks (default: all).")
        ] = None,
        once: Annotated[bool, typer.Option("--once", help="Print one table and exit.")] = False,
        interval: Annotated[
            float, typer.Option(min=0.5, help="Seconds between two refreshes.")
        ] = 2.0,
        json_out: Annotated[
            bool, typer.Option("--json", help="Print JSON (implies --once).")
        ] = False,
    ) -> None:
        """What each running task uses now: CPU cores, throttling, memory (working set,
        limit, RSS, cache), processes, network, OOM kills; refreshed until Ctrl-C."""
        with connect(ctx) as client:
            if once or json_out:
                listing = client.stats(service)
                if json_out:
                    print_json(listing)
                    return
                if not any(t.samples for t in listing.tasks):
                    console.print(_footer(listing, service))
                    return
                print_table(stats_table(listing))
                if listing.unreachable:
                    console.print(_footer(listing, service))
                return
            try:
                with Live(console=console, auto_refresh=False) as live:
                    while True:
                        listing = client.stats(service)
                        live.update(
                            Group(stats_table(listing), _footer(listing, service)), refresh=True
                        )
                        time.sleep(interval)
            except KeyboardInterrupt:
                return
