"""The docker driver against the real Docker Engine: the locally built busybox image serves
HTTP on a published port, logs are readable, a killed container is noticed from the event
stream, a graceful stop exits 0 quickly, a missing image fails clearly (never pulled), a
restarted agent adopts its running container instead of restarting it, and a container reaches
its node's discovery endpoint at /run/theseus/agent.sock, also after the agent restarted.

Every container carries a ``theseus.cluster`` value unique to the test and is force-removed
after it, also when the test fails. Skipped (with the reason) only if no Docker Engine answers.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiodocker
import httpx
import pytest

from tests.kit.fake_server import FakeServer
from tests.kit.wait import wait_until_async
from theseus.agent.agent import Agent
from theseus.agent.config import AgentConfig
from theseus.agent.drivers.base import (
    DriverError,
    ExitNotice,
    Launch,
    MemberLaunch,
    Owner,
    PortBinding,
    discovery_dir,
)
from theseus.agent.drivers.docker import DockerDriver, docker_answers
from theseus.agent.drivers.pull_rules import not_pulled_message
from theseus.api.schemas import Assignment
from theseus.images.build import build_busybox_image
from theseus.images.containers import remove_cluster_containers
from theseus.model.hostgates import HostVolume, NodeGates
from theseus.model.spec import GroupSpec

pytestmark = pytest.mark.integration

IMAGE = "theseus/busybox:latest"
ADDRESS = "127.0.0.2"


def free_host_port(address: str = ADDRESS) -> int:
    for port in range(31000 + uuid.uuid4().int % 900, 32000):
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 31000-32000")


@pytest.fixture(scope="module")
def image() -> str:
    if not asyncio.run(docker_answers()):
        pytest.skip(
            "no Docker Engine answers on this machine (DOCKER_HOST or /var/run/docker.sock)"
        )
    asyncio.run(build_busybox_image(IMAGE))
    return IMAGE


@pytest.fixture
def owner() -> Owner:
    suffix = uuid.uuid4().hex[:10]
    return Owner(node=f"itest-{suffix}", address=ADDRESS, cluster_id=f"itest-{suffix}")


@pytest.fixture
async def cleanup(owner: Owner) -> AsyncIterator[None]:
    yield
    await remove_cluster_containers(owner.cluster_id)


@pytest.fixture
async def driver(
    image: str, owner: Owner, cleanup: None
) -> AsyncIterator[tuple[DockerDriver, asyncio.Queue[ExitNotice]]]:
    exits: asyncio.Queue[ExitNotice] = asyncio.Queue()
    driver = DockerDriver()
    await driver.open(owner, exits.put_nowait)
    try:
        yield driver, exits
    finally:
        await driver.close()


def launch(owner: Owner, image: str, host_port: int, **overrides: Any) -> Launch:
    task_id = f"web.{uuid.uuid4().hex[:8]}"
    fields: dict[str, Any] = {
        "task_id": task_id,
        "image": image,
        "environment": {"CONTAINER_NAME": task_id, "SERVICE_NAME": "web", "APP_NAME": "Ingestor"},
        "labels": {
            "theseus.task": task_id,
            "theseus.node": owner.node,
            "theseus.cluster": owner.cluster_id,
        },
        "ports": [PortBinding("api", 5000, host_port)],
        "cpus": 0.1,
        "mem": 32,
    }
    fields.update(overrides)
    return Launch(**fields)


async def page(url: str) -> str | None:
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


async def test_serves_http_logs_and_stops_gracefully(
    driver: tuple[DockerDriver, asyncio.Queue[ExitNotice]], owner: Owner, image: str
) -> None:
    docker_driver, _ = driver
    port = free_host_port()
    task = launch(owner, image, port)
    handle = await docker_driver.start(task)

    body = await wait_until_async(
        lambda: page(f"http://{ADDRESS}:{port}/"), 15, "the container serving", interval=0.02
    )
    assert f"CONTAINER_NAME={task.task_id}" in body
    assert "APP_NAME=Ingestor" in body

    async def logged() -> str:
        return b"".join([c async for c in docker_driver.logs(handle, False, None)]).decode()

    lines = await wait_until_async(logged, 5, "the start line in the logs", interval=0.02)
    assert f"started {task.task_id} APP_NAME=Ingestor" in lines

    began = time.monotonic()
    assert await docker_driver.stop(handle, grace=10) == 0
    assert time.monotonic() - began < 3, "SIGTERM is trapped: no wait for the SIGKILL"
    await docker_driver.remove(handle)
    assert await docker_driver.list_tasks() == []


async def test_a_killed_container_is_noticed_from_the_event_stream(
    driver: tuple[DockerDriver, asyncio.Queue[ExitNotice]], owner: Owner, image: str
) -> None:
    docker_driver, exits = driver
    task = launch(owner, image, free_host_port())
    handle = await docker_driver.start(task)
    await wait_until_async(
        lambda: page(f"http://{ADDRESS}:{task.ports[0].host_port}/"), 15, "serving", interval=0.02
    )

    async with aiodocker.Docker() as docker:
        killed = time.monotonic()
        await docker.containers.container(handle).kill()
    started = await asyncio.wait_for(exits.get(), 5)  # its start was seen first
    assert started == ExitNotice(task.task_id, handle, None, started=True)
    notice = await asyncio.wait_for(exits.get(), 5)
    noticed = time.monotonic() - killed
    assert notice == ExitNotice(task.task_id, handle, 137)
    print(f"exit noticed {noticed * 1000:.1f} ms after the kill call")
    assert noticed < 1.0, f"the exit took {noticed:.3f}s to be noticed"

    (seen,) = await docker_driver.list_tasks()
    assert (seen.task_id, seen.running, seen.exit_code) == (task.task_id, False, 137)


async def test_a_missing_image_fails_clearly_and_is_never_pulled(
    driver: tuple[DockerDriver, asyncio.Queue[ExitNotice]], owner: Owner, image: str
) -> None:
    docker_driver, _ = driver
    missing = f"theseus/absent-{uuid.uuid4().hex[:8]}:never"
    with pytest.raises(DriverError) as failure:
        await docker_driver.start(launch(owner, missing, free_host_port()))
    assert str(failure.value) == not_pulled_message(missing, owner.node)
    assert "names no registry host, so it is not pulled" in str(failure.value)
    assert await docker_driver.list_tasks() == []


def assignment(
    task_id: str, host_port: int, desired: str = "run", volumes: list[str] | None = None
) -> Assignment:
    spec = GroupSpec.model_validate(
        {
            "image": IMAGE,
            "ports": {"api": 5000},
            "cpus": 0.1,
            "mem": 32,
            "environment": {"APP_NAME": "Adopted"},
            "task_kill_grace_period_seconds": 5,
            "volumes": volumes or [],
        }
    )
    return Assignment.model_validate(
        {
            "task_id": task_id,
            "service": "web",
            "labels": [],
            "group": "web/[]",
            "version": spec.version(),
            "desired": desired,
            "spec": spec,
            "host_ports": {"api": host_port},
        }
    )


async def test_a_restarted_agent_adopts_its_running_container(
    image: str, owner: Owner, cleanup: None, tmp_path: Path
) -> None:
    server = FakeServer()
    server.cluster_id = owner.cluster_id
    port = free_host_port()
    task_id = f"web.{uuid.uuid4().hex[:8]}"
    await server.set_tasks([assignment(task_id, port)])

    def config() -> AgentConfig:
        return AgentConfig(
            server="http://fake",
            name=owner.node,
            address=ADDRESS,
            cpus=1,
            mem=512,
            driver="docker",
            state_dir=tmp_path,
            serve_http=False,
            handle_signals=False,
            transport=httpx.MockTransport(server.handle),
            poll_wait=5,
        )

    async def run_until(check: Callable[[], Any], what: str) -> None:
        stop = asyncio.Event()
        agent = asyncio.create_task(Agent(config(), DockerDriver()).run(stop))
        try:
            await wait_until_async(check, 20, what, interval=0.02)
        finally:
            stop.set()
            await asyncio.wait_for(agent, 10)

    await run_until(lambda: server.states(task_id) == ["starting", "running"], "running")
    first_id = server.reports[-1].container_id
    assert first_id
    await wait_until_async(
        lambda: page(f"http://{ADDRESS}:{port}/"), 15, "serving after the agent left", interval=0.02
    )

    # A second agent for the node: keeps the container (same id), reports it running again.
    await run_until(lambda: len(server.states(task_id)) == 3, "re-reported")
    assert server.states(task_id) == ["starting", "running", "running"]
    assert server.reports[-1].container_id == first_id

    # The task leaves the node while no agent runs; the next agent stops and removes it.
    await server.set_tasks([])

    async def gone() -> bool:
        async with aiodocker.Docker() as docker:
            return not await docker.containers.list(
                all=True, filters={"label": [f"theseus.cluster={owner.cluster_id}"]}
            )

    await run_until(gone, "the unassigned container removed")


# --- the discovery endpoint, from inside a container -----------------------------------------

REGISTRY_WEB = {"service": "web", "index": 3, "groups": []}
# The host's python3, read-only, lets the busybox container speak HTTP over a unix socket
# (busybox's wget and nc cannot).
USE_PYTHON = Path("/usr/bin/python3").exists()
# The host's Python, mounted by name: the agent declares each directory (--host-volume).
HOST_DIRS = {"usr": "/usr", **{d[1:]: d for d in ("/lib", "/lib64") if Path(d).exists()}}
HOST_PYTHON = [f"{name}:{path}:ro" for name, path in HOST_DIRS.items()]
HOST_GATES = NodeGates(
    host_volumes=[HostVolume(name=n, path=p, read_only=True) for n, p in HOST_DIRS.items()]
)
GET_OVER_THE_SOCKET = (
    "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/theseus/agent.sock'); "
    "s.sendall(b'GET /v1/registry/web HTTP/1.0\\r\\nHost: agent\\r\\n\\r\\n'); "
    "print(b''.join(iter(lambda: s.recv(4096), b'')).decode())"
)


@pytest.fixture
def short_state_dir() -> Iterator[Path]:
    """Unix socket paths are limited to 107 bytes: pytest's tmp_path may be too long."""
    path = Path(tempfile.mkdtemp(prefix="th-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def in_container(container_id: str, *cmd: str, user: str = "") -> tuple[int, str]:
    """Run ``cmd`` in the container; its exit code and output (stdout and stderr)."""
    async with aiodocker.Docker() as docker:
        execution = await docker.containers.container(container_id).exec(list(cmd), user=user)
        output = b""
        async with asyncio.timeout(20), execution.start(detach=False) as stream:
            while (message := await stream.read_out()) is not None:
                output += message.data
        code = (await execution.inspect())["ExitCode"]
    return int(code), output.decode()


async def test_a_container_reaches_the_discovery_endpoint_across_agent_restarts(
    image: str, owner: Owner, cleanup: None, short_state_dir: Path
) -> None:
    server = FakeServer()
    server.cluster_id = owner.cluster_id
    asked: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/registry/web":
            asked.append(request.url.path)
            return httpx.Response(200, json=REGISTRY_WEB)
        return await server.handle(request)

    port = free_host_port()
    task_id = f"web.{uuid.uuid4().hex[:8]}"
    volumes = HOST_PYTHON if USE_PYTHON else []
    await server.set_tasks([assignment(task_id, port, volumes=volumes)])
    sock = discovery_dir(short_state_dir) / "agent.sock"

    def config() -> AgentConfig:
        return AgentConfig(
            server="http://fake",
            name=owner.node,
            address=ADDRESS,
            port=free_host_port(),
            cpus=1,
            mem=512,
            driver="docker",
            state_dir=short_state_dir,
            handle_signals=False,
            transport=httpx.MockTransport(handle),
            poll_wait=5,
            gates=HOST_GATES,
        )

    def reported(times: int) -> bool:
        return len(server.states(task_id)) == times

    async def get_from_inside(container_id: str) -> str:
        code, output = await in_container(
            container_id, "/usr/bin/python3", "-c", GET_OVER_THE_SOCKET, user="65534:65534"
        )
        assert code == 0, output
        return output

    for run in (1, 2):
        stop = asyncio.Event()
        agent = asyncio.create_task(
            Agent(config(), DockerDriver(discovery_dir(short_state_dir))).run(stop)
        )
        try:
            # starting, running, and running again after the restart
            await wait_until_async(
                partial(reported, run + 1), 20, f"reported by agent run {run}", interval=0.02
            )
            container_id = server.reports[-1].container_id
            assert container_id

            # From the host: the socket answers with the server's registry JSON.
            assert stat.S_IMODE(sock.stat().st_mode) == 0o666
            async with httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://agent"
            ) as client:
                assert (await client.get("/v1/registry/web")).json() == REGISTRY_WEB

            # From inside: the socket is there, and the environment says where it is.
            code, output = await in_container(container_id, "test", "-S", "/run/theseus/agent.sock")
            assert code == 0, output
            code, output = await in_container(container_id, "env")
            env = dict(line.partition("=")[::2] for line in output.splitlines())
            me = f"WEB_{task_id.replace('.', '_').upper()}"
            assert env["THESEUS_DISCOVERY"] == "unix:///run/theseus/agent.sock"
            assert env["MAESTRO_ENVIRONMENT_NAME"] == "default"
            assert (env["DOCKER_IMAGE"], env["DOCKER_TAG"]) == ("theseus/busybox", "latest")
            assert env[f"{me}_HOST"] == ADDRESS
            assert env[f"{me}_API_PORT"] == str(port)
            assert env[f"{me}_API_INTERNAL_PORT"] == "5000"

            # An HTTP request from inside the container, as an unprivileged user.
            if USE_PYTHON:
                answer = await get_from_inside(container_id)
                assert answer.startswith("HTTP/1.1 200"), answer
                assert '"service":"web"' in answer
        finally:
            stop.set()
            await asyncio.wait_for(agent, 10)
        # The container outlives the agent; the socket does not.
        assert not sock.exists()

    # Same container both runs: the restarted agent's new socket is visible inside it.
    assert server.states(task_id) == ["starting", "running", "running"]
    assert len(asked) == (4 if USE_PYTHON else 2)


async def test_what_a_node_allows_reaches_the_engine(
    driver: tuple[DockerDriver, asyncio.Queue[ExitNotice]], owner: Owner, image: str
) -> None:
    """Privileges the agent allowed (the runner checked them) start as asked: the Engine
    accepts them together with the hardening, for a single container and a pod. (Not
    ``privileged``: a Docker Engine that itself runs without every capability, as in CI's
    container, cannot start one at all; ``container_config``'s unit test covers the key.)"""
    docker_driver, _ = driver
    allowed: dict[str, Any] = {
        "host_network": True,
        "host_pid": True,
        "cap_add": ["NET_ADMIN", "NET_RAW"],
        "command": "while true; do sleep 0.2; done",
    }
    single = launch(owner, image, free_host_port(), **allowed)
    pod_id = f"pod.{uuid.uuid4().hex[:8]}"
    member = MemberLaunch("app", image, {}, 0.1, 32, command="while true; do sleep 0.2; done")
    pod = launch(owner, image, free_host_port(), task_id=pod_id, members=[member], **allowed)
    pod.labels["theseus.task"] = pod_id
    async with aiodocker.Docker() as docker:
        for task in (single, pod):
            handle = await docker_driver.start(task)
            listed = await docker.containers.list(
                all=True, filters={"label": [f"theseus.task={task.task_id}"]}
            )
            assert len(listed) == (2 if task.is_pod else 1)
            for container in listed:
                info = await container.show()
                host = info["HostConfig"]
                assert info["State"]["Running"], info["Name"]
                assert "no-new-privileges" in host["SecurityOpt"], info["Name"]
                if host["NetworkMode"].startswith("container:"):  # a pod's member
                    assert host["NetworkMode"] == f"container:{handle}"
                else:
                    assert host["NetworkMode"] == "host"
                if "theseus.pod.member" in (info["Config"]["Labels"] or {}) or not task.is_pod:
                    assert host["PidMode"] == "host"
                    assert sorted(host["CapAdd"]) == ["NET_ADMIN", "NET_RAW"]
                    assert not host["CapDrop"]  # NET_RAW was added back
            await docker_driver.stop(handle, 1)
            await docker_driver.remove(handle)
