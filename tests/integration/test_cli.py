"""The ``theseus`` command against a real cluster, as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.kit.cli import theseus
from tests.kit.cluster import Cluster
from tests.kit.wait import wait_until

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def ps(cluster: Cluster, *args: str) -> list[dict[str, object]]:
    tasks = json.loads(theseus(cluster, "ps", "--json", *args).stdout)
    return tasks["tasks"] if isinstance(tasks, dict) else tasks  # type: ignore[no-any-return]


def test_deploy_ps_scale_logs_rm(cluster: Cluster) -> None:
    deployed = theseus(cluster, "deploy", "-f", str(EXAMPLES / "ingestor.yaml"))
    assert "created" in deployed.stdout and "converged" in deployed.stdout

    tasks = ps(cluster, "ingestor")
    assert len(tasks) == 4 and {t["state"] for t in tasks} == {"running"}
    table = theseus(cluster, "ps").stdout
    assert all(str(t["id"]) in table for t in tasks)

    theseus(cluster, "scale", "ingestor", "2", "--labels", "dev")
    wait_until(lambda: len(ps(cluster, "ingestor")) == 2, 30, "scaled to 2")

    task_id = str(ps(cluster, "ingestor")[0]["id"])
    wait_until(lambda: "started" in theseus(cluster, "logs", task_id).stdout, 15, "the task's log")
    service_logs = theseus(cluster, "logs", "ingestor").stdout
    assert task_id in service_logs  # lines are prefixed with their task id

    nodes = json.loads(theseus(cluster, "nodes", "--json").stdout)
    nodes = nodes["nodes"] if isinstance(nodes, dict) else nodes
    assert {n["name"] for n in nodes} == set(cluster.nodes)

    theseus(cluster, "rm", "ingestor")
    wait_until(lambda: not ps(cluster, "ingestor"), 30, "ingestor removed")


def test_the_web_example_deploys_healthy_and_spread(cluster: Cluster) -> None:
    deployed = theseus(cluster, "deploy", "-f", str(EXAMPLES / "web.yaml"))
    assert "converged" in deployed.stdout
    tasks = ps(cluster, "web")
    assert len(tasks) == 4 and {t["health"] for t in tasks} == {"healthy"}
    per_node = sorted(Counter(str(t["node"]) for t in tasks).values())
    assert per_node == [1, 1, 2], per_node  # GROUP_BY hostname over 3 nodes, MAX_PER 2
    assert "running (healthy)" in theseus(cluster, "ps", "web").stdout
    theseus(cluster, "rm", "web")
    wait_until(lambda: not ps(cluster, "web"), 30, "web removed")


def test_failing_deploy_exits_nonzero_with_the_reason(cluster: Cluster, tmp_path: Path) -> None:
    document = tmp_path / "missing.yaml"
    document.write_text(
        "deploy:\n  ghost:\n    image: theseus/no-such-image:1\n    cpus: 0.05\n    mem: 16\n"
    )
    result = theseus(cluster, "deploy", "-f", str(document), "--timeout", "60", expect=None)
    assert result.returncode == 1
    assert "names no registry host, so it is not pulled" in result.stdout + result.stderr


def test_bad_document_and_unreachable_server_give_one_line_errors(
    cluster: Cluster, tmp_path: Path
) -> None:
    document = tmp_path / "bad.yaml"
    document.write_text("deploy:\n  web:\n    image: x\n    instances: -1\n")
    bad = theseus(cluster, "deploy", "-f", str(document), expect=None)
    assert bad.returncode == 1 and "deploy.web.instances" in bad.stdout + bad.stderr

    unreachable = subprocess.run(
        [sys.executable, "-m", "theseus", "--server", "http://127.0.0.1:9", "ps"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unreachable.returncode == 1
    message = (unreachable.stdout + unreachable.stderr).strip()
    assert "cannot reach the Theseus server" in message and "Traceback" not in message
