"""What the tasks of a reconcile pass's state hold on their nodes, node by node (pure).

``StateHoldings`` is the ``theseus.scheduler.books.HoldingSource`` a pass's placer builds its
books from, through the state's indexes (``ClusterState.tasks_by_node``, ``tasks_by_group``):
a node's books cost what the node holds, not what the cluster holds. A task holds resources
from its placement until it has ended (a task asked to stop still holds them while its
container stops). Built by ``theseus.reconciler.reconcile`` for ``_place``.

The indexes are the snapshot's: the pass does not keep them as it writes tasks. The pass
changes no task's node but by placing it, and the placer counts its own placements itself,
so a task counts here only where the snapshot's ``tasks_by_node`` has it (a task the pass
placed is still in its group's index, with no node there); a task that ended in the pass is
left out by its state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from theseus.model.state import ClusterState
from theseus.model.tasks import TaskRecord
from theseus.scheduler.books import Holding, HoldingSource


class StateHoldings(HoldingSource):
    def __init__(self, state: ClusterState) -> None:
        self._state = state

    def on(self, node: str) -> Iterator[Holding]:
        for task in self._holding(self._state.tasks_by_node.get(node, ())):
            if task.node == node:
                yield Holding(node, task.group_key.key, task.spec, task.host_ports)

    def nodes_of(self, group: str) -> Iterator[str]:
        by_node = self._state.tasks_by_node
        for task in self._holding(self._state.tasks_by_group.get(group, ())):
            assert task.node is not None
            if task.id in by_node.get(task.node, ()):  # not one the pass placed itself
                yield task.node

    def _holding(self, task_ids: Iterable[str]) -> Iterator[TaskRecord]:
        tasks = self._state.tasks
        for task_id in task_ids:
            task = tasks.get(task_id)
            if task is not None and task.node and not self._state.task_state(task).terminal:
                yield task
