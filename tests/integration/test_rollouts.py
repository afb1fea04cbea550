"""Controlled rollouts on a real 3-node cluster (``docs/deployments.md``): a broken version
fails at its progress deadline and is reverted while the ready capacity never drops below
``minimum_health_capacity``; a good one succeeds; rollback and cancel restore a version; a
restart replaces every task with the same spec, keeping that capacity too."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit import cli
from tests.kit.cluster import Cluster, start_cluster
from tests.kit.rollouts import BASE, BROKEN, DEADLINE, STRATEGY, finished, ready
from tests.kit.wait import wait_until
from theseus.api.client import ServerClient

pytestmark = pytest.mark.integration

NODES = {
    "r-1": {"address": "127.0.0.61"},
    "r-2": {"address": "127.0.0.62"},
    "r-3": {"address": "127.0.0.63"},
}


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Cluster]:
    cluster = start_cluster(Path(tmp_path_factory.mktemp("rollouts")), NODES)
    yield cluster
    cluster.stop()


@pytest.fixture
def client(rollouts: Cluster) -> Iterator[ServerClient]:
    with rollouts.client() as client:
        yield client
        for group in client.groups().groups:
            client.remove(group.service, group.labels)
        wait_until(lambda: not client.tasks().tasks, 60, "every task gone")


def theseus(cluster: Cluster, *args: str, expect: int = 0) -> str:
    """Run the CLI; its stdout and stderr."""
    result = cli.theseus(cluster, *args, expect=expect, timeout=90)
    return result.stdout + result.stderr


def deploy(client: ServerClient, service: str, **spec: Any) -> str:
    """Deploy; the id of the deployment it started."""
    document = json.dumps({"deploy": {service: {**BASE, **spec}}})
    [change] = client.deploy(document, "application/json").changes
    assert change.deployment is not None, change
    return change.deployment


class Sampler(threading.Thread):
    """Counts the service's ready tasks every 0.1 s through the API (and the most tasks
    seen running but not healthy at once)."""

    def __init__(self, cluster: Cluster, service: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.service = cluster, service
        self.samples: list[int] = []
        self.most_unhealthy = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with self.cluster.client() as client:
            while not self.halt.is_set():
                tasks = [t for t in client.tasks(self.service).tasks if t.desired == "run"]
                running = [t for t in tasks if t.state == "running"]
                healthy = [t for t in running if t.health in (None, "healthy")]
                self.samples.append(len(healthy))
                self.most_unhealthy = max(self.most_unhealthy, len(running) - len(healthy))
                self.halt.wait(0.1)

    def stop(self) -> list[int]:
        self.halt.set()
        self.join(5)
        return self.samples


def test_broken_version_fails_at_its_deadline_and_is_reverted(
    rollouts: Cluster, client: ServerClient, tmp_path: Path
) -> None:
    first = deploy(client, "shop")
    assert finished(client, first, 60).status == "successful"
    v1 = client.versions("shop").versions[0]
    document = tmp_path / "broken.json"
    document.write_text(json.dumps({"deploy": {"shop": {**BASE, "image": BROKEN}}}))
    sampler = Sampler(rollouts, "shop")
    sampler.start()
    started = time.time()
    # `theseus deploy` follows its deployment until it fails (and says it was reverted).
    # `theseus deploy` stops at the first failing task, and says what will happen next.
    out = theseus(rollouts, "deploy", "-f", str(document), expect=1)
    assert "is failing" in out and "is reverted to version 1 after 8s" in out, out
    broken = out.split("deployment ", 1)[1].split()[0]
    failed = finished(client, broken, DEADLINE + 20)
    assert failed.status == "failed" and failed.kind == "update", failed
    assert failed.message.startswith(f"no progress for {DEADLINE:g}s: 0 of 4 new tasks ready")
    revert_id = failed.message.rsplit("(", 1)[1].rstrip(")")
    revert = finished(client, revert_id, 60)
    converged_after = time.time() - started
    samples = sampler.stop()
    assert revert.status == "successful" and revert.kind == "revert"
    assert (revert.from_version, revert.to_version) == (2, 3)
    assert ready(client, "shop", v1.digest) == 4
    history = client.versions("shop")
    assert [v.number for v in history.versions] == [3, 2, 1] and history.current == 3
    assert history.versions[0].digest == v1.digest
    assert history.versions[0].images == [BASE["image"]]
    assert history.versions[1].images == [BROKEN]
    floor = math.ceil(4 * STRATEGY["minimum_health_capacity"])
    late = failed.updated_at - failed.deadline  # the leader's delay past the deadline
    print(
        f"\nrollouts: failed {late:.2f}s after its deadline "
        f"({failed.deadline - failed.started_at:.2f}s after it started); revert {revert_id} "
        f"successful {revert.updated_at - revert.started_at:.2f}s after it started; "
        f"everything converged {converged_after:.2f}s after the deploy; "
        f"sampler min {min(samples)} (floor {floor}) over {len(samples)} samples"
    )
    assert len(samples) > 50 and min(samples) >= floor
    assert 0 <= late <= 2.0
    listing = theseus(rollouts, "deployments", "--all")
    assert broken in listing and revert_id in listing and "failed" in listing
    assert revert_id not in theseus(rollouts, "deployments")  # finished: not running


def test_running_but_never_healthy_version_keeps_capacity_and_is_reverted(
    rollouts: Cluster, client: ServerClient
) -> None:
    """New tasks that run but never pass their check count for nothing: the old ones stay
    at the floor until the deadline, then the group is reverted."""
    first = deploy(client, "desk")
    assert finished(client, first, 60).status == "successful"
    v1 = client.versions("desk").versions[0]
    never = {
        "protocol": "COMMAND",
        "command": "false",
        "interval_seconds": 0.5,
        "timeout_seconds": 0.5,
        "max_consecutive_failures": 0,  # never killed: it runs, unhealthy, until replaced
    }
    sampler = Sampler(rollouts, "desk")
    sampler.start()
    strategy = {**STRATEGY, "progress_deadline_seconds": 6}
    sick = deploy(client, "desk", health_checks=[never], upgrade_strategy=strategy)
    failed = finished(client, sick, 30)
    assert failed.status == "failed" and "0 of 4 new tasks ready" in failed.message, failed
    revert_id = failed.message.rsplit("(", 1)[1].rstrip(")")
    assert finished(client, revert_id, 60).status == "successful"
    samples = sampler.stop()
    assert ready(client, "desk", v1.digest) == 4
    print(
        f"\nunhealthy version: failed {failed.updated_at - failed.deadline:.2f}s after its "
        f"deadline; sampler min {min(samples)} over {len(samples)} samples, up to "
        f"{sampler.most_unhealthy} new tasks running unhealthy at once"
    )
    assert sampler.most_unhealthy >= 2  # the new tasks did run: they were not ready
    assert min(samples) >= math.ceil(4 * STRATEGY["minimum_health_capacity"])


def test_good_rollout_succeeds_and_rollback_restores_version_1(
    rollouts: Cluster, client: ServerClient
) -> None:
    first = deploy(client, "cart", instances=2)
    assert finished(client, first, 60).status == "successful"
    second = deploy(client, "cart", instances=2, environment={"V": "2"})
    done = finished(client, second, 60)
    assert done.status == "successful" and done.ready == 2 and done.kind == "update"
    out = theseus(rollouts, "rollback", "cart", "1")
    assert "updated" in out and "deployment d-" in out
    history = client.versions("cart")
    assert history.current == 3 and history.versions[0].digest == history.versions[2].digest
    found = client.deployments(True).deployments
    [rollback] = [d for d in found if d.service == "cart" and d.to_version == 3]
    assert rollback.kind == "rollback"
    assert finished(client, rollback.id, 60).status == "successful"
    assert ready(client, "cart", history.versions[2].digest) == 2
    listing = theseus(rollouts, "history", "cart")
    assert "3*" in listing and history.versions[2].digest in listing


def test_cancelling_a_running_deployment_rolls_back(
    rollouts: Cluster, client: ServerClient
) -> None:
    first = deploy(client, "till", instances=2)
    assert finished(client, first, 60).status == "successful"
    v1 = client.versions("till").versions[0]
    slow = deploy(
        client,
        "till",
        instances=2,
        image=BROKEN,
        upgrade_strategy={**STRATEGY, "progress_deadline_seconds": 600},
    )
    out = theseus(rollouts, "deployments", "cancel", slow)
    assert f"{slow} cancelled: cancelled; rolled back to version 1" in out
    cancelled = client.deployment(slow)
    rollback_id = cancelled.message.rsplit("(", 1)[1].rstrip(")")
    assert finished(client, rollback_id, 60).status == "successful"
    assert ready(client, "till", v1.digest) == 2
    assert client.versions("till").current == 3


def test_restart_replaces_every_task_keeping_capacity(
    rollouts: Cluster, client: ServerClient
) -> None:
    first = deploy(client, "cafe")
    assert finished(client, first, 60).status == "successful"
    before = {t.id for t in client.tasks("cafe").tasks if t.desired == "run"}
    spec = client.versions("cafe").versions[0]
    sampler = Sampler(rollouts, "cafe")
    sampler.start()
    out = theseus(rollouts, "restart", "cafe")
    assert "restarted" in out and "deployment d-" in out, out
    restart_id = out.split("deployment ", 1)[1].split()[0]
    done = finished(client, restart_id, 60)
    samples = sampler.stop()
    assert done.status == "successful" and done.kind == "restart", done
    history = client.versions("cafe")
    assert history.current == 2 and history.versions[0].digest == f"{spec.digest}.r1"
    assert history.versions[0].spec == spec.spec  # the same spec, a version of its own
    now = {t.id for t in client.tasks("cafe").tasks if t.desired == "run"}
    assert len(now) == 4 and not now & before  # every task is a new one
    assert ready(client, "cafe", f"{spec.digest}.r1") == 4
    assert len(samples) > 10 and min(samples) >= math.ceil(4 * STRATEGY["minimum_health_capacity"])
    # Deploying the same document again changes nothing: the restart is not undone.
    assert (
        client.deploy(json.dumps({"deploy": {"cafe": BASE}}), "application/json").changes[0].action
        == "unchanged"
    )
