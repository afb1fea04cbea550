"""Pods on the agent: ``launch_of`` for a pod, the Docker configs of its containers, how its
containers fold into one observed task, and the runner's pod-specific steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.kit.builders import make_assignment
from tests.kit.fake_driver import FakeDriver
from tests.kit.runner import drain, settled
from theseus.agent.drivers.base import DriverError, ExitNotice, Owner
from theseus.agent.drivers.docker_pods import (
    INFRA_IMAGE,
    PodContainer,
    infra_config,
    member_config,
    notice_of,
    pod_observed,
    sortable_time,
)
from theseus.agent.drivers.process import ProcessDriver
from theseus.agent.drivers.sim import SimDriver
from theseus.agent.launch import launch_of
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.agent.slots import UnknownContainer
from theseus.api.schemas import Assignment
from theseus.images.labels import LABEL_MEMBER, LABEL_POD_INFRA, LABEL_POD_MEMBERS
from theseus.model.hostgates import HostVolume, NodeGates

OWNER = Owner("n1", "127.0.0.2", "cluster-1")
# The node's host volumes, which specs mount by name (``--host-volume``).
GATES = NodeGates(
    host_volumes=[
        HostVolume(name="data", path="/srv/data"),
        HostVolume(name="own", path="/tmp/own"),
        HostVolume(name="mine", path="/mine"),
    ]
)


def pod_assignment(task_id: str = "web.abc123", desired: str = "run", **spec: Any) -> Assignment:
    fields: dict[str, Any] = {
        "ports": {"http": 8080},
        "environment": {"SHARED": "group", "MODE": "group"},
        "volumes": ["data:/data:ro"],
        "containers": [
            {
                "name": "app",
                "image": "registry:5000/app:1.2",
                "command": "serve",
                "environment": {"MODE": "member"},
                "cpus": 0.5,
                "mem": 256,
            },
            {"name": "sidecar", "image": "theseus/busybox", "args": ["sleep", "9"]},
        ],
    }
    fields.update(spec)
    return Assignment.model_validate(
        {
            "task_id": task_id,
            "service": "web",
            "labels": [],
            "group": "web/[]",
            "version": "v1",
            "desired": desired,
            "spec": fields,
            "host_ports": {"http": 31080},
        }
    )


def test_launch_of_a_pod_lists_its_members_with_merged_environments() -> None:
    launch = launch_of(pod_assignment(), OWNER, "unix:///run/theseus/agent.sock", GATES)
    assert launch.is_pod
    assert [m.name for m in launch.members] == ["app", "sidecar"]
    app, sidecar = launch.members
    # The task's variables, the group's, then the member's own (which win).
    assert app.environment["PORT_HTTP"] == sidecar.environment["PORT_HTTP"] == "31080"
    assert app.environment["THESEUS_DISCOVERY"] == "unix:///run/theseus/agent.sock"
    assert app.environment["SHARED"] == sidecar.environment["SHARED"] == "group"
    assert app.environment["MODE"] == "member"
    assert sidecar.environment["MODE"] == "group"
    assert app.environment["THESEUS_CONTAINER"] == "app"
    assert sidecar.environment["THESEUS_CONTAINER"] == "sidecar"
    # Each member sees its own image.
    assert (app.environment["DOCKER_IMAGE"], app.environment["DOCKER_TAG"]) == (
        "registry:5000/app",
        "1.2",
    )
    assert (sidecar.environment["DOCKER_IMAGE"], sidecar.environment["DOCKER_TAG"]) == (
        "theseus/busybox",
        "latest",
    )
    assert (app.command, app.args, sidecar.command, sidecar.args) == (
        "serve",
        None,
        None,
        ["sleep", "9"],
    )
    assert (app.cpus, app.mem, sidecar.cpus, sidecar.mem) == (0.5, 256, 0.1, 128)
    assert app.volumes == sidecar.volumes == ["/srv/data:/data:ro"]
    # The task: the group's ports once, the pod's totals.
    assert [(p.name, p.container_port, p.host_port) for p in launch.ports] == [
        ("http", 8080, 31080)
    ]
    assert (launch.cpus, launch.mem) == (0.6, 384)


def test_a_members_own_environment_wins_even_over_theseus_variables() -> None:
    containers = [{"name": "a", "image": "i", "environment": {"THESEUS_CONTAINER": "x"}}]
    launch = launch_of(pod_assignment(containers=containers), OWNER, gates=GATES)
    assert launch.members[0].environment["THESEUS_CONTAINER"] == "x"


def test_member_volumes_follow_the_groups() -> None:
    containers = [{"name": "a", "image": "i", "volumes": ["own:/own"]}]
    launch = launch_of(pod_assignment(containers=containers), OWNER, gates=GATES)
    assert launch.members[0].volumes == ["/srv/data:/data:ro", "/tmp/own:/own:rw"]


def test_a_single_container_task_has_no_members() -> None:
    launch = launch_of(
        pod_assignment(containers=None, image="img", volumes=[], environment={}), OWNER
    )
    assert not launch.is_pod
    assert launch.image == "img"
    assert "THESEUS_CONTAINER" not in launch.environment


def test_infra_container_owns_the_ports_and_lists_the_members() -> None:
    launch = launch_of(pod_assignment(), OWNER, gates=GATES)
    config = infra_config(launch, "127.0.0.2")
    assert config["Image"] == INFRA_IMAGE
    assert config["Labels"][LABEL_POD_MEMBERS] == "app,sidecar"
    assert config["Labels"]["theseus.task"] == "web.abc123"
    assert config["Labels"]["theseus.cluster"] == "cluster-1"
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.2", "HostPort": "31080"}]
    }
    assert "NetworkMode" not in config["HostConfig"]  # its own namespace: the pod's


def test_member_joins_the_infra_network_and_publishes_nothing() -> None:
    launch = launch_of(pod_assignment(), OWNER, gates=GATES)
    app, sidecar = launch.members
    config = member_config(launch, app, "infra-id", ["/state/discovery:/run/theseus:ro"])
    assert config["Image"] == "registry:5000/app:1.2"
    assert config["HostConfig"]["NetworkMode"] == "container:infra-id"
    assert "PortBindings" not in config["HostConfig"]
    assert "ExposedPorts" not in config
    assert config["Labels"][LABEL_MEMBER] == "app"
    assert config["Labels"][LABEL_POD_INFRA] == "infra-id"
    assert config["Labels"]["theseus.task"] == "web.abc123"
    assert config["Cmd"] == ["/bin/sh", "-c", "serve"]
    assert config["HostConfig"]["NanoCpus"] == 500_000_000
    assert config["HostConfig"]["Memory"] == 256 * 1024 * 1024
    assert config["HostConfig"]["Binds"] == [
        "/srv/data:/data:ro",
        "/state/discovery:/run/theseus:ro",
    ]
    assert "MODE=member" in config["Env"]
    assert member_config(launch, sidecar, "infra-id")["Cmd"] == ["sleep", "9"]


def infra(running: bool = True, **kw: Any) -> PodContainer:
    labels = {"theseus.task": "t", LABEL_POD_MEMBERS: "app,sidecar"}
    return PodContainer("infra-id", labels, running, **kw)


def member(name: str, running: bool = True, **kw: Any) -> PodContainer:
    labels = {"theseus.task": "t", LABEL_MEMBER: name, LABEL_POD_INFRA: "infra-id"}
    return PodContainer(f"{name}-id", labels, running, **kw)


def test_engine_times_sort_as_times() -> None:
    assert sortable_time("2026-01-01T00:00:05.1Z") < sortable_time("2026-01-01T00:00:05.12Z")
    assert sortable_time("2026-01-01T00:00:05Z") < sortable_time("2026-01-01T00:00:05.000001Z")
    assert sortable_time("") > sortable_time("2026-01-01T00:00:05Z")  # unknown: last


def test_a_members_own_mount_replaces_the_discovery_bind() -> None:
    containers = [{"name": "a", "image": "i", "volumes": ["mine:/run/theseus/"]}]
    launch = launch_of(pod_assignment(containers=containers, volumes=[]), OWNER, gates=GATES)
    config = member_config(launch, launch.members[0], "x", ["/state/d:/run/theseus:ro"])
    assert config["HostConfig"]["Binds"] == ["/mine:/run/theseus/:rw"]


def test_a_pod_runs_while_every_container_runs() -> None:
    seen = pod_observed("t", [member("sidecar"), infra(created=5.0), member("app")])
    assert (seen.task_id, seen.handle, seen.running) == ("t", "infra-id", True)
    assert seen.started_at == 5.0  # an adopted pod's health grace counts from its start


def test_the_first_member_to_exit_ends_the_pod_and_says_so() -> None:
    containers = [
        infra(),
        member("app", False, exit_code=143, finished_at="2026-01-01T00:00:02.1Z"),
        member("sidecar", False, exit_code=1, finished_at="2026-01-01T00:00:02.09Z"),
    ]
    seen = pod_observed("t", containers)
    assert (seen.handle, seen.running, seen.exit_code) == ("infra-id", False, 1)
    assert seen.message == "container 'sidecar' exited with code 1"


def test_a_member_that_exits_with_the_infra_container_is_blamed_first() -> None:
    at = "2026-01-01T00:00:02Z"
    containers = [
        infra(False, exit_code=0, finished_at=at),
        member("app", False, exit_code=2, finished_at=at),
    ]
    containers.append(member("sidecar"))
    assert pod_observed("t", containers).message == "container 'app' exited with code 2"


def test_a_missing_member_or_infra_container_means_not_running() -> None:
    seen = pod_observed("t", [infra(), member("app")])
    assert (seen.running, seen.message) == (False, "container 'sidecar' is gone")
    seen = pod_observed("t", [member("app"), member("sidecar")])
    assert (seen.handle, seen.running) == ("infra-id", False)  # still the pod's handle
    assert seen.message == "the pod's network container is gone"


def test_events_of_members_speak_for_the_pod() -> None:
    attributes = {LABEL_MEMBER: "sidecar", LABEL_POD_INFRA: "infra-id", "exitCode": "137"}
    assert notice_of(attributes, "sidecar-id") == (
        "infra-id",
        "container 'sidecar' exited with code 137",
    )
    attributes = {LABEL_POD_MEMBERS: "app", "exitCode": "0"}
    assert notice_of(attributes, "infra-id") == (
        "infra-id",
        "the pod's network container exited with code 0",
    )


@pytest.fixture
def runner(driver: FakeDriver) -> TaskRunner:
    return TaskRunner(driver, OWNER, ReportQueue(), gates=GATES)


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


async def test_a_pod_that_exits_is_reported_then_its_other_members_stopped(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    runner.apply([pod_assignment("p1")])
    await settled(runner)
    assert driver.launches["p1"].is_pod
    drain(runner)
    driver.die("p1", 1)
    runner.observe_exit(ExitNotice("p1", "c-p1", 1, message="container 'sidecar' exited"))
    await settled(runner)
    assert drain(runner) == [("p1", "exited")]
    assert runner.slots["p1"].message == "container 'sidecar' exited"
    assert driver.calls[-1] == ("stop", "c-p1")
    assert "c-p1" in driver.containers  # kept (logs) until the server asks for its removal


async def test_a_single_container_exit_stops_nothing(
    runner: TaskRunner, driver: FakeDriver
) -> None:
    single = pod_assignment("s1", containers=None, image="img")
    runner.apply([single])
    await settled(runner)
    runner.observe_exit(driver.die("s1", 1))
    await settled(runner)
    assert ("stop", "c-s1") not in driver.calls


async def test_logs_of_an_unknown_member_are_refused(runner: TaskRunner) -> None:
    runner.apply([pod_assignment("p1")])
    await settled(runner)
    with pytest.raises(UnknownContainer, match="its containers: app, sidecar"):
        runner.logs("p1", False, None, "nope")
    chunks = [c async for c in runner.logs("p1", False, None, "app")]
    assert chunks == [b"log of c-p1/app\n"]


async def test_the_process_driver_refuses_pods(tmp_path: Path) -> None:
    driver = ProcessDriver(tmp_path)
    with pytest.raises(DriverError, match="pods need the docker driver"):
        await driver.start(launch_of(pod_assignment(), OWNER, gates=GATES))


async def test_the_sim_driver_runs_a_pod_as_one_task() -> None:
    driver = SimDriver()
    handle = await driver.start(launch_of(pod_assignment(), OWNER, gates=GATES))
    assert [(o.task_id, o.handle, o.running) for o in await driver.list_tasks()] == [
        ("web.abc123", handle, True)
    ]


def test_the_pull_policy_reaches_the_driver_for_the_task_and_each_member() -> None:
    single = launch_of(make_assignment("t1", pull="always"), OWNER)
    assert single.pull == "always"
    assert launch_of(make_assignment("t2"), OWNER).pull == "if_not_present"
    containers = [
        {"name": "app", "image": "registry.example/app:1", "pull": "if_not_present"},
        {"name": "side", "image": "registry.example/side:1"},
    ]
    pod = launch_of(pod_assignment(containers=containers, pull="always"), OWNER, gates=GATES)
    assert [(m.name, m.pull) for m in pod.members] == [
        ("app", "if_not_present"),
        ("side", "always"),
    ]
    assert infra_config(pod, "127.0.0.2", "registry.example/pause:1")["Image"] == (
        "registry.example/pause:1"
    )


def test_a_member_killed_for_memory_says_so_and_which() -> None:
    containers = [
        infra(),
        member("app", False, exit_code=137, finished_at="2026-01-01T00:00:02Z", oom_killed=True),
        member("sidecar"),
    ]
    seen = pod_observed("t", containers)
    assert (seen.running, seen.exit_code, seen.oom_killed) == (False, 137, True)
    assert seen.message == (
        "container 'app' was killed for memory (OOM): it used more than its mem limit"
    )
    attributes = {LABEL_MEMBER: "app", LABEL_POD_INFRA: "infra-id", "exitCode": "137"}
    assert notice_of(attributes, "app-id", oom_killed=True) == ("infra-id", seen.message)
