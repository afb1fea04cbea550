"""The event stream and its callbacks (issue 15, §1-2), on real processes: one etcd, three
servers, two docker agents, real containers.

* a deploy, a scale and a stop show as events, audits included;
* a reader of the leader's stream whose leader is killed resumes on another server without
  missing an event: the task events it got are exactly the state changes etcd recorded;
* a position older than a server's window is answered with a reset;
* a callback receiver (an HTTP server of the test, on 127.0.0.1) down for 10 s gets every
  event afterwards, in order, none twice;
* a container killed for memory shows an OOM exit and event, and so does a pod's member.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.kit.cli import theseus
from tests.kit.cluster import Cluster, start_ha_cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import LOOPING, deploy, leads, wait_running
from theseus.api.client import ApiError, ServerClient
from theseus.api.events import Event, SubscriptionCreate
from theseus.api.events_client import events, subscribe, unsubscribe
from theseus.cluster.ports import free_port
from theseus.model.tasks import TaskStatus
from theseus.store import keys
from theseus.store.etcd import EtcdStore

pytestmark = pytest.mark.integration

NODES = {"ev-1": "127.0.0.61", "ev-2": "127.0.0.62"}
TASK_TYPES = {
    "starting": "TaskStarting",
    "running": "TaskStarted",
    "exited": "TaskExited",
    "failed": "TaskFailed",
    "stopped": "TaskStopped",
    "lost": "TaskLost",
}


@pytest.fixture(scope="module")
def ev(
    tmp_path_factory: pytest.TempPathFactory,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> Iterator[Cluster]:
    agents = {name: {"address": address} for name, address in NODES.items()}
    cluster = start_ha_cluster(Path(tmp_path_factory.mktemp("events")), agents, servers=3)
    with cluster.client() as client:
        cluster_id = client.health().cluster_id
    yield cluster
    cluster.stop()
    # The last test's group was removed just before: its containers may outlive the agents.
    for container in docker_client.containers.list(
        all=True, filters={"label": f"theseus.cluster={cluster_id}"}
    ):
        container.remove(force=True)


@pytest.fixture(autouse=True)
def every_server(ev: Cluster) -> Iterator[None]:
    for name, process in ev.processes.items():
        if name in ev.servers and not process.alive():
            ev.restart(name)
    yield
    with ev.client(ev.server_urls) as client:
        for group in client.groups().groups:
            client.remove(group.service, group.labels)


def _revision(client: ServerClient) -> int:
    return client.health().revision


def _collect(client: ServerClient, service: str, after: int) -> list[Event]:
    return list(events(client, services=[service], after=str(after)))


def test_deploy_scale_stop_are_events(ev: Cluster) -> None:
    with ev.client(ev.server_urls) as client:
        start = _revision(client)
        deploy(client, shown={**LOOPING, "instances": 2})
        wait_running(client, "shown", 2)
        client.scale("shown", 3)
        wait_running(client, "shown", 3)
        client.remove("shown")

        def seen() -> set[str] | None:
            kinds = {e.type for e in _collect(client, "shown", start)}
            wanted = {"GroupCreated", "DeploymentStarted", "TaskPlaced", "TaskStarted"}
            wanted |= {"GroupScaled", "GroupRemoved", "TaskKilled", "TaskStopped"}
            return kinds if wanted <= kinds else None

        wait_until(seen, 60, "the deploy's, the scale's and the stop's events")
        audits = [e for e in events(client, topics=["audit"], after=str(start))]
        writes = {(e.payload["method"], e.payload["path"]) for e in audits}
        assert {("POST", "/deploy"), ("POST", "/v1/groups/shown/scale")} <= writes
        assert ("DELETE", "/v1/groups/shown") in writes
        assert all(e.payload["who"] == "anonymous:anonymous" for e in audits)
        # The same as server-sent events (what a browser's EventSource reads).
        answer = httpx.get(
            f"{ev.server_url}/v1/events",
            params={"after": str(start), "follow": "false", "service": "shown"},
            headers={"Accept": "text/event-stream"},
        )
        assert answer.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in answer.text.split("\n\n") if f.strip()]
        first = dict(line.split(": ", 1) for line in frames[0].splitlines())
        assert first["event"] == json.loads(first["data"])["type"]
        assert first["id"] == json.loads(first["data"])["id"]


def _etcd_task_changes(
    cluster: Cluster, service: str, start: int, end: int
) -> set[tuple[int, str, str]]:
    """(revision, task, event type) of every state change of ``service``'s task statuses
    between the revisions, from etcd's own history."""

    async def replay() -> set[tuple[int, str, str]]:
        store = EtcdStore(cluster.etcd_endpoints)
        await store.connect()
        found: set[tuple[int, str, str]] = set()
        last: dict[str, str] = {}
        try:
            async with asyncio.timeout(30):
                # The whole range the servers follow: revision ``end`` is one of its changes.
                async for change in store.watch(keys.MIRROR_START, keys.MIRROR_END, start + 1):
                    if change.revision > end:
                        break
                    task = change.key.removeprefix(keys.STATUS)
                    mine = change.key.startswith(keys.STATUS) and task.startswith(f"{service}.")
                    if mine and change.value is not None:
                        state = TaskStatus.model_validate_json(change.value).state.value
                        if last.get(task) != state:
                            found.add((change.revision, task, TASK_TYPES[state]))
                        last[task] = state
                    if change.revision == end:
                        break
        finally:
            await store.close()
        return found

    return asyncio.run(replay())


def test_the_stream_resumes_across_a_leader_kill(ev: Cluster) -> None:
    leader = wait_until(
        lambda: next((n for n in ev.servers if leads(ev.url_of(n))), None), 30, "a leader"
    )
    others = [ev.url_of(n) for n in ev.servers if n != leader]
    got: list[Event] = []
    reader_client = ServerClient([ev.url_of(leader), *others])
    with ev.client(ev.server_urls) as client:
        start = _revision(client)

        def read() -> None:
            try:
                for event in events(
                    reader_client,
                    topics=["task"],
                    services=["resume"],
                    after=str(start),
                    follow=True,
                ):
                    got.append(event)
            except Exception:  # closed at the end of the test
                pass

        threading.Thread(target=read, daemon=True).start()
        deploy(client, resume={**LOOPING, "instances": 3})
        wait_running(client, "resume", 3)
        wait_until(lambda: len(got) >= 6, 30, "the reader following the leader's stream")
        ev.kill(leader)
        client.scale("resume", 5)
        wait_running(client, "resume", 5, timeout=90)
        client.scale("resume", 2)
        wait_running(client, "resume", 2, timeout=90)

        def stops_recorded() -> tuple[int, set[tuple[int, str, str]]] | None:
            end = _revision(client)
            changes = _etcd_task_changes(ev, "resume", start, end)
            stops = [c for c in changes if c[2] == "TaskStopped"]
            return (end, changes) if len(stops) >= 3 else None  # the scale down's stops

        end, expected = wait_until(stops_recorded, 60, "the scale down's stops in etcd")

        def caught_up() -> bool:
            seen = {(e.index, e.key, e.type) for e in got if e.type in TASK_TYPES.values()}
            return {e for e in seen if e[0] <= end} == expected

        try:
            wait_until(caught_up, 30, "the reader's task events equal etcd's history")
        finally:
            reader_client.close()
        assert not [e for e in got if e.type == "reset"]
        ids = [e.id for e in got]
        assert len(ids) == len(set(ids)), "an event was delivered twice"
        ev.restart(leader)


def test_an_index_older_than_the_window_is_a_reset(ev: Cluster) -> None:
    name = list(ev.servers)[-1]
    with ev.client(ev.server_urls) as client:
        old = _revision(client)
        before = time.time()
        deploy(client, older={**LOOPING, "instances": 1})
        wait_running(client, "older", 1)
        wait_until(  # the leader keeps notable events within a second or so
            lambda: any(e.type == "GroupCreated" for e in _kept(ev, "older")), 10, "kept"
        )
    ev.kill(name)
    ev.restart(name)
    url = ev.url_of(name)
    wait_until(lambda: _answers(url), 30, "the restarted server")
    with ServerClient(url) as client:
        first = next(events(client, after=str(old)))
        assert (first.topic, first.type) == ("stream", "reset")
        assert first.payload["asked"] == old and first.payload["start"] > old
        # What happened before the restart is still there by time: the leader kept the
        # notable events in etcd, and audits are derived again from the audit log.
        kept = list(events(client, since=before))
    kinds = {(e.type, e.service) for e in kept}
    assert ("GroupCreated", "older") in kinds
    assert any(e.type == "ApiWrite" and e.payload["path"] == "/deploy" for e in kept)
    assert all(e.index <= first.payload["start"] or e.time >= before for e in kept)


def _kept(cluster: Cluster, service: str) -> list[Event]:
    """The notable events of ``service`` the leader wrote to etcd."""

    async def load() -> list[Event]:
        store = EtcdStore(cluster.etcd_endpoints)
        await store.connect()
        try:
            _, batches = await store.load(keys.EVENTS, keys.prefix_end(keys.EVENTS))
        finally:
            await store.close()
        found = [Event.model_validate(e) for b in batches for e in json.loads(b.value)]
        return [e for e in found if e.service == service]

    return asyncio.run(load())


def _answers(url: str) -> bool:
    try:
        with ServerClient(url) as client:
            client.health()
        return True
    except (ApiError, ConnectionError):
        return False


class Receiver:
    """A callback receiver on 127.0.0.1 that can go down and come back on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[dict[str, Any]] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def ids(self) -> list[str]:
        return [e["id"] for body in self.bodies for e in body["events"]]


def test_a_receiver_down_for_10s_gets_every_event_after_in_order(ev: Cluster) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        with ev.client(ev.server_urls) as client:
            start = _revision(client)
            sub = subscribe(
                client,
                SubscriptionCreate(
                    url=f"http://127.0.0.1:{receiver.port}/hook",
                    topics=["task", "group", "deployment"],
                    services=["cb"],
                ),
            )
            deploy(client, cb={**LOOPING, "instances": 2})
            wait_running(client, "cb", 2)
            wait_until(lambda: receiver.ids, 30, "a first delivery")
            receiver.stop()
            down_at = time.monotonic()
            client.scale("cb", 4)
            wait_running(client, "cb", 4)
            client.scale("cb", 1)
            wait_running(client, "cb", 1)
            # The outage: the receiver stays down 10 s while events happen.
            wait_until(lambda: time.monotonic() - down_at >= 10, 15, "10 s of outage")
            receiver.start()
            reference = [
                e.id
                for e in events(
                    client,
                    topics=["task", "group", "deployment"],
                    services=["cb"],
                    after=str(start),
                )
            ]
            wait_until(lambda: receiver.ids[-1:] == reference[-1:], 30, "every event delivered")
            assert receiver.ids == reference  # in order, each once
            assert all(body["subscription"] == sub.id for body in receiver.bodies)
            listed = client.request("GET", "/v1/event-subscriptions").json()
            [entry] = [s for s in listed["subscriptions"] if s["id"] == sub.id]
            assert entry["url"] == f"http://127.0.0.1:{receiver.port}/hook"
            unsubscribe(client, sub.id)
    finally:
        receiver.stop()


def test_callbacks_go_on_after_a_leader_kill(ev: Cluster) -> None:
    """The next leader delivers from the cursor the killed one left in etcd: every event
    arrives, in order; one sent again across the change (at least once) is the same event."""
    receiver = Receiver()
    receiver.start()
    leader = wait_until(
        lambda: next((n for n in ev.servers if leads(ev.url_of(n))), None), 30, "a leader"
    )
    try:
        with ev.client(ev.server_urls) as client:
            start = _revision(client)
            selection = {"topics": ["task", "group"], "services": ["handover"]}
            sub = subscribe(
                client, SubscriptionCreate(url=f"http://127.0.0.1:{receiver.port}/", **selection)
            )
            deploy(client, handover={**LOOPING, "instances": 2})
            wait_running(client, "handover", 2)
            wait_until(lambda: len(receiver.ids) >= 4, 30, "deliveries from the first leader")
            ev.kill(leader)
            client.scale("handover", 4)
            wait_running(client, "handover", 4, timeout=90)
            reference = [
                e.id
                for e in events(
                    client, topics=selection["topics"], services=["handover"], after=str(start)
                )
            ]
            wait_until(
                lambda: list(dict.fromkeys(receiver.ids)) == reference,
                30,
                "every event delivered by the next leader",
            )
            # A resent event is the same event (its time aside where the record has none: then
            # it is when the deriving server applied the change).
            bodies: dict[str, str] = {}
            for body in receiver.bodies:
                for event in body["events"]:
                    text = json.dumps({**event, "time": None}, sort_keys=True)
                    assert bodies.setdefault(event["id"], text) == text
            unsubscribe(client, sub.id)
    finally:
        receiver.stop()
        ev.restart(leader)


def test_a_callback_url_is_validated(ev: Cluster) -> None:
    with ev.client(ev.server_urls) as client:
        for url in ("ftp://example.org/x", "http://", "not a url"):
            with pytest.raises(ApiError) as caught:
                client.request("POST", "/v1/event-subscriptions", json={"url": url})
            assert caught.value.status == 422
            assert [d["path"] for d in caught.value.details] == ["url"]
        listed = client.request("GET", "/v1/event-subscriptions").json()
        assert listed["subscriptions"] == []


def _oom_exits(client: ServerClient, service: str, after: int) -> list[Event] | None:
    """The service's task exits said to be OOM kills since ``after``; None: none yet."""
    found = [
        e
        for e in events(client, topics=["task"], services=[service], after=str(after))
        if e.type == "TaskExited" and e.payload.get("oom_killed")
    ]
    return found or None


def test_a_task_killed_for_memory_shows_an_oom_exit_and_event(ev: Cluster) -> None:
    with ev.client(ev.server_urls) as client:
        start = _revision(client)
        hog = {**LOOPING, "mem": 16, "command": "tail /dev/zero"}
        deploy(client, hog=hog)

        [event, *_] = wait_until(lambda: _oom_exits(client, "hog", start), 90, "an OOM exit event")
        assert "killed for memory (OOM)" in event.message
        task = client.task(event.key)
        assert task.oom_killed and task.state == "exited"
        assert task.exit_code == 137


def test_a_pod_member_killed_for_memory_shows_an_oom_exit_naming_it(ev: Cluster) -> None:
    with ev.client(ev.server_urls) as client:
        start = _revision(client)
        members = [
            {"name": "app", "image": "theseus/busybox:latest", "command": "sleep 3600"},
            {"name": "hog", "image": "theseus/busybox:latest", "command": "tail /dev/zero"},
        ]
        for member in members:
            member["mem"] = 16
        pod = {"task_kill_grace_period_seconds": 1, "containers": members}
        deploy(client, podhog=pod)

        found = wait_until(lambda: _oom_exits(client, "podhog", start), 90, "the pod's OOM exit")
        event = found[0]
        assert "killed for memory (OOM)" in event.message
        task = client.task(event.key)
        assert task.oom_killed and task.state == "exited" and task.exit_code == 137
        assert task.message is not None and "container 'hog'" in task.message


def test_the_cli_prints_events(ev: Cluster) -> None:
    with ev.client(ev.server_urls) as client:
        deploy(client, printed={**LOOPING, "instances": 1})
        wait_running(client, "printed", 1)

    def shown() -> str | None:
        out = theseus(ev, "events", "--since", "5m", "--service", "printed").stdout
        return out if "GroupCreated" in out and "TaskStarted" in out else None

    wait_until(shown, 30, "theseus events --since 5m showing the deploy")
    out = theseus(ev, "events", "--since", "5m", "--topic", "audit", "--json").stdout
    assert any(json.loads(line)["topic"] == "audit" for line in out.splitlines())
