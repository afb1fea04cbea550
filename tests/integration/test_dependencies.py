"""Dependencies on the real cluster: a service that needs another starts after it and stops
before it, and a document naming an unknown dependency is refused without a change."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tests.kit.cluster import Cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import etcd_dump, wait_running
from theseus.api.client import ApiError

pytestmark = pytest.mark.integration

BUSYBOX = {"image": "theseus/busybox:latest", "cpus": 0.1, "mem": 64}
NOWHERE = [["hostname", "IS", "nowhere"]]  # keeps db pending until it is lifted


def deploy(cluster: Cluster, document: dict[str, Any]) -> None:
    with cluster.client() as client:
        client.deploy(json.dumps(document), "application/json")


def test_dependents_start_after_and_stop_before_what_they_need(cluster: Cluster) -> None:
    web = {**BUSYBOX, "instances": 2, "dependencies": ["db"]}
    deploy(cluster, {"deploy": {"db": {**BUSYBOX, "constraints": NOWHERE}, "web": web}})
    with cluster.client() as client:

        def web_waits() -> bool:
            reasons = {t.pending_reason for t in client.tasks("web").tasks}
            return reasons == {"waiting for dependency db: 0 of 1 tasks ready"}

        wait_until(web_waits, 20, "web waiting for db")
        assert all(t.state == "pending" for t in client.tasks("web").tasks)

        deploy(cluster, {"deploy": {"db": BUSYBOX, "web": web}})  # db can run now
        db_tasks = wait_running(client, "db", 1)
        web_tasks = wait_running(client, "web", 2)
        db_started = max(t.started_at or 0 for t in db_tasks)
        assert all((t.started_at or 0) >= db_started for t in web_tasks)

        # Remove both at once while a sampler watches: db is asked to stop only once no
        # web task runs any more.
        samples: list[tuple[bool, bool]] = []
        done = threading.Event()

        def sample() -> None:
            with cluster.client() as watcher:
                while not done.is_set():
                    tasks = watcher.tasks(include_stopped=True).tasks
                    web_running = any(t.service == "web" and t.state == "running" for t in tasks)
                    db_stopping = any(t.service == "db" and t.desired == "stop" for t in tasks)
                    samples.append((web_running, db_stopping))
                    time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            body = {"remove": {"db": {}, "web": {}}}
            client.deploy(json.dumps(body), "application/json")
            wait_until(lambda: not client.tasks(include_stopped=True).tasks, 30, "all stopped")
        finally:
            done.set()
            sampler.join(5)
    assert any(web_running for web_running, _ in samples), "the sampler saw web running"
    assert any(db_stopping for _, db_stopping in samples), "the sampler saw db stopping"
    assert not [s for s in samples if s == (True, True)], "db stopped while web still ran"


def test_unknown_dependencies_and_removing_a_needed_service_are_refused(
    cluster: Cluster,
) -> None:
    before = etcd_dump(cluster, "/theseus/groups/")
    with cluster.client() as client, pytest.raises(ApiError) as caught:
        body = {"deploy": {"web": {**BUSYBOX, "links": ["db"]}}}
        client.deploy(json.dumps(body), "application/json")
    assert caught.value.status == 422
    assert caught.value.details == [
        {"path": "deploy.web.dependencies", "message": "no service 'db' is deployed"}
    ]
    assert etcd_dump(cluster, "/theseus/groups/") == before

    deploy(cluster, {"deploy": {"db": BUSYBOX, "web": {**BUSYBOX, "dependencies": ["db"]}}})
    with cluster.client() as client:
        with pytest.raises(ApiError) as caught:
            client.remove("db")
        assert caught.value.status == 422
        assert {d["path"] for d in caught.value.details} == {"remove.db"}
        assert {g.service for g in client.groups().groups} == {"db", "web"}
        client.deploy(json.dumps({"remove": {"web": {}, "db": {}}}), "application/json")
