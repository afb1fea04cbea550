"""The agent's side of the spec gates: its flags, the declarations it refuses to start with,
the assignments it refuses to start, what the docker driver asks of the Engine for every
container, and the discovery socket that answers registry reads only."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer

from tests.kit.builders import make_assignment
from tests.kit.fake_driver import FakeDriver
from tests.kit.runner import settled
from theseus.agent.discovery import discovery_app
from theseus.agent.drivers.base import Launch, Owner, PortBinding
from theseus.agent.drivers.docker_config import container_config
from theseus.agent.drivers.docker_pods import infra_config, member_config
from theseus.agent.gates import GateError, checked_gates, refusal, resolved_volumes, state_within
from theseus.agent.http import AgentHttpServer
from theseus.agent.launch import launch_of
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.api.agent_client import AsyncServerClient
from theseus.cli.agent_cmd import parse_caps, parse_gates, parse_host_volume
from theseus.model.hostgates import HostVolume, NodeGates
from theseus.model.spec import GroupSpec

OWNER = Owner("n1", "127.0.0.2", "cluster-1")
GATES = NodeGates(
    host_volumes=[
        HostVolume(name="data", path="/srv/data"),
        HostVolume(name="logs", path="/var/log/app", read_only=True),
    ]
)


# --- flags and declarations -----------------------------------------------------------------


def test_host_volume_flags() -> None:
    assert parse_host_volume("data=/srv/data") == HostVolume(name="data", path="/srv/data")
    assert parse_host_volume("logs=/var/log:ro").read_only
    for bad in ("data", "data=relative", "data=/x:rx", "da ta=/x", "=/x"):
        with pytest.raises(typer.BadParameter, match="--host-volume"):
            parse_host_volume(bad)
    assert parse_caps(["cap_net_admin", "NET_ADMIN", "sys_time"]) == ["NET_ADMIN", "SYS_TIME"]
    with pytest.raises(typer.BadParameter, match="--allow-cap ALL: .*--allow-privileged"):
        parse_caps(["all"])
    with pytest.raises(typer.BadParameter, match="--allow-cap WIZARD"):
        parse_gates([], False, False, ["wizard"])


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="th-gates-")) / "agents" / "n1"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path.parent.parent, ignore_errors=True)


def test_a_declaration_is_resolved_and_checked(state_dir: Path) -> None:
    data = state_dir.parent.parent / "data"  # beside the cluster's state: not inside it
    outside = Path(tempfile.mkdtemp(prefix="th-vol-"))
    try:
        link = outside / "link"
        link.symlink_to(outside)
        gates = checked_gates(
            NodeGates(host_volumes=[HostVolume(name="d", path=str(link))]), state_dir
        )
        assert gates.host_volumes[0].path == str(outside.resolve())
        refusals = {
            "missing": (str(outside / "nope"), "not an existing directory"),
            "etc": ("/etc", "/etc is never mounted"),
            "sneaky": (str(_symlink(outside, "/etc")), "is never mounted"),
            "state": (str(state_dir), "is never mounted"),
            "cluster": (str(data.parent), "holds"),  # the cluster's state dir holds etcd's data
        }
        for name, (path, fragment) in refusals.items():
            declared = NodeGates(host_volumes=[HostVolume(name=name, path=path)])
            with pytest.raises(GateError, match=f"--host-volume {name}=.*{fragment}"):
                checked_gates(declared, state_dir)
        twice = NodeGates(host_volumes=[HostVolume(name="d", path=str(outside))] * 2)
        with pytest.raises(GateError, match="declared twice"):
            checked_gates(twice, state_dir)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def _symlink(directory: Path, target: str) -> Path:
    link = directory / f"to-{target.strip('/').replace('/', '-')}"
    os.symlink(target, link)
    return link


# --- assignments ----------------------------------------------------------------------------


def spec(**fields: object) -> GroupSpec:
    return GroupSpec.model_validate({"image": "i", **fields})


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"volumes": ["/:/host:ro"]}, "volumes.0: '/:/host:ro' mounts a host path"),
        ({"volumes": ["nope:/x"]}, "no host volume 'nope'"),
        ({"volumes": ["logs:/l:rw"]}, "'logs' is read-only"),
        ({"privileged": True}, "--allow-privileged"),
        ({"network_mode": "host"}, "--allow-host-namespaces"),
        ({"cap_add": ["SYS_ADMIN"]}, "--allow-cap SYS_ADMIN"),
    ],
)
def test_the_agent_refuses_what_it_does_not_allow(fields: dict[str, object], fragment: str) -> None:
    problem = refusal(spec(**fields), GATES)
    assert problem is not None and fragment in problem


def test_the_agent_starts_what_it_allows() -> None:
    allowed = spec(volumes=["data:/d", "logs:/l"], cap_add=["CHOWN"])
    assert refusal(allowed, GATES) is None
    assert resolved_volumes(allowed.volumes, GATES) == ["/srv/data:/d:rw", "/var/log/app:/l:ro"]
    assert resolved_volumes(["data:/d:ro"], GATES) == ["/srv/data:/d:ro"]


async def test_a_refused_assignment_fails_with_the_reason_and_starts_nothing() -> None:
    driver = FakeDriver()
    runner = TaskRunner(driver, OWNER, ReportQueue(), gates=GATES)
    runner.apply([make_assignment("bad", volumes=["/:/host:ro"]), make_assignment("ok")])
    await settled(runner)
    assert ("start", "bad") not in driver.calls and ("start", "ok") in driver.calls
    failed = [r for r in runner.reports._pending if r.task_id == "bad" and r.state == "failed"]
    assert [r.message for r in failed] == [
        "refused by node n1: volumes.0: '/:/host:ro' mounts a host path; this node mounts only "
        "the host volumes its agent declares (--host-volume NAME=/path), by name; nothing was "
        "started"
    ]


# --- what every container runs with -----------------------------------------------------------


def test_every_container_has_no_new_privileges_and_no_net_raw() -> None:
    plain = launch_of(make_assignment("t1"), OWNER)
    host = container_config(plain, "127.0.0.2")["HostConfig"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["CapDrop"] == ["NET_RAW"]
    assert not {"CapAdd", "Privileged", "PidMode", "NetworkMode"} & set(host)


def test_what_a_spec_asks_for_reaches_the_engine() -> None:
    allowed = make_assignment(
        "t1", privileged=True, network_mode="host", pid_mode="host", cap_add=["NET_RAW"]
    )
    config = container_config(launch_of(allowed, OWNER), "127.0.0.2")
    host = config["HostConfig"]
    assert (host["Privileged"], host["PidMode"], host["NetworkMode"]) == (True, "host", "host")
    assert (host["CapAdd"], host["CapDrop"]) == (["NET_RAW"], [])  # added back: not dropped
    assert host["PortBindings"] == {} and config["ExposedPorts"] == {}  # the host's network


def test_a_pods_containers_are_hardened_too() -> None:
    launch = Launch(
        "web.1",
        "img",
        {},
        {},
        [PortBinding("http", 80, 31080)],
        0.1,
        32,
        members=[],
        cap_add=["NET_ADMIN"],
        host_network=True,
    )
    infra = infra_config(launch, "127.0.0.2")["HostConfig"]
    assert infra["SecurityOpt"] == ["no-new-privileges"] and infra["CapDrop"] == ["NET_RAW"]
    assert infra["NetworkMode"] == "host" and "CapAdd" not in infra
    assignment = make_assignment(
        "t1", image=None, containers=[{"name": "a", "image": "i"}], cap_add=["NET_ADMIN"]
    )
    pod = launch_of(assignment, OWNER)
    member = member_config(pod, pod.members[0], "infra-id")["HostConfig"]
    assert member["SecurityOpt"] == ["no-new-privileges"] and member["CapDrop"] == ["NET_RAW"]
    assert member["CapAdd"] == ["NET_ADMIN"] and member["NetworkMode"] == "container:infra-id"


# --- the discovery socket -------------------------------------------------------------------


async def test_the_discovery_socket_answers_registry_reads_only() -> None:
    asked: list[str] = []

    async def server(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        config = {
            "image": "i",
            "environment": {"DB_PASSWORD": "hunter2"},
            "containers": [{"name": "a", "image": "i", "environment": {"TOKEN": "t"}}],
        }
        group = {"labels": [], "config": config, "containers": []}
        return httpx.Response(200, json={"service": "web", "index": 1, "groups": [group]})

    client = AsyncServerClient("http://server", transport=httpx.MockTransport(server))
    directory = Path(tempfile.mkdtemp(prefix="th-"))
    path = directory / "agent.sock"
    http = AgentHttpServer(discovery_app(client), None, uds=path)
    await http.start()
    try:
        transport = httpx.AsyncHTTPTransport(uds=str(path))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as socket:
            answer = await socket.get("/v1/registry/web")
            assert answer.status_code == 200
            # Ports, images and instances, but no group's variables (they may hold secrets).
            assert answer.json()["groups"][0]["config"] == {
                "image": "i",
                "containers": [{"name": "a", "image": "i"}],
            }
            for method, url in [
                ("GET", "/v1/tasks/web.1/logs"),
                ("GET", "/v1/health"),
                ("POST", "/v1/registry/web"),
                ("DELETE", "/v1/registry/web"),
                ("GET", "/deploy"),
            ]:
                answer = await socket.request(method, url)
                assert answer.status_code in (404, 405), (method, url)
                assert "answers only GET /v1/registry" in answer.json()["message"]
        assert asked == ["/v1/registry/web"]
        assert http.port == 0  # no TCP port at all
    finally:
        await http.stop()
        await client.aclose()
        shutil.rmtree(directory, ignore_errors=True)


def test_etcds_data_and_theseus_state_are_found_wherever_they_live(state_dir: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="th-found-"))
    try:
        etcd = root / "custom" / "etcd" / "cluster-of-3" / "etcd-1"
        (etcd / "member" / "wal").mkdir(parents=True)
        (root / "up").mkdir()
        (root / "up" / "cluster.json").write_text("{}")
        (root / "data").mkdir()
        assert state_within(root / "custom") == etcd  # holds it, three levels down
        assert state_within(etcd / "member") == etcd  # lies in it
        assert state_within(root / "up") == root / "up"
        assert state_within(root / "data") is None
        declared = NodeGates(host_volumes=[HostVolume(name="c", path=str(root / "custom"))])
        with pytest.raises(GateError, match=r"--host-volume c=.*holds .*etcd-1, etcd's data"):
            checked_gates(declared, state_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)
