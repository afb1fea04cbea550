"""``theseus deploy``'s progress display: follow the groups a deploy changed until they
converge, one fails, or the deadline passes.

Called by ``theseus.cli.workloads``. Polls ``GET /v1/groups`` (level-triggered: every poll
shows the whole current state, so a missed poll loses nothing). On a terminal the table is
redrawn in place (rich Live); otherwise (CI logs, pipes) one line is printed per change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.live import Live
from rich.markup import escape
from rich.table import Table

from theseus.api.client import ApiError, ServerClient
from theseus.api.schemas import DeployResult, GroupInfo
from theseus.cli.output import console, err_console, format_group, table
from theseus.model.deployments import DeploymentRecord
from theseus.model.groups import spec_digest
from theseus.model.spec import DeployDocument

POLL_INTERVAL = 0.3
GroupsByKey = dict[tuple[str, tuple[str, ...]], GroupInfo]


@dataclass
class Target:
    """One group ``deploy`` waits for: to converge at ``version`` x ``instances``, or (when
    ``removed``) to disappear."""

    service: str
    labels: tuple[str, ...]
    removed: bool = False
    version: str | None = None
    instances: int | None = None
    deployment: str | None = None  # followed too: its failure (and revert) ends the wait

    @property
    def name(self) -> str:
        return format_group(self.service, self.labels)


def watch_targets(result: DeployResult, document: DeployDocument) -> list[Target]:
    specs = {(s, tuple(g.labels)): g for s, g in document.deploy.items()}
    targets = []
    for change in result.changes:
        key = (change.service, tuple(sorted(change.labels)))
        if change.action == "removed":
            targets.append(Target(*key, removed=True))
        elif change.action != "absent":
            spec = specs.get(key)
            version = spec.version() if spec is not None else None
            instances = change.instances if change.instances is not None else None
            target = Target(*key, version=version, instances=instances)
            target.deployment = change.deployment
            targets.append(target)
    return targets


def target_status(target: Target, info: GroupInfo | None) -> tuple[str, bool, str | None]:
    """(status shown, done, failure message). The server's cache may lag the write for a
    moment, so a deployed group only counts once it shows the new version and instances."""
    if target.removed:
        return ("removed", True, None) if info is None else (info.status, False, None)
    if info is None:
        return "pending", False, None
    # A group restarted since shows its spec's digest with a restart mark (``<digest>.r1``).
    shown = spec_digest(info.version)
    current = (target.version is None or shown == target.version) and (
        target.instances is None or info.instances == target.instances
    )
    if not current:
        return "deploying", False, None
    if info.status == "failing":
        return "failing", False, info.message or "tasks keep failing"
    return info.status, info.status == "converged", None


@dataclass(frozen=True)
class Row:
    name: str
    running: str  # "running/desired"
    status: str
    done: bool
    message: str
    failure: str | None


def progress_rows(
    targets: list[Target],
    groups: GroupsByKey,
    deployments: dict[str, DeploymentRecord] | None = None,
) -> list[Row]:
    rows = []
    for target in targets:
        info = groups.get((target.service, target.labels))
        status, done, failure = target_status(target, info)
        found = (deployments or {}).get(target.deployment or "")
        if found is not None and found.status not in ("running", "successful"):
            status, done = found.status, False
            failure = f"deployment {found.id}: {found.message}"
        elif found is not None and found.running and failure is not None:
            failure += f"; {_goes_on(found)}"
        if target.removed:
            running = f"{info.running if info else 0}/0"
        else:
            desired = info.instances if info else (target.instances or 0)
            running = f"{info.running_current if info else 0}/{desired}"
        message = (info.message if info else None) or ""
        rows.append(Row(target.name, running, status, done, message, failure))
    return rows


def _style(row: Row) -> str:
    return "green" if row.done else ("red" if row.status == "failing" else "yellow")


def progress_table(rows: list[Row], elapsed: float) -> Table:
    view = table("GROUP", "RUNNING", "STATUS", "MESSAGE")
    done = all(row.done for row in rows)
    view.title = (
        f"done in {elapsed:.1f}s" if done else f"waiting for the deployment ({elapsed:.0f}s)"
    )
    view.title_justify = "left"
    for row in rows:
        status = f"[{_style(row)}]{row.status}[/]"
        view.add_row(escape(row.name), row.running, status, escape(row.message))
    return view


def follow_deployment(client: ServerClient, targets: list[Target], timeout: float) -> int:
    """Exit code: 0 when every target is done, 1 on a failing group or at the deadline."""
    started = time.monotonic()
    live = Live(console=console, refresh_per_second=8) if console.is_terminal else None
    printed: dict[str, Row] = {}
    rows: list[Row] = []
    try:
        if live is not None:
            live.start()
        while True:
            groups = {(g.service, tuple(g.labels)): g for g in client.groups().groups}
            elapsed = time.monotonic() - started
            rows = progress_rows(targets, groups, _deployments(client, targets))
            if live is not None:
                live.update(progress_table(rows, elapsed), refresh=True)
            else:
                for row in rows:
                    if printed.get(row.name) != row:
                        printed[row.name] = row
                        line = f"{escape(row.name)}: {row.running} [{_style(row)}]{row.status}[/]"
                        console.print(line + (f" {escape(row.message)}" if row.message else ""))
            if any(row.failure for row in rows) or all(row.done for row in rows):
                break
            if elapsed > timeout:
                break
            time.sleep(POLL_INTERVAL)
    finally:
        if live is not None:
            live.stop()
    for row in rows:
        if row.failure is not None:
            err_console.print(
                f"[bold red]error:[/] {escape(row.name)} is {row.status}: {escape(row.failure)}"
            )
            return 1
    if all(row.done for row in rows):
        return 0
    waiting = ", ".join(escape(row.name) for row in rows if not row.done)
    err_console.print(
        f"[bold red]error:[/] not converged after {timeout:.0f}s: {waiting} "
        "(the deployment continues; watch it with `theseus ps`)"
    )
    return 1


def _deployments(client: ServerClient, targets: list[Target]) -> dict[str, DeploymentRecord]:
    """The targets' deployments (an older server has none)."""
    if not any(t.deployment for t in targets):
        return {}
    try:
        found = client.deployments(include_finished=True).deployments
    except ApiError:
        return {}
    return {d.id: d for d in found}


def _goes_on(deployment: DeploymentRecord) -> str:
    revert = deployment.auto_revert and deployment.from_version is not None
    outcome = f"reverted to version {deployment.from_version}" if revert else "marked failed"
    return (
        f"deployment {deployment.id} goes on: without progress it is {outcome} after "
        f"{deployment.progress_deadline_seconds:g}s (`theseus deployments`)"
    )
