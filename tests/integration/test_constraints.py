"""Placement constraints and strategies on a real 3-node cluster whose agents declare
attributes (issue: constraints): where tasks land, why the rest stay pending, and a GROUP_BY
scale-down that keeps the spread even."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.cluster import Cluster, start_cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import deploy, wait_running
from theseus.api.client import ServerClient

pytestmark = pytest.mark.integration

NODES = {
    "c-1": {"address": "127.0.0.31", "attributes": {"rack": "r1", "zone": "a"}},
    "c-2": {"address": "127.0.0.32", "attributes": {"rack": "r1", "zone": "b"}},
    "c-3": {"address": "127.0.0.33", "attributes": {"rack": "r2"}},
}
RACK = {"c-1": "r1", "c-2": "r1", "c-3": "r2"}
BASE: dict[str, Any] = {"image": "theseus/busybox:latest", "cpus": 0.05, "mem": 32}


@pytest.fixture(scope="module")
def racks(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Cluster]:
    cluster = start_cluster(Path(tmp_path_factory.mktemp("racks")), NODES)
    yield cluster
    cluster.stop()


@pytest.fixture
def client(racks: Cluster) -> Iterator[ServerClient]:
    with racks.client() as client:
        yield client
        for group in client.groups().groups:
            client.remove(group.service, group.labels)
        wait_until(lambda: not client.tasks().tasks, 60, "every task gone")


def nodes_of(client: ServerClient, service: str, count: int) -> Counter[str]:
    return Counter(t.node or "-" for t in wait_running(client, service, count))


def test_nodes_declare_their_attributes(client: ServerClient) -> None:
    assert {n.name: n.attributes for n in client.nodes().nodes} == {
        name: node["attributes"] for name, node in NODES.items()
    }


def test_unique_hostname_leaves_the_surplus_pending_with_reasons(client: ServerClient) -> None:
    deploy(client, one_each={**BASE, "instances": 4, "constraints": [["hostname", "UNIQUE"]]})

    def pending() -> str | None:
        waiting = [t for t in client.tasks("one_each").tasks if t.state == "pending"]
        return waiting[0].pending_reason if waiting else None

    reason = wait_until(pending, 30, "the fourth task pending")
    assert reason == "0/3 nodes can run it: 3 nodes: UNIQUE hostname"

    def running_nodes() -> list[str] | None:
        tasks = client.tasks("one_each").tasks
        nodes = sorted(t.node or "" for t in tasks if t.state == "running")
        return nodes if len(nodes) == 3 else None

    assert wait_until(running_nodes, 30, "3 running") == ["c-1", "c-2", "c-3"]


def test_like_cluster_and_unlike_pick_the_matching_nodes(client: ServerClient) -> None:
    deploy(
        client,
        on_r1={**BASE, "instances": 4, "constraints": [["rack", "LIKE", "r1"]]},
        in_zone={**BASE, "instances": 2, "constraints": [["zone", "CLUSTER", "b"]]},
        no_zone_a={**BASE, "instances": 4, "constraints": [["zone", "UNLIKE", "a"]]},
    )
    assert set(nodes_of(client, "on_r1", 4)) == {"c-1", "c-2"}
    assert set(nodes_of(client, "in_zone", 2)) == {"c-2"}
    # UNLIKE also accepts c-3, which has no zone at all.
    assert set(nodes_of(client, "no_zone_a", 4)) == {"c-2", "c-3"}


def test_group_by_rack_spreads_and_scales_down_evenly(client: ServerClient) -> None:
    spec = {**BASE, "instances": 4, "constraints": [["rack", "GROUP_BY"]]}
    deploy(client, racked=spec)
    per_rack = Counter(RACK[n] for n, k in nodes_of(client, "racked", 4).items() for _ in range(k))
    assert per_rack == {"r1": 2, "r2": 2}
    client.scale("racked", 2)
    per_rack = Counter(RACK[n] for n, k in nodes_of(client, "racked", 2).items() for _ in range(k))
    assert per_rack == {"r1": 1, "r2": 1}


def test_binpack_fills_a_node_first(client: ServerClient) -> None:
    deploy(client, packed={**BASE, "instances": 3, "placement_strategy": "binpack"})
    assert len(nodes_of(client, "packed", 3)) == 1
