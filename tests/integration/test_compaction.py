"""The leader compacts etcd's history (``theseus.server.compaction``) on a real etcd, and the
cluster goes on: a server with a compaction interval of 1 s, a process agent. After a
deploy, etcd refuses a watch from before the deploy (its history is gone), the server says
so on ``/metrics``, and a scale still reaches the node (the server's own watch followed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kit.cluster import Cluster, new_cluster
from tests.kit.wait import wait_until
from theseus.store.base import HistoryCompacted
from theseus.store.etcd import EtcdStore

pytestmark = pytest.mark.integration

SPEC = {"image": "unused", "command": "exec sleep 600", "cpus": 0.1, "mem": 16}


@pytest.fixture(scope="module")
def compacting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = new_cluster(Path(tmp_path_factory.mktemp("compaction")))
    try:
        cluster.start_etcd()
        cluster.start_server(etcd_compaction_interval=1.0)
        cluster.start_agent("compact-1", address="127.0.0.6", driver="process", cpus=2.0)
        cluster.wait_nodes_ready()
        yield cluster
        with cluster.client() as client:  # the agent's processes go with their tasks
            for group in client.groups().groups:
                client.remove(group.service)
            wait_until(lambda: not client.tasks(include_stopped=True).tasks, 30, "tasks gone")
    finally:
        cluster.stop()


def compacted_revision(cluster: Cluster) -> float:
    text = httpx.get(f"{cluster.server_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "theseus_etcd_compacted_revision":
                return sample.value
    raise AssertionError("no theseus_etcd_compacted_revision on /metrics")


def running(cluster: Cluster, service: str) -> int:
    with cluster.client() as client:
        return sum(t.state == "running" for t in client.tasks(service).tasks)


async def test_the_history_before_the_last_interval_is_compacted_and_the_cluster_goes_on(
    compacting: Cluster,
) -> None:
    store = EtcdStore(compacting.etcd_endpoints, timeout=5)
    await store.connect()
    try:
        before = await store.current_revision()
        with compacting.client() as client:
            client.deploy(json.dumps({"deploy": {"sleepy": SPEC}}), "application/json")
        wait_until(lambda: running(compacting, "sleepy") == 1, 30, "the task running")
        deployed = await store.current_revision()
        # Compacted up to the deploy at least: a revision read one interval after it,
        # compacted one interval later still.
        wait_until(lambda: compacted_revision(compacting) >= deployed, 15, "a compaction")
        with pytest.raises(HistoryCompacted):
            async for _ in store.watch("/theseus/", "/theseus0", before):
                pass
    finally:
        await store.close()
    with compacting.client() as client:
        client.deploy(
            json.dumps({"deploy": {"sleepy": {**SPEC, "instances": 2}}}), "application/json"
        )
    wait_until(lambda: running(compacting, "sleepy") == 2, 30, "the scale carried out")
