"""A big deploy is planned in a child process of the real server (issue 17), and the passes
after it in the leader's thread.

A real etcd, a real server and two real agents with the ``sim`` driver: a deploy of 600 tasks
is a pass with 600 placements, which the leader forks a child for
(``theseus.server.pass_process``); the child has the server's memory, gRPC channels, event
loop and threads included, so this is where a fork that hangs or a plan that comes back
wrong would show. The passes after it (statuses changing, a scale down) stay in the thread.
The server's metrics say where each pass ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kit.cluster import start_cluster
from tests.kit.wait import wait_until
from theseus.api.client import ServerClient
from theseus.server.pass_process import CHILD_MIN_PLACEMENTS

pytestmark = pytest.mark.integration

BIG = {"cpus": 1000.0, "mem": 1_000_000, "driver": "sim"}
AGENTS = {"sim-1": {"address": "127.0.0.61", **BIG}, "sim-2": {"address": "127.0.0.62", **BIG}}
TASKS = CHILD_MIN_PLACEMENTS + 100
DOCUMENT = f"""
deploy:
  wide:
    image: sim
    instances: {TASKS}
    cpus: 0.01
    mem: 1
"""


def passes(client: ServerClient) -> dict[str, int]:
    """The server's reconcile passes so far, by where they ran (whatever their scope)."""
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(client.metrics()):
        for sample in family.samples:
            if sample.name == "theseus_reconcile_passes_total":
                where = sample.labels["where"]
                counts[where] = counts.get(where, 0) + int(sample.value)
    return counts


def running(client: ServerClient) -> int:
    return sum(g.running_current for g in client.groups("wide").groups)


def test_a_big_deploy_is_planned_in_a_child_and_the_rest_in_the_thread(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path, AGENTS)
    try:
        with cluster.client() as client:
            before = passes(client)
            client.deploy(DOCUMENT)
            wait_until(lambda: running(client) == TASKS, 60, f"{TASKS} tasks running")
            # The passes that register the tasks started run in the thread. The first may come
            # after all are running: the leader rests twice as long as the child's pass took.
            wait_until(
                lambda: passes(client).get("thread", 0) > before.get("thread", 0),
                30,
                "a pass in the thread after the deploy",
            )
            after = passes(client)
            assert after.get("child", 0) - before.get("child", 0) >= 1, after
            # Spread over both nodes by the child's plan, every task once.
            tasks = client.tasks(service="wide").tasks
            assert len(tasks) == TASKS and len({t.id for t in tasks}) == TASKS
            assert {t.node for t in tasks} == set(AGENTS)
            # A scale down places nothing: its passes stay in the thread.
            client.scale("wide", 10)
            wait_until(lambda: len(client.tasks(service="wide").tasks) == 10, 60, "10 tasks")
            assert passes(client).get("child", 0) == after.get("child", 0)
            # gRPC's fork handlers are off in the server: they said so at every fork.
            logs = [p for p in cluster.root.rglob("*.log") if "server" in p.name]
            assert logs and not [p for p in logs if "skipping fork()" in p.read_text()]
    finally:
        cluster.stop()
