"""The node's discovery endpoint: registry reads proxied to the server (with a fake server
behind an ``httpx.MockTransport``), errors, the unix socket's life cycle and permissions, and
the discovery mount and address each driver gives its tasks."""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.kit.cluster import free_port
from tests.kit.fake_server import FakeServer
from tests.kit.wait import wait_until_async
from theseus.agent.agent import Agent
from theseus.agent.config import AgentConfig
from theseus.agent.discovery import bind_unix_socket, discovery_app
from theseus.agent.drivers.base import Launch, Owner
from theseus.agent.drivers.docker import DockerDriver
from theseus.agent.drivers.docker_config import container_config
from theseus.agent.drivers.process import ProcessDriver
from theseus.agent.drivers.sim import SimDriver
from theseus.agent.http import AgentHttpServer, create_app
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.api.agent_client import AsyncServerClient

SERVICE = {
    "service": "web",
    "index": 7,
    "groups": [
        {
            "labels": ["dev"],
            "config": {"image": "theseus/busybox:latest", "ports": {"api": 5000}},
            "containers": [],
        }
    ],
}


class Registry:
    """The server's registry routes, recording what the agent asked."""

    def __init__(self) -> None:
        self.asked: list[httpx.URL] = []
        self.answer: httpx.Response | None = None  # overrides the normal answer
        self.release = asyncio.Event()  # watches wait for it (or their own wait)
        self.watching = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url)
        if self.answer is not None:
            return self.answer
        if request.url.path == "/v1/registry/watch":
            self.watching += 1
            try:
                async with asyncio.timeout(float(request.url.params["wait"])):
                    await self.release.wait()
            except TimeoutError:
                pass
            finally:
                self.watching -= 1
            services = request.url.params["services"].split(",")
            return httpx.Response(200, json={"index": 8, "services": {s: [] for s in services}})
        if request.url.path.startswith("/v1/registry/"):
            return httpx.Response(200, json={**SERVICE, "service": request.url.path[13:]})
        return httpx.Response(404, json={"message": f"no route {request.url.path}"})


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="th-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
async def app_client(registry: Registry) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the agent's app, whose server client talks to ``registry``."""
    server = AsyncServerClient("http://server", transport=httpx.MockTransport(registry.handle))
    runner = TaskRunner(SimDriver(), Owner("n1", "127.0.0.2", "c-1"), ReportQueue())
    app = create_app(runner, "n1", server)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://agent"
    ) as client:
        yield client
    await server.aclose()


async def test_registry_service_is_the_servers_answer(
    app_client: httpx.AsyncClient, registry: Registry
) -> None:
    answer = await app_client.get("/v1/registry/web")
    assert answer.status_code == 200
    assert answer.json() == SERVICE
    assert [url.path for url in registry.asked] == ["/v1/registry/web"]


async def test_watch_passes_its_parameters_through_and_caps_the_wait(
    app_client: httpx.AsyncClient, registry: Registry
) -> None:
    registry.release.set()
    answer = await app_client.get(
        "/v1/registry/watch", params={"services": "web, db,", "index": "5", "wait": "600"}
    )
    assert answer.json() == {"index": 8, "services": {"web": [], "db": []}}
    params = registry.asked[-1].params
    assert (params["services"], params["index"], params["wait"]) == ("web,db", "5", "60.0")

    await app_client.get("/v1/registry/watch", params={"services": "web"})
    params = registry.asked[-1].params
    assert (params["index"], params["wait"]) == ("0", "30.0")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "services: give one or more service names, comma-separated"),
        ({"services": " , "}, "services: give one or more service names, comma-separated"),
        (
            {"index": "10172", "services": ""},
            "services: give one or more service names, comma-separated",
        ),
        ({"services": "web", "index": "x"}, "index must be an integer, not 'x'"),
        ({"services": "web", "wait": "soon"}, "wait must be a number of seconds, not 'soon'"),
        ({"services": "web", "wait": "nan"}, "wait must be a number of seconds, not 'nan'"),
    ],
)
async def test_watch_refuses_malformed_parameters(
    app_client: httpx.AsyncClient, registry: Registry, params: dict[str, str], message: str
) -> None:
    answer = await app_client.get("/v1/registry/watch", params=params)
    assert (answer.status_code, answer.json()) == (400, {"message": message})
    assert registry.asked == []


async def test_an_unreachable_server_is_a_503() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    server = AsyncServerClient("http://10.0.0.1:5000", transport=httpx.MockTransport(refuse))
    runner = TaskRunner(SimDriver(), Owner("n1", "127.0.0.2", "c-1"), ReportQueue())
    transport = httpx.ASGITransport(app=create_app(runner, "n1", server))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        for path in ("/v1/registry/web", "/v1/registry/watch?services=web"):
            answer = await client.get(path)
            assert answer.status_code == 503
            assert answer.json() == {
                "message": "cannot reach the Theseus server at http://10.0.0.1:5000 (ConnectError)"
            }


@pytest.mark.parametrize("status", [404, 409, 500, 503])
async def test_the_servers_errors_keep_their_status_and_message(
    app_client: httpx.AsyncClient, registry: Registry, status: int
) -> None:
    registry.answer = httpx.Response(status, json={"message": "not the leader yet"})
    for path in ("/v1/registry/web", "/v1/registry/watch?services=web"):
        answer = await app_client.get(path)
        assert (answer.status_code, answer.json()) == (status, {"message": "not the leader yet"})


async def test_an_answer_of_another_shape_is_a_502(
    app_client: httpx.AsyncClient, registry: Registry
) -> None:
    registry.answer = httpx.Response(200, json={"groups": "?"})
    answer = await app_client.get("/v1/registry/web")
    assert answer.status_code == 502
    assert answer.json()["message"].startswith("the server's answer was not understood")


# --- the unix socket ----------------------------------------------------------------------


def unix_client(path: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(path)), base_url="http://agent", timeout=5
    )


async def test_the_socket_serves_discovery_to_any_user_and_a_watch_blocks_nothing(
    short_dir: Path, registry: Registry
) -> None:
    server = AsyncServerClient("http://server", transport=httpx.MockTransport(registry.handle))
    path = short_dir / "discovery" / "agent.sock"
    http = AgentHttpServer(discovery_app(server), None, uds=path)
    await http.start()
    try:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
        async with unix_client(path) as client:
            watch = asyncio.create_task(
                client.get("/v1/registry/watch", params={"services": "web", "wait": "20"})
            )
            await wait_until_async(lambda: registry.watching == 1)
            # While the watch is held: another read is answered at once.
            assert (await client.get("/v1/registry/db")).json()["service"] == "db"
            assert not watch.done()
            registry.release.set()
            assert (await asyncio.wait_for(watch, 5)).json()["services"] == {"web": []}
    finally:
        await http.stop()
        await server.aclose()
    assert not path.exists()  # a stopped agent leaves no socket behind


def stale_socket(path: Path) -> None:
    """What an agent killed with SIGKILL leaves: a socket file nobody listens on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


async def test_a_stale_socket_is_replaced(short_dir: Path) -> None:
    path = short_dir / "discovery" / "agent.sock"
    stale_socket(path)
    sock = bind_unix_socket(path)
    try:
        sock.listen()
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(path))
    finally:
        sock.close()


async def test_a_live_socket_is_not_taken_over(short_dir: Path) -> None:
    path = short_dir / "agent.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(OSError, match="another process already serves"):
            bind_unix_socket(path)
    assert path.exists()


def test_a_too_long_path_is_a_clear_error(short_dir: Path) -> None:
    path = short_dir / ("x" * 120) / "agent.sock"
    with pytest.raises(OSError, match="longer than 107 bytes.*shorter --state-dir"):
        bind_unix_socket(path)


async def test_the_agent_serves_discovery_again_after_a_restart(
    short_dir: Path, registry: Registry
) -> None:
    fake = FakeServer()

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/registry/"):
            return await registry.handle(request)
        return await fake.handle(request)

    path = short_dir / "discovery" / "agent.sock"
    stale_socket(path)  # a previous run was killed
    runs: list[int] = []
    for run in (1, 2):
        runs.append(run)
        config = AgentConfig(
            server="http://fake",
            name="n1",
            address="127.0.0.1",
            port=free_port(),
            cpus=1,
            mem=512,
            driver="sim",
            state_dir=short_dir,
            handle_signals=False,
            transport=httpx.MockTransport(handle),
            poll_wait=5,
        )
        stop = asyncio.Event()
        agent = asyncio.create_task(Agent(config, SimDriver()).run(stop))
        try:
            await wait_until_async(lambda: fake.registrations == len(runs), 5)
            async with unix_client(path) as client:
                answer = await until_answered(client, "/v1/registry/web")
            assert answer.json() == SERVICE
        finally:
            stop.set()
            await asyncio.wait_for(agent, 5)


async def until_answered(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """The first answer to ``GET path`` once the endpoint accepts connections."""

    async def answer() -> httpx.Response | None:
        try:
            return await client.get(path)
        except httpx.TransportError:  # not listening yet
            return None

    return await wait_until_async(answer, 5, f"an answer to {path}", interval=0.01)


# --- what each driver gives its tasks -------------------------------------------------------


def launch(volumes: list[str]) -> Launch:
    return Launch("web.1", "img", {}, {}, [], 0.1, 32, volumes=volumes)


def test_docker_mounts_the_discovery_directory_read_only(tmp_path: Path) -> None:
    config = container_config(launch(["/data:/data"]), "127.0.0.2", tmp_path / "discovery")
    assert config["HostConfig"]["Binds"] == ["/data:/data", f"{tmp_path}/discovery:/run/theseus:ro"]
    assert container_config(launch([]), "127.0.0.2")["HostConfig"]["Binds"] == []


def test_docker_runs_an_init_as_pid_1_unless_the_spec_says_not() -> None:
    assert container_config(launch([]), "127.0.0.2")["HostConfig"]["Init"] is True
    own_pid_1 = Launch("web.1", "img", {}, {}, [], 0.1, 32, init=False)
    assert container_config(own_pid_1, "127.0.0.2")["HostConfig"]["Init"] is False


@pytest.mark.parametrize("volume", ["/mine:/run/theseus:ro", "/mine:/run/theseus/"])
def test_a_volume_of_the_spec_at_run_theseus_wins(tmp_path: Path, volume: str) -> None:
    config = container_config(launch([volume]), "127.0.0.2", tmp_path)
    assert config["HostConfig"]["Binds"] == [volume]


def test_each_driver_tells_its_tasks_where_the_socket_is(tmp_path: Path) -> None:
    assert DockerDriver(tmp_path / "discovery").discovery == "unix:///run/theseus/agent.sock"
    assert DockerDriver().discovery is None
    assert ProcessDriver(tmp_path).discovery == f"unix://{tmp_path}/discovery/agent.sock"
    assert SimDriver().discovery is None
