"""What a deploy would do, without doing it (pure): ``theseus plan`` / ``POST /deploy?dry_run``.

``preview`` applies the document's group changes to a copy of the cluster state and runs one
reconcile pass on it, so that the answer comes from the same code that will act: which tasks
would start and on which node, which would stay pending and why, and how many running tasks
would be stopped now. A rolling update shows its first step (the pass's own arithmetic);
``spec_diff`` lists the fields an update changes. Called by the deploy route.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from theseus.model.spec import GroupSpec
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired
from theseus.reconciler.deploy import GroupChangePlan
from theseus.reconciler.reconcile import reconcile


@dataclass
class GroupPreview:
    placed: Counter[str] = field(default_factory=Counter)  # node -> new tasks placed there
    pending: Counter[str] = field(default_factory=Counter)  # reason -> new tasks waiting
    stopping: int = 0  # tasks that would be asked to stop in this first step
    diff: list[tuple[str, Any, Any]] = field(default_factory=list)  # (field, old, new)


def preview(
    state: ClusterState, changes: list[GroupChangePlan], now: float
) -> dict[str, GroupPreview]:
    """Per changed group (its key), what the first reconcile pass after the deploy would do."""
    after = state.copy()
    previews: dict[str, GroupPreview] = {}
    for change in changes:
        key = change.key.key
        if change.action in ("unchanged", "absent"):
            continue
        old = after.groups.get(key)
        if change.record is not None:
            after.groups[key] = change.record
        else:
            after.groups.pop(key, None)
        result = previews[key] = GroupPreview()
        if old is not None and change.record is not None:
            result.diff = spec_diff(old.spec, change.record.spec)
    counter = itertools.count(1)
    plan = reconcile(after, now, new_id=lambda service: f"{service}.planned-{next(counter)}")
    for task_id, task in plan.task_puts.items():
        entry = previews.get(task.group_key.key)
        if entry is None:
            continue
        before = state.tasks.get(task_id)
        if before is None and task.desired is Desired.RUN:
            if task.node is not None:
                entry.placed[task.node] += 1
            else:
                entry.pending[task.pending_reason or "not placed"] += 1
        elif before is not None and before.desired is Desired.RUN and task.desired is Desired.STOP:
            entry.stopping += 1
    return previews


def spec_diff(old: GroupSpec, new: GroupSpec) -> list[tuple[str, Any, Any]]:
    """``(field, old, new)`` for every field that differs; mappings by key (``environment.A``)."""
    return _diff("", old.model_dump(mode="json"), new.model_dump(mode="json"))


def _diff(prefix: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    if _named(old) and _named(new):  # a pod's containers: by name (``containers.app.image``)
        old, new = {c["name"]: c for c in old}, {c["name"]: c for c in new}
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[tuple[str, Any, Any]] = []
        for key in sorted(old.keys() | new.keys()):
            changes += _diff(f"{prefix}{key}.", old.get(key), new.get(key))
        return changes
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _named(value: Any) -> bool:
    """A list of mappings, each with a distinct ``name`` (a pod's members)."""
    if not isinstance(value, list) or not value:
        return False
    names = [item.get("name") if isinstance(item, dict) else None for item in value]
    return all(isinstance(name, str) for name in names) and len(set(names)) == len(names)
