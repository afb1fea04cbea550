"""The dashboard's view models: pure functions from ``ClusterState`` (and the event window's
items) to the plain dicts the templates render. No I/O; ``theseus.server.ui.pages`` calls
them with the cache's state, so each page costs one pass over what it shows.

Lists page (``PAGE_SIZE`` rows): with 10,000 tasks a group's page still renders 100 rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from theseus.api.schemas import NodeUsage
from theseus.model.groups import GroupRecord
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskState
from theseus.server.views import node_info, registry_service, task_entry

PAGE_SIZE = 100


@dataclass(frozen=True)
class Page:
    """One page of a list: its rows' slice and the numbers for the pager."""

    number: int
    pages: int
    total: int

    @classmethod
    def of(cls, total: int, asked: int) -> Page:
        pages = max(1, -(-total // PAGE_SIZE))
        return cls(min(max(1, asked), pages), pages, total)

    @property
    def start(self) -> int:
        return (self.number - 1) * PAGE_SIZE

    @property
    def end(self) -> int:
        return self.start + PAGE_SIZE


def age(seconds: float) -> str:
    """A short human duration: 42s, 5m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def group_counts(state: ClusterState, group_id: str, group: GroupRecord) -> dict[str, Any]:
    """Desired, running and healthy counts of one group (healthy: running and, with health
    checks, reported healthy: what the registry and rollouts count)."""
    running = healthy = pending = 0
    for task in state.tasks_of(group_id):
        if task.desired is not Desired.RUN:
            continue
        observed = state.task_state(task)
        running += observed is TaskState.RUNNING
        healthy += state.task_ready(task)
        pending += task.node is None
    return {
        "id": group_id,
        "service": group.service,
        "labels": list(group.labels),
        "version": group.version_number,
        "desired": group.instances,
        "running": running,
        "healthy": healthy,
        "pending": pending,
        "ok": healthy == group.instances and running == group.instances,
    }


def overview(state: ClusterState, events: list[dict[str, Any]], page: int = 1) -> dict[str, Any]:
    ids = sorted(state.groups)
    pager = Page.of(len(ids), page)
    nodes = Counter("ready" if name in state.alive else "lost" for name in state.nodes)
    for name, control in state.controls.items():
        if name in state.nodes:
            nodes[control.label] += 1
    return {
        "groups": [group_counts(state, g, state.groups[g]) for g in ids[pager.start : pager.end]],
        "pager": pager,
        "deployments": deployments(state, running_only=True),
        "nodes": dict(sorted(nodes.items())),
        "node_total": len(state.nodes),
        "task_total": len(state.tasks),
        "events": events[-50:][::-1],
    }


def task_row(state: ClusterState, task: TaskRecord, now: float) -> dict[str, Any]:
    entry = task_entry(state, task)
    links = []
    for name, port in entry["ports"].items():
        if port["host_port"] and entry["address"]:
            links.append({"name": name, "url": f"http://{entry['address']}:{port['host_port']}"})
    entry["links"] = links
    entry["age"] = age(now - task.created_at)
    entry["restarts"] = task.attempt
    return entry


def group_page(
    state: ClusterState, group_id: str, now: float, page: int = 1
) -> dict[str, Any] | None:
    group = state.groups.get(group_id)
    if group is None:
        return None
    tasks = sorted(
        state.tasks_of(group_id),
        key=lambda t: (t.desired is not Desired.RUN, t.created_at, t.id),
    )
    pager = Page.of(len(tasks), page)
    waiting = Counter(
        t.pending_reason or "waiting to be placed"
        for t in tasks
        if t.desired is Desired.RUN and t.node is None
    )
    kept = state.versions.get(group_id, {})
    return {
        "group": group_counts(state, group_id, group),
        "tasks": [task_row(state, t, now) for t in tasks[pager.start : pager.end]],
        "pager": pager,
        "waiting": waiting.most_common(),
        "versions": [
            {
                "number": v.number,
                "created_at": v.created_at,
                "age": age(now - v.created_at),
                "images": v.spec.images,
                "instances": v.spec.instances,
                "current": v.number == group.version_number,
            }
            for _, v in sorted(kept.items(), reverse=True)
        ],
        "deployments": [
            d for d in deployments(state, running_only=False) if d["group"] == group_id
        ],
    }


def deployments(state: ClusterState, running_only: bool) -> list[dict[str, Any]]:
    found = [d for d in state.deployments.values() if d.running or not running_only]
    found.sort(key=lambda d: (d.started_at, d.id), reverse=True)
    return [
        {
            "id": d.id,
            "group": d.group,
            "service": d.service,
            "labels": d.labels,
            "kind": d.kind,
            "from_version": d.from_version,
            "to_version": d.to_version,
            "status": d.status,
            "ready": d.ready,
            "instances": d.instances,
            "percent": int(100 * d.ready / d.instances) if d.instances else 100,
            "message": d.message,
            "running": d.running,
            "started_at": d.started_at,
        }
        for d in found
    ]


def nodes_page(
    state: ClusterState, usage: dict[str, NodeUsage], now: float
) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(state.nodes):
        info = node_info(state, name, usage.get(name))
        seen = usage.get(name)
        rows.append(
            {
                "info": info,
                "cpu_percent": _percent(info.used_cpus, info.cpus),
                "mem_percent": _percent(info.used_mem, info.mem),
                "heartbeat": age(now - seen.time) if seen is not None else None,
                "host_volumes": [f"{v.name}={v.path}" for v in info.gates.host_volumes],
                "draining": state.controls[name].drain if name in state.controls else False,
            }
        )
    return rows


def _percent(used: float, total: float) -> int:
    return min(100, int(100 * used / total)) if total else 0


def task_page(state: ClusterState, task_id: str, now: float) -> dict[str, Any] | None:
    task = state.tasks.get(task_id)
    if task is None:
        return None
    row = task_row(state, task, now)
    row["group_state"] = task.group_key.key
    return row


def registry_page(state: ClusterState) -> list[dict[str, Any]]:
    """The 2014 viewer's table: per service and label set, its config and each container
    with its host and ports as links."""
    services = sorted({g.service for g in state.groups.values()})
    out = []
    for service in services:
        entries = registry_service(state, service)
        for group in entries.groups:
            out.append(
                {
                    "service": service,
                    "labels": group.labels,
                    "config": group.config,
                    "containers": [c.model_dump() for c in group.containers],
                }
            )
    return out


def event_rows(items: list[Any]) -> list[dict[str, Any]]:
    """The event window's items (``theseus.server.events.feed.Item``) as rows."""
    rows = []
    for item in items:
        event = item.event
        rows.append(
            {
                "time": event.time,
                "type": event.type,
                "key": event.key,
                "message": event.message,
                "service": event.service,
            }
        )
    return rows
