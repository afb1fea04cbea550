"""Placement: resources, host ports, spreading and the reasons a task fits nowhere."""

from __future__ import annotations

from collections import Counter

from tests.kit.builders import make_group, make_node, make_spec
from theseus.scheduler.placement import SAMPLE_SIZE, Holding, Placement, Placer, Unplaceable


def test_a_group_spreads_across_nodes() -> None:
    placer = Placer([make_node("n1"), make_node("n2"), make_node("n3")], [])
    spec = make_spec()
    nodes = [placer.place(f"t{i}", "g", spec) for i in range(4)]
    assert all(isinstance(p, Placement) for p in nodes)
    counts = Counter(p.node for p in nodes if isinstance(p, Placement))
    assert sorted(counts.values()) == [1, 1, 2]


def test_cpu_memory_and_ports_are_respected() -> None:
    placer = Placer([make_node("n1", cpus=1.0, mem=1000.0)], [])
    big_cpu = placer.place("a", "g", make_spec(cpus=1.5))
    big_mem = placer.place("b", "g", make_spec(mem=2000))
    assert isinstance(big_cpu, Unplaceable) and "insufficient cpus" in big_cpu.reason
    assert isinstance(big_mem, Unplaceable) and "insufficient memory" in big_mem.reason
    small = make_spec(cpus=0.4)
    assert isinstance(placer.place("c", "g", small), Placement)
    assert isinstance(placer.place("d", "g", small), Placement)
    third = placer.place("e", "g", small)
    assert isinstance(third, Unplaceable)
    assert third.reason == "0/1 nodes can run it: 1 node: insufficient cpus (needs 0.4)"


def test_host_ports_are_unique_per_node_and_within_range() -> None:
    node = make_node("n1", port_range=(31000, 31009), cpus=100.0, mem=1e6)
    placer = Placer([node], [])
    spec = make_spec(ports={"a": 1, "b": 2}, cpus=0.01, mem=1)
    seen: set[int] = set()
    for i in range(5):
        placement = placer.place(f"t{i}", "g", spec)
        assert isinstance(placement, Placement)
        ports = set(placement.host_ports.values())
        assert len(ports) == 2 and not ports & seen
        assert all(31000 <= p <= 31009 for p in ports)
        seen |= ports
    full = placer.place("t9", "g", spec)
    assert isinstance(full, Unplaceable) and "host ports" in full.reason


def test_host_ports_are_drawn_from_the_task_id_reproducibly_and_over_the_range() -> None:
    def ports_of(task_id: str) -> dict[str, int]:
        node = make_node("n1", port_range=(31000, 31999), cpus=100.0, mem=1e6)
        placement = Placer([node], []).place(task_id, "g", make_spec(ports={"a": 1, "b": 2}))
        assert isinstance(placement, Placement)
        return placement.host_ports

    assert ports_of("svc.0123456789ab") == ports_of("svc.0123456789ab")
    drawn = [port for i in range(500) for port in ports_of(f"svc.{i:012x}").values()]
    # Spread over the range: every tenth of it is drawn, none more than twice its share.
    tenths = Counter((port - 31000) // 100 for port in drawn)
    assert sorted(tenths) == list(range(10))
    assert max(tenths.values()) < 2 * len(drawn) / 10


def test_existing_holdings_count_against_capacity() -> None:
    group = make_group()
    holding = Holding("n1", "g", make_spec(cpus=1.9), {"api": 31005})
    placer = Placer([make_node("n1"), make_node("n2")], [holding])
    placement = placer.place("t", group.group_key.key, make_spec(cpus=0.5))
    assert isinstance(placement, Placement) and placement.node == "n2"


def test_no_nodes_is_a_reason() -> None:
    result = Placer([], []).place("t", "g", make_spec())
    assert isinstance(result, Unplaceable) and result.reason == "no ready nodes"


def test_large_clusters_sample_nodes_but_still_spread_and_find_the_last_fit() -> None:
    nodes = [make_node(f"n{i:03}", cpus=1.0) for i in range(200)]
    placer = Placer(nodes, [])
    spec = make_spec(cpus=0.5)
    placements = [placer.place(f"t{i}", "g", spec) for i in range(200)]
    assert all(isinstance(p, Placement) for p in placements)
    counts = Counter(p.node for p in placements if isinstance(p, Placement))
    assert set(counts.values()) == {1}  # one per node: the group is spread
    # Fill all but one slot, then the last free slot is still found, anywhere in the ring.
    for i in range(199):
        assert isinstance(placer.place(f"u{i}", "g", spec), Placement)
    assert isinstance(placer.place("last", "g", spec), Placement)
    full = placer.place("none", "g", spec)
    assert isinstance(full, Unplaceable)
    assert full.reason == "0/200 nodes can run it: 200 nodes: insufficient cpus (needs 0.5)"


def test_a_placement_scores_as_many_nodes_on_a_big_cluster_as_on_a_small_one() -> None:
    # A share of the cluster would make a deploy of T tasks on N nodes cost T x N.
    for size in (200, 4000):
        placer = Placer([make_node(f"n{i:04}") for i in range(size)], [])
        assert isinstance(placer.place("t", "g", make_spec()), Placement)
        assert placer._cursor == SAMPLE_SIZE  # the nodes examined by the one placement
