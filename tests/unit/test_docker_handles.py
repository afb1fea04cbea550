"""The docker driver knows a pod from its handle without asking the Engine
(``theseus.agent.drivers.docker_handles``): a single container is stopped, removed and exec'd
into with no listing of pod members; a pod it started, or one a listing shows (a restarted
agent, also one upgraded over containers an earlier version labelled), is handled whole;
handles stay the bare container ids earlier versions reported; a handle it never saw is looked
up once. Against a fake Engine that records every call."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from aiodocker.exceptions import DockerError

from theseus.agent.drivers.base import DriverError, Launch, MemberLaunch, Owner
from theseus.agent.drivers.docker import DockerDriver
from theseus.agent.drivers.docker_handles import KnownHandles

OWNER = Owner("n1", "127.0.0.2", "cluster-1")
TASK_LABELS = {"theseus.node": "n1", "theseus.cluster": "cluster-1"}


class FakeContainer:
    """What the driver uses of aiodocker's ``DockerContainer``."""

    def __init__(self, engine: FakeEngine, id: str, labels: dict[str, str]) -> None:
        self.engine, self.id, self.labels, self.state = engine, id, labels, "created"

    def __getitem__(self, key: str) -> Any:
        return {"Labels": self.labels, "State": self.state, "Created": 1_700_000_000}[key]

    async def start(self) -> None:
        self.state = "running"

    async def stop(self, t: int) -> None:
        self.engine.calls.append(("stop", self.id))
        self.state = "exited"

    async def show(self) -> dict[str, Any]:
        self.engine.calls.append(("show", self.id))
        finished = "2024-01-01T00:00:00Z"
        state = {"StartedAt": finished, "FinishedAt": finished, "ExitCode": 0}
        return {"Id": self.id, "State": state, "Config": {"Labels": self.labels}}

    async def delete(self, force: bool, v: bool) -> None:
        self.engine.calls.append(("delete", self.id))
        del self.engine.containers[self.id]


class Missing:
    async def delete(self, force: bool, v: bool) -> None:
        raise DockerError(404, "no such container")

    async def stop(self, t: int) -> None:
        raise DockerError(404, "no such container")

    async def show(self) -> dict[str, Any]:
        raise DockerError(404, "no such container")


class FakeEngine:
    """``docker.containers``: create, list (by label filters), container(id)."""

    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    def add(self, labels: dict[str, str], state: str = "running") -> FakeContainer:
        container_id = f"{next(self._ids):064x}"  # a bare Docker id
        container = self.containers[container_id] = FakeContainer(self, container_id, labels)
        container.state = state
        return container

    async def create(self, config: dict[str, Any], name: str) -> FakeContainer:
        return self.add(dict(config["Labels"]), state="created")

    async def list(self, all: bool, filters: dict[str, list[str]]) -> list[FakeContainer]:
        self.calls.append(("list", ",".join(filters["label"])))
        wanted = [f.split("=", 1) for f in filters["label"]]
        return [c for c in self.containers.values() if all_match(c.labels, wanted)]

    def container(self, container_id: str) -> FakeContainer | Missing:
        return self.containers.get(container_id) or Missing()


def all_match(labels: dict[str, str], wanted: list[list[str]]) -> bool:
    return all(labels.get(key) == value for key, value in wanted)


class FakeImages:
    """``docker.images``: every image is present (nothing is pulled)."""

    async def inspect(self, name: str) -> dict[str, Any]:
        return {"Id": name}


class FakeDocker:
    def __init__(self, engine: FakeEngine) -> None:
        self.containers = engine
        self.images = FakeImages()


def driver_on(engine: FakeEngine) -> DockerDriver:
    """A driver as ``open`` leaves it, talking to ``engine`` (no event stream)."""
    driver = DockerDriver()
    driver._docker = FakeDocker(engine)  # type: ignore[assignment]
    driver._owner = OWNER
    return driver


def launch(task_id: str, members: list[str] | None = None) -> Launch:
    labels = {"theseus.task": task_id, **TASK_LABELS}
    pod = [MemberLaunch(name, "theseus/busybox", {}, 0.1, 16) for name in members or []]
    return Launch(task_id, "theseus/busybox", {}, labels, [], 0.1, 16, members=pod)


def member_listings(engine: FakeEngine) -> list[tuple[str, str]]:
    return [call for call in engine.calls if call[0] == "list" and "theseus.pod.infra" in call[1]]


async def test_a_single_container_is_handled_without_looking_for_members() -> None:
    engine = FakeEngine()
    driver = driver_on(engine)
    handle = await driver.start(launch("web.1"))
    assert handle in engine.containers  # the bare container id, as before
    await driver.stop(handle, grace=1)
    with pytest.raises(DriverError, match="not a pod"):
        await driver.exec(handle, "true", 1, container="app")
    await driver.remove(handle)
    assert member_listings(engine) == []
    assert ("stop", handle) in engine.calls and ("delete", handle) in engine.calls


async def test_a_pod_it_started_is_stopped_and_removed_whole() -> None:
    engine = FakeEngine()
    driver = driver_on(engine)
    handle = await driver.start(launch("web.2", ["app", "sidecar"]))
    assert handle in engine.containers  # the infrastructure container's bare id
    members = [c.id for c in engine.containers.values() if c.id != handle]
    assert len(members) == 2
    await driver.stop(handle, grace=1)
    assert {("stop", m) for m in members} | {("stop", handle)} <= set(engine.calls)
    await driver.remove(handle)
    assert engine.containers == {}


async def test_a_restarted_driver_learns_pods_an_earlier_version_labelled() -> None:
    engine = FakeEngine()
    # As the previous version labelled them (literal names: they must never change).
    single = engine.add({"theseus.task": "web.3", **TASK_LABELS})
    infra = engine.add({"theseus.task": "web.4", "theseus.pod.members": "app", **TASK_LABELS})
    member = engine.add(
        {
            "theseus.task": "web.4",
            "theseus.pod.member": "app",
            "theseus.pod.infra": infra.id,
            **TASK_LABELS,
        }
    )
    driver = driver_on(engine)  # a new agent process
    observed = {o.task_id: o for o in await driver.list_tasks()}
    assert observed["web.3"].handle == single.id and observed["web.4"].handle == infra.id
    assert observed["web.4"].running
    engine.calls.clear()
    await driver.stop(single.id, grace=1)
    assert member_listings(engine) == []
    await driver.stop(infra.id, grace=1)
    assert ("stop", member.id) in engine.calls and ("stop", infra.id) in engine.calls


async def test_a_handle_it_never_saw_is_looked_up_once() -> None:
    engine = FakeEngine()
    infra = engine.add({"theseus.task": "web.5", "theseus.pod.members": "app", **TASK_LABELS})
    member = engine.add(
        {
            "theseus.task": "web.5",
            "theseus.pod.member": "app",
            "theseus.pod.infra": infra.id,
            **TASK_LABELS,
        }
    )
    single = engine.add({"theseus.task": "web.6", **TASK_LABELS})
    driver = driver_on(engine)  # e.g. a tool given the tasks' container_id by the server
    await driver.stop(infra.id, grace=1)
    assert ("stop", member.id) in engine.calls
    await driver.stop(single.id, grace=1)
    await driver.stop(single.id, grace=1)
    assert len([c for c in member_listings(engine) if single.id in c[1]]) == 1


def test_known_handles_learn_from_starts_and_listings_and_forget_removals() -> None:
    handles = KnownHandles()
    handles.learn("pod", is_pod=True)
    handles.learn("single", is_pod=False)
    assert (handles.is_pod("pod"), handles.is_pod("single"), handles.is_pod("x")) == (
        True,
        False,
        None,
    )
    handles.listed({"other": True}, handles.before_listing())
    # The listing did not find them: gone.
    assert (handles.is_pod("pod"), handles.is_pod("single"), handles.is_pod("other")) == (
        None,
        None,
        True,
    )
    handles.forget("other")
    assert handles.is_pod("other") is None


def test_a_handle_started_during_a_listing_is_kept() -> None:
    handles = KnownHandles()
    handles.learn("old", is_pod=True)
    before = handles.before_listing()
    handles.learn("new", is_pod=True)  # while the Engine was being listed: not in the listing
    handles.listed({}, before)
    assert (handles.is_pod("new"), handles.is_pod("old")) == (True, None)
