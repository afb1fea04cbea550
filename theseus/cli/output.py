"""Shared CLI plumbing: the per-invocation context, error reporting and row formatting.

Owns how the CLI turns ``ServerUnreachable`` / ``ApiError`` into one clear message and exit
code 1 (no tracebacks), and the pure formatters of task, node and change rows. Called by every
command module; the formatters are unit-tested directly.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from theseus.api.client import DEFAULT_SERVER, ApiError, ServerClient, ServerUnreachable
from theseus.api.schemas import DeployResult, GroupChange, NodeInfo, TaskInfo
from theseus.cli import contexts
from theseus.security.tls import client_context

# soft_wrap: lines are never hard-wrapped (copy-paste and grep keep working); tables still fit.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
PIPE_WIDTH = 400


@dataclass
class CliState:
    """``ctx.obj``: the global options. Tests pass one with a mock ``transport``.

    What is not given as an option (or in ``THESEUS_SERVER``, ``THESEUS_TOKEN``,
    ``THESEUS_CA_CERT``) comes from the CLI context (``theseus.cli.contexts``): the one named
    by ``--context``, or the current one; without either, a development cluster on this
    machine."""

    server: str | None = None
    transport: httpx.BaseTransport | None = None
    token: str | None = None
    ca_cert: Path | None = None
    context: str | None = None

    def client(self, timeout: float = 10.0) -> ServerClient:
        try:
            saved = contexts.resolve(self.context)
        except contexts.ContextError as exc:
            fail(str(exc))
        server = self.server or (",".join(saved.servers) if saved else DEFAULT_SERVER)
        token = self.token or (saved.token if saved else None)
        ca_pem = self.ca_cert.read_bytes() if self.ca_cert else None
        if ca_pem is None and saved is not None and saved.ca:
            ca_pem = saved.ca.encode()
        tls = client_context(ca_pem=ca_pem) if ca_pem else None
        return ServerClient(server, timeout=timeout, transport=self.transport, tls=tls, token=token)


def state_of(ctx: typer.Context) -> CliState:
    return ctx.ensure_object(CliState)


def fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(1)


def unreachable_message(address: str) -> str:
    return (
        f"cannot reach the Theseus server at {address} "
        "(is it running? try `theseus up`, or pass --server / set THESEUS_SERVER)"
    )


def report_api_error(exc: ApiError) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
    for detail in exc.details:
        err_console.print(f"  {detail.get('path')}: {detail.get('message')}", soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn the client's exceptions into one message on stderr and exit code 1."""
    try:
        yield
    except ServerUnreachable as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc.cause):
            fail(
                f"the server at {exc.address} presents a certificate this CLI does not trust: "
                "give the cluster's CA (--ca-cert, THESEUS_CA_CERT) or use a context that has "
                "it (`theseus context list`)"
            )
        fail(unreachable_message(exc.address))
    except ApiError as exc:
        report_api_error(exc)


@contextmanager
def connect(ctx: typer.Context, timeout: float = 10.0) -> Iterator[ServerClient]:
    with api_errors(), state_of(ctx).client(timeout) as client:
        yield client


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [item.model_dump(mode="json") for item in value]
    # print() rather than rich: scripts want the exact bytes, with no wrapping or markup.
    print(json.dumps(data, indent=2))


def table(*columns: str) -> Table:
    """A borderless table; the first column (an id or a name) is never wrapped."""
    result = Table(box=None, pad_edge=False, header_style="bold")
    for index, column in enumerate(columns):
        result.add_column(column, overflow="fold", no_wrap=index == 0)
    return result


def print_table(view: Table) -> None:
    # Piped output is for grep and awk: never wrap it at rich's default of 80 columns.
    if console.is_terminal:
        console.print(view)
    else:
        Console(highlight=False, width=PIPE_WIDTH, file=sys.stdout).print(view)


# --- formatters (pure) --------------------------------------------------------------------


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def format_labels(labels: Sequence[str]) -> str:
    return ",".join(labels) if labels else "-"


def format_group(service: str, labels: Sequence[str]) -> str:
    return f"{service} [{format_labels(labels)}]"


def format_ports(task: TaskInfo) -> str:
    parts = []
    for name, port in sorted(task.ports.items()):
        if port.host_port is None:
            parts.append(f"{name}=-:{port.container_port}")
        else:
            parts.append(f"{name}={task.address or '?'}:{port.host_port}")
    return " ".join(parts) or "-"


def format_state(task: TaskInfo, now: float) -> str:
    state: str = task.state
    if task.desired == "stop" and task.state in ("assigned", "starting", "running"):
        state = "stopping"
    if task.state == "pending" and task.pending_reason:
        state += f" ({task.pending_reason})"
    elif task.state == "exited" and task.oom_killed:
        code = f", code {task.exit_code}" if task.exit_code is not None else ""
        state += f" (OOM-killed{code})"
    elif task.state == "exited" and task.message:
        state += f" ({task.message})"  # e.g. which member of a pod exited, with its code
    elif task.state == "exited" and task.exit_code is not None:
        state += f" (code {task.exit_code})"
    elif task.state in ("failed", "lost", "starting") and task.message:
        state += f" ({task.message})"
    elif state == "running" and task.health is not None:
        state += f" ({format_health(task)})"
    extra = []
    if task.attempt:
        extra.append(f"attempt {task.attempt + 1}")
    if task.not_before is not None and task.not_before > now:
        extra.append(f"backoff {math.ceil(task.not_before - now)}s of {task.backoff_delay:g}s")
    if extra:
        state += ", " + ", ".join(extra)
    return state


def format_health(task: TaskInfo) -> str:
    """``healthy``, ``unhealthy: HTTP 404 from /health``, ``health unknown``..."""
    word = "health unknown" if task.health == "unknown" else str(task.health)
    return f"{word}: {task.health_message}" if task.health_message else word


def task_row(task: TaskInfo, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    return [
        task.id,
        task.service,
        format_labels(task.labels),
        task.node or "-",
        format_ports(task),
        format_state(task, now),
        format_age(now - task.created_at),
    ]


TASK_COLUMNS = ("ID", "SERVICE", "LABELS", "NODE", "PORTS", "STATE", "AGE")


def node_row(node: NodeInfo) -> list[str]:
    return [
        node.name,
        node.address,
        node.status,
        node.eligibility,
        node.driver,
        f"{node.used_cpus:g}/{node.cpus:g}",
        f"{node.used_mem:.0f}/{node.mem:.0f} MB",
        "-" if node.usage is None else format_cores(node.usage.cpu_cores),
        "-" if node.usage is None else format_bytes(node.usage.memory_bytes),
        str(node.tasks),
        escape(format_host_volumes(node)),
        format_allows(node),
        escape(" ".join(f"{k}={v}" for k, v in sorted(node.attributes.items())) or "-"),
    ]


def format_cores(cores: float | None) -> str:
    """CPU cores used: ``0.52``; ``-`` when not measured (yet)."""
    return "-" if cores is None else f"{cores:.2f}"


def format_bytes(size: float | None) -> str:
    """``512 KiB``, ``64.0 MiB``, ``1.50 GiB``; ``-`` when not measured."""
    if size is None:
        return "-"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KiB"
    if size < 1024**3:
        return f"{size / 1024**2:.1f} MiB"
    return f"{size / 1024**3:.2f} GiB"


def format_host_volumes(node: NodeInfo) -> str:
    """``data logs:ro``: the host volumes specs may mount there (``--host-volume``)."""
    names = [v.name + (":ro" if v.read_only else "") for v in node.gates.host_volumes]
    return " ".join(sorted(names)) or "-"


def format_allows(node: NodeInfo) -> str:
    """``privileged host-ns +NET_ADMIN``: what the node's agent allows beyond the defaults."""
    gates = node.gates
    allowed = ["privileged"] if gates.allow_privileged else []
    allowed += ["host-ns"] if gates.allow_host_namespaces else []
    allowed += [f"+{cap}" for cap in gates.allow_caps]
    return " ".join(allowed) or "-"


NODE_COLUMNS = (
    "NAME",
    "ADDRESS",
    "STATUS",
    "ELIGIBILITY",
    "DRIVER",
    "CPUS",
    "MEM",
    "CPU USED",  # what its tasks use (their cgroups), not what they reserve
    "MEM USED",
    "TASKS",
    "HOST VOLUMES",
    "ALLOWS",
    "ATTRIBUTES",
)

_ACTION_STYLE = {
    "created": "green",
    "scaled": "cyan",
    "updated": "yellow",
    "restarted": "yellow",
    "configured": "cyan",
    "unchanged": "dim",
    "removed": "red",
    "absent": "dim",
}


def change_line(change: GroupChange) -> str:
    """``created  ingestor [monkey] (3 instances)``, with rich markup."""
    line = f"[{_ACTION_STYLE[change.action]}]{change.action:<9}[/] "
    line += escape(format_group(change.service, change.labels))
    if change.instances is not None and change.action not in ("removed", "absent"):
        line += f" ({change.instances} instance{'s' if change.instances != 1 else ''})"
    if change.deployment:
        line += f"  deployment {change.deployment}"
    return line


def print_changes(result: DeployResult, json_out: bool) -> None:
    """A deploy-like answer (scale, remove, rollback, restart): JSON, or a line per group."""
    if json_out:
        print_json(result)
        return
    for change in result.changes:
        console.print(change_line(change))


def plan_lines(change: GroupChange) -> list[str]:
    """The indented lines under a change in ``theseus plan``: field diff, where new tasks
    would go, what would wait and why, what would stop, how long a node cut off from
    every server keeps the group's tasks, and how much of their output is kept."""
    plan = change.plan
    if plan is None:
        return []
    lines = [f"    [yellow]~[/] {escape(d.field)}: {d.old!r} → {d.new!r}" for d in plan.diff]
    if plan.placed:
        where = ", ".join(f"{node} ×{n}" for node, n in sorted(plan.placed.items()))
        lines.append(f"    [green]+[/] {sum(plan.placed.values())} new: {escape(where)}")
    for reason, n in sorted(plan.pending.items()):
        lines.append(f"    [red]![/] {n} would wait: {escape(reason)}")
    if plan.stopping:
        lines.append(f"    [red]-[/] {plan.stopping} running would stop now")
    fence = plan.stop_after_server_loss
    if fence == "never":
        lines.append(
            "    [dim]·[/] on a node that reaches no server: never stopped "
            "(stop_after_server_loss_seconds: never)"
        )
    elif fence is not None:
        lines.append(
            f"    [dim]·[/] on a node that reaches no server: stopped after {fence:g} s "
            "(stop_after_server_loss_seconds)"
        )
    if plan.logs is not None:
        lines.append(f"    [dim]·[/] logs kept: {escape(plan.logs)} (logs)")
    return lines


def parse_label_options(values: Sequence[str] | None) -> list[str] | None:
    """``--labels`` given once per label. None when absent (all groups / the only group);
    ``--labels ''`` alone names the group without labels. Labels may contain commas or
    spaces, so values are taken whole, never split."""
    if not values:
        return None
    labels = {value for value in values if value != ""}
    for label in labels:
        if not label.isprintable():
            raise typer.BadParameter(f"label {label!r} must be printable", param_hint="--labels")
    return sorted(labels)
