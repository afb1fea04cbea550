"""``TaskChanges``: when each group's tasks, and each task's status, last changed (revisions).

Kept by ``theseus.store.cache.StateCache`` as it applies the watch; read by the leader to
scope its passes (``theseus.reconciler.scope``) and, through ``groups`` (the cache's
``group_index``), by the memoised group views (``theseus.server.wire``, the dashboard).

Why three indexes and not one: during a deploy at 5,000 nodes, agents report a few thousand
tasks started between two passes, spread over every group. Each group has then changed, but
only through statuses that tell a task runs: its own registry entry is all such a change can
call for, and the other 99 tasks of its group need no look (``light_scope``). A group whose
task records changed (a placement, a stop) or whose record changed is looked at whole.
"""

from __future__ import annotations

from theseus.model.tasks import TaskRecord


class TaskChanges:
    def __init__(self) -> None:
        # group -> revision of the last change to one of its tasks or their statuses
        self.groups: dict[str, int] = {}
        # group -> revision of the last change to one of its task records (put or deleted)
        self.records: dict[str, int] = {}
        # task id -> revision of the last change to its status (put or deleted)
        self.statuses: dict[str, int] = {}

    def task_changed(self, revision: int, task: TaskRecord | None) -> None:
        """A task record was put or deleted (``task``: the new one, or the deleted one)."""
        if task is not None:
            group = task.group_key.key
            self.groups[group] = self.records[group] = revision

    def task_deleted(self, revision: int, task: TaskRecord | None) -> None:
        self.task_changed(revision, task)
        if task is not None:
            self.statuses.pop(task.id, None)  # its status goes with it (below, or before)

    def status_changed(self, revision: int, task_id: str, task: TaskRecord | None) -> None:
        """A status was put or deleted; ``task``: its task's record, if the cache has it."""
        if task is not None:
            self.groups[task.group_key.key] = revision
            self.statuses[task_id] = revision

    def clear(self) -> None:
        """Everything forgotten, in place (``groups`` is shared as the cache's
        ``group_index``)."""
        self.groups.clear()
        self.records.clear()
        self.statuses.clear()
