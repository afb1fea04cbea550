"""The dashboard's view models: pure functions from ``ClusterState`` (and the event window's
items) to the plain dicts the templates render. No I/O; ``theseus.server.ui.pages`` calls
them with the cache's state, so each page costs one pass over what it shows.

Lists page (``PAGE_SIZE`` rows): with 10,000 tasks a group's page still renders 100 rows.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from theseus.api.schemas import NodeUsage
from theseus.model import registry
from theseus.model.groups import GroupKey, GroupRecord
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskState
from theseus.server.ui.timeline import deployment_timeline
from theseus.server.views import node_info, task_entry

PAGE_SIZE = 100
NODES_PAGE_SIZE = 40  # a node's card is larger than a row


@dataclass(frozen=True)
class Page:
    """One page of a list: its rows' slice and the numbers for the pager."""

    number: int
    pages: int
    total: int

    size: int = PAGE_SIZE

    @classmethod
    def of(cls, total: int, asked: int, size: int = PAGE_SIZE) -> Page:
        pages = max(1, -(-total // size))
        return cls(min(max(1, asked), pages), pages, total, size)

    @property
    def start(self) -> int:
        return (self.number - 1) * self.size

    @property
    def end(self) -> int:
        return self.start + self.size


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
        "digest": group.version,  # what its tasks' ``version`` is compared with
        "desired": group.instances,
        "running": running,
        "healthy": healthy,
        "pending": pending,
        "ok": healthy == group.instances and running == group.instances,
    }


Counts = Callable[[ClusterState, str, GroupRecord], dict[str, Any]]


class CountsMemo:
    """Each group's counts, counted again only after one of its tasks or their statuses (the
    cache's ``group_index``), the live nodes (``alive_index``) or the group itself changed:
    with 10,000 tasks the overview then counts only what moved (``theseus.server.wire``
    memoises the API's group list the same way)."""

    def __init__(self, group_index: dict[str, int], alive_index: Callable[[], int]) -> None:
        self._group_index = group_index
        self._alive_index = alive_index
        self._memo: dict[str, tuple[tuple[object, ...], dict[str, Any]]] = {}

    def __call__(self, state: ClusterState, group_id: str, group: GroupRecord) -> dict[str, Any]:
        key = (
            self._group_index.get(group_id, 0),
            self._alive_index(),
            group.version_number,
            group.instances,
            group.updated_at,
        )
        hit = self._memo.get(group_id)
        if hit is not None and hit[0] == key:
            return hit[1]
        if len(self._memo) > 4 * len(state.groups) + 64:
            self._memo.clear()  # removed groups
        counted = group_counts(state, group_id, group)
        self._memo[group_id] = (key, counted)
        return counted


def overview(
    state: ClusterState, events: list[dict[str, Any]], page: int = 1, counts: Counts | None = None
) -> dict[str, Any]:
    count = counts or group_counts
    ids = sorted(state.groups)
    pager = Page.of(len(ids), page)
    nodes = Counter("ready" if name in state.alive else "lost" for name in state.nodes)
    for name, control in state.controls.items():
        if name in state.nodes:
            nodes[control.label] += 1
    return {
        "groups": [count(state, g, state.groups[g]) for g in ids[pager.start : pager.end]],
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
        "timeline": deployment_timeline(
            (d for d in state.deployments.values() if d.group == group_id), now
        ),
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
    state: ClusterState, usage: dict[str, NodeUsage], now: float, page: int = 1
) -> dict[str, Any]:
    names = sorted(state.nodes)
    pager = Page.of(len(names), page, NODES_PAGE_SIZE)
    rows = []
    for name in names[pager.start : pager.end]:
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
    return {"nodes": rows, "pager": pager}


def _percent(used: float, total: float) -> int:
    return min(100, int(100 * used / total)) if total else 0


def task_page(state: ClusterState, task_id: str, now: float) -> dict[str, Any] | None:
    task = state.tasks.get(task_id)
    if task is None:
        return None
    row = task_row(state, task, now)
    return row


Registered = tuple[dict[GroupKey, bytes], dict[GroupKey, list[bytes]]]


def registry_groups(state: ClusterState) -> Registered:
    """The registry's values by group: each config, and its containers'. One pass over the
    keys (the pages keep it until the registry changes)."""
    configs: dict[GroupKey, bytes] = {}
    containers: dict[GroupKey, list[bytes]] = defaultdict(list)
    for key, value in state.registry.items():
        parsed = registry.parse_key(key)
        if parsed is None:
            continue
        group, task_id = parsed
        if task_id is None:
            configs[group] = value
        else:
            containers[group].append(value)
    return configs, containers


def registry_page(registered: Registered, page: int = 1) -> dict[str, Any]:
    """The 2014 viewer's table: per service and label set, its config and each container
    with its host and ports as links; only the shown groups' values are decoded, at most
    ``CONTAINERS_SHOWN`` containers each."""
    configs, containers = registered
    groups = sorted(set(configs) | set(containers), key=lambda g: (g.service, g.labels))
    pager = Page.of(len(groups), page)
    rows = []
    for group in groups[pager.start : pager.end]:
        values = containers.get(group, [])
        shown = sorted(
            (c for c in (_decoded(v) for v in values[: CONTAINERS_SHOWN * 2]) if c),
            key=lambda c: str(c.get("instance_name")),
        )[:CONTAINERS_SHOWN]
        config = _decoded(configs[group]) if group in configs else {}
        rows.append(
            {
                "id": group.key,
                "service": group.service,
                "labels": list(group.labels),
                "config": config or {},
                "containers": shown,
                "more": max(0, len(values) - len(shown)),
            }
        )
    return {"entries": rows, "pager": pager}


CONTAINERS_SHOWN = 20


def _decoded(value: bytes) -> dict[str, Any] | None:
    try:
        decoded = json.loads(value)
    except ValueError:
        return None  # a hand-written bogus value: the leader removes it shortly
    return decoded if isinstance(decoded, dict) else None


def event_rows(items: list[Any], about: str | None = None, text: str = "") -> list[dict[str, Any]]:
    """The event window's items (``theseus.server.events.feed.Item``) as rows, read from
    their derived fields (no wire model is made): those ``about`` one key, or whose type,
    key or message contain ``text``."""
    rows = []
    for item in items:
        d = item.derived
        if about is not None and d.key != about:
            continue
        if text and text not in f"{d.type} {d.key} {d.message}":
            continue
        rows.append(
            {
                "time": item.time,
                "type": d.type,
                "key": d.key,
                "message": d.message,
                "service": d.service,
            }
        )
    return rows


CHART_WIDTH, CHART_HEIGHT = 300, 48


def chart(values: list[float | None]) -> dict[str, Any] | None:
    """A sparkline of ``values`` (oldest first; None: not measured then) as an SVG polyline's
    points in a ``CHART_WIDTH`` x ``CHART_HEIGHT`` box, with the latest and the highest
    value; None with nothing measured."""
    measured = [v for v in values if v is not None]
    if not measured:
        return None
    top = max(measured) or 1.0
    step = CHART_WIDTH / max(1, len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{CHART_HEIGHT - (v / top) * (CHART_HEIGHT - 2) - 1:.1f}"
        for i, v in enumerate(values)
        if v is not None
    )
    return {"points": points, "latest": measured[-1], "max": max(measured)}
