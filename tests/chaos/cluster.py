"""The cluster a chaos run plays with: real processes on loopback, started by the test kit
(``tests/kit/cluster.py``), and everything it started removed afterwards (containers
included)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker

from tests.kit.cluster import Cluster, start_cluster, start_ha_cluster

AGENTS: dict[str, dict[str, Any]] = {
    "chaos-1": {"address": "127.0.0.21"},
    "chaos-2": {"address": "127.0.0.22"},
    "chaos-3": {"address": "127.0.0.23"},
}
LIVENESS_TIMEOUT = 3


@contextmanager
def chaos_cluster(
    root: Path, servers: int, etcd_members: int
) -> Iterator[tuple[Cluster, dict[str, dict[str, Any]]]]:
    if servers == 1 and etcd_members == 1:
        cluster = start_cluster(root, AGENTS, liveness_timeout=LIVENESS_TIMEOUT)
    else:
        cluster = start_ha_cluster(
            root, AGENTS, servers, etcd_members, liveness_timeout=LIVENESS_TIMEOUT
        )
    cluster_id = ""
    try:
        with cluster.client() as client:
            cluster_id = client.health().cluster_id or ""
        yield cluster, AGENTS
    finally:
        cluster.stop()
        _remove_containers(cluster_id)


def _remove_containers(cluster_id: str) -> None:
    if not cluster_id:
        return
    engine = docker.from_env()
    try:
        for item in engine.api.containers(
            all=True, filters={"label": f"theseus.cluster={cluster_id}"}
        ):
            engine.api.remove_container(item["Id"], force=True)
    finally:
        engine.close()
