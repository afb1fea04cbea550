"""A pass's placer builds each node's books from the state's indexes, when it first looks at
the node (``theseus.reconciler.holdings``, ``theseus.scheduler.books``): the same placements
and reasons as books built from every task up front, for a fraction of the work when a pass
places a few tasks in a big cluster."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest
from hypothesis import given

from tests.kit.builders import make_group, make_node, make_spec, make_state, make_task, running
from tests.kit.strategies import cluster_states
from theseus.model.state import ClusterState
from theseus.reconciler import reconcile as reconcile_module
from theseus.reconciler.holdings import StateHoldings
from theseus.reconciler.reconcile import reconcile
from theseus.scheduler.books import Holding, HoldingSource, ListedHoldings
from theseus.scheduler.placement import SAMPLE_SIZE, Placement, Placer

NOW = 10_000.0


def every_holding(state: ClusterState) -> ListedHoldings:
    """The books' sources as they were built before: every task, up front."""
    return ListedHoldings(
        Holding(task.node, task.group_key.key, task.spec, task.host_ports)
        for task in state.tasks.values()
        if task.node is not None and not state.task_state(task).terminal
    )


def ids() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"new{n}"


@given(cluster_states())
def test_a_pass_places_as_it_would_with_every_nodes_books_built_up_front(
    state: ClusterState,
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reconcile_module, "StateHoldings", every_holding)
        fresh = ids()
        up_front = reconcile(state, NOW, lambda service: f"{service}.{next(fresh)}")
    fresh = ids()
    lazy = reconcile(state, NOW, lambda service: f"{service}.{next(fresh)}")
    assert lazy.task_puts == up_front.task_puts
    assert lazy.waiting_groups == up_front.waiting_groups


class Counted(HoldingSource):
    def __init__(self, source: HoldingSource) -> None:
        self.source = source
        self.nodes: list[str] = []

    def on(self, node: str) -> Iterable[Holding]:
        self.nodes.append(node)
        return self.source.on(node)

    def nodes_of(self, group: str) -> Iterable[str]:
        return self.source.nodes_of(group)


def test_placing_one_task_in_a_big_cluster_builds_the_books_of_the_nodes_it_looks_at() -> None:
    group = make_group("web", cpus=0.1, mem=16)
    nodes = [make_node(f"n{i:03}") for i in range(300)]
    tasks = [make_task(group, node=f"n{i % 300:03}", id=f"web.{i}") for i in range(3000)]
    state = make_state([group], nodes, tasks, running(tasks))
    source = Counted(StateHoldings(state))
    placer = Placer(nodes, source)
    assert isinstance(placer.place("web.new", group.group_key.key, group.spec), Placement)
    assert len(source.nodes) == SAMPLE_SIZE  # of 300 nodes, each holding 10 tasks
    assert "n299" not in source.nodes and placer.books("n299").tasks == 10  # built when asked


def test_a_task_placed_earlier_in_the_pass_counts_once_for_its_groups_constraints() -> None:
    """A group's tasks of two versions: the older one's spec has no constraint, the newer
    one's says at most 2 per rack. The pass places the older task first, then the newer one
    asks how many the group holds per rack: 1 (the task it just placed), not 2 (that task
    once from the state's index, as it now has a node, and once as placed by the round)."""
    limited = make_group("web", constraints=[["rack", "MAX_PER", "2"]], instances=2, ports={})
    older = make_spec(instances=2, ports={})
    nodes = [make_node("n1", attributes={"rack": "r1"}), make_node("n2", attributes={"rack": "r1"})]
    first = make_task(limited, node=None, id="web.t1", spec=older, created_at=1.0)
    second = make_task(limited, node=None, id="web.t2", created_at=2.0)
    plan = reconcile(make_state([limited], nodes, [first, second]), NOW, lambda s: f"{s}.new")
    assert [plan.task_puts[t].node is not None for t in ("web.t1", "web.t2")] == [True, True]
