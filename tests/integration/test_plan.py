"""``theseus plan`` / ``POST /deploy?dry_run=true`` on the real cluster: each kind of change is
described, with placements and diffs, and nothing changes in etcd."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.kit.cli import theseus
from tests.kit.cluster import Cluster
from tests.kit.workloads import etcd_dump, wait_running

pytestmark = pytest.mark.integration

WEB = {"image": "theseus/busybox:latest", "instances": 2, "cpus": 0.1, "mem": 64}


def state_dump(cluster: Cluster) -> list[tuple[str, str, int]]:
    """The cluster's state in etcd, without the audit log, the kept events and the servers'
    heard records (records of earlier writes, changes and heartbeats, written in the
    background whenever they land)."""
    dump = etcd_dump(cluster, "/theseus/")  # keys in base64, as etcdctl prints them
    logs = (b"/theseus/audit/", b"/theseus/events/", b"/theseus/heard/")
    return [kv for kv in dump if not base64.b64decode(kv[0]).startswith(logs)]


def test_plan_describes_each_change_and_changes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    with cluster.client() as client:
        body = {"deploy": {"planned": WEB, "doomed": WEB, "grown": WEB}}
        client.deploy(json.dumps(body), "application/json")
        for service in ("planned", "doomed", "grown"):
            wait_running(client, service, 2)
        before = state_dump(cluster)
        document = {
            "deploy": {
                "planned": {**WEB, "environment": {"COLOR": "blue"}},
                "fresh": {
                    **WEB,
                    "instances": 4,
                    "constraints": [["hostname", "UNIQUE"]],
                    "stop_after_server_loss_seconds": "never",
                },
                "grown": {**WEB, "instances": 3},
            },
            "remove": {"doomed": {}},
        }
        path = tmp_path / "plan.json"
        path.write_text(json.dumps(document))
        shown = theseus(cluster, "plan", "-f", str(path)).stdout
        answer = json.loads(theseus(cluster, "plan", "-f", str(path), "--json").stdout)
        assert state_dump(cluster) == before, "a plan must change nothing"
        for service in ("planned", "doomed", "grown"):
            client.remove(service)

    assert answer["dry_run"] is True
    by_service = {c["service"]: c for c in answer["changes"]}
    assert by_service["planned"]["action"] == "updated"
    assert by_service["planned"]["plan"]["diff"] == [
        {"field": "environment.COLOR", "old": None, "new": "blue"}
    ]
    assert sum(by_service["planned"]["plan"]["placed"].values()) == 1  # one at a time
    fresh = by_service["fresh"]
    assert fresh["action"] == "created" and sum(fresh["plan"]["placed"].values()) == 3
    assert fresh["plan"]["pending"] == {"0/3 nodes can run it: 3 nodes: UNIQUE hostname": 1}
    grown = by_service["grown"]
    assert grown["action"] == "scaled"
    assert grown["plan"]["diff"] == [{"field": "instances", "old": 2, "new": 3}]
    assert sum(grown["plan"]["placed"].values()) == 1 and grown["plan"]["stopping"] == 0
    assert by_service["doomed"]["action"] == "removed"
    assert by_service["doomed"]["plan"]["stopping"] == 2
    assert "environment.COLOR: None → 'blue'" in shown
    assert "1 would wait: 0/3 nodes can run it: 3 nodes: UNIQUE hostname" in shown
    assert "2 running would stop now" in shown
    # How long a node cut off from every server keeps each group's tasks (issue 14).
    assert by_service["planned"]["plan"]["stop_after_server_loss"] == 30.0  # the default
    assert fresh["plan"]["stop_after_server_loss"] == "never"
    assert by_service["doomed"]["plan"]["stop_after_server_loss"] is None
    assert "on a node that reaches no server: stopped after 30 s" in shown
    assert "on a node that reaches no server: never stopped" in shown
