"""A deployment outlives its leader: the leader is killed while a broken version rolls out,
and the server that takes over fails it at its deadline and reverts the group (everything a
deployment needs is in etcd, not in the leader's memory)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.cluster import Cluster, start_ha_cluster
from tests.kit.rollouts import BASE, BROKEN, STRATEGY, finished, ready
from tests.kit.wait import wait_until
from tests.kit.workloads import leads
from theseus.api.client import ServerClient

pytestmark = pytest.mark.integration

NODES = {"rh-1": "127.0.0.61", "rh-2": "127.0.0.62", "rh-3": "127.0.0.63"}
DEADLINE = 6.0


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Cluster]:
    agents = {name: {"address": address} for name, address in NODES.items()}
    cluster = start_ha_cluster(Path(tmp_path_factory.mktemp("rollouts-ha")), agents, servers=2)
    yield cluster
    cluster.stop()


def deploy(client: ServerClient, **spec: Any) -> str:
    document = json.dumps({"deploy": {"stall": {**BASE, "instances": 2, **spec}}})
    [change] = client.deploy(document, "application/json").changes
    assert change.deployment is not None
    return change.deployment


def test_the_next_leader_fails_and_reverts_a_deployment_at_its_deadline(ha: Cluster) -> None:
    leader = wait_until(
        lambda: next((n for n in ha.servers if leads(ha.url_of(n))), None), 15, "a leader"
    )
    follower = next(name for name in ha.servers if name != leader)
    with ha.client(ha.server_urls) as client:
        try:
            _fail_over_during_a_rollout(ha, client, leader, follower)
        finally:
            client.remove("stall")
            wait_until(lambda: not client.tasks().tasks, 60, "every task gone")


def _fail_over_during_a_rollout(
    ha: Cluster, client: ServerClient, leader: str, follower: str
) -> None:
    first = deploy(client)
    assert finished(client, first, 60).status == "successful"
    v1 = client.versions("stall").versions[0]
    strategy = {**STRATEGY, "progress_deadline_seconds": DEADLINE}
    broken = deploy(client, image=BROKEN, upgrade_strategy=strategy)
    ha.kill(leader)
    killed_at = time.time()
    wait_until(lambda: leads(ha.url_of(follower)), 15, f"{follower} leads")
    took_over = time.time() - killed_at
    failed = finished(client, broken, DEADLINE + 20)
    assert failed.status == "failed" and "reverted to version 1" in failed.message, failed
    revert_id = failed.message.rsplit("(", 1)[1].rstrip(")")
    assert finished(client, revert_id, 60).status == "successful"
    assert ready(client, "stall", v1.digest) == 2
    late = failed.updated_at - failed.deadline
    print(
        f"\nrollout across a leader kill: takeover {took_over:.2f}s; the new leader failed "
        f"the deployment {late:.2f}s after its deadline"
    )
    assert late <= 2.0
