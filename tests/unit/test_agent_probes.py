"""Health-check probes against real local servers on 127.0.0.1: HTTP, TCP, COMMAND, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kit.cluster import free_port
from theseus.agent.drivers.base import DriverError, Launch
from theseus.agent.drivers.process import ProcessDriver
from theseus.agent.drivers.sim import SimDriver
from theseus.agent.health import Outcome
from theseus.agent.probes import ProbeTarget, probe
from theseus.model.health import HealthCheck

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    """A server on 127.0.0.1 for the block; its port. Unfinished handlers are cancelled and
    their connections closed at the end."""
    handlers: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def answering(status: int, delay: float = 0.0) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        handle.paths.append(request.split(b" ")[1].decode())  # type: ignore[attr-defined]
        await asyncio.sleep(delay)
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()

    handle.paths = []  # type: ignore[attr-defined]
    return handle


def target(port: int) -> ProbeTarget:
    return ProbeTarget("h1", "127.0.0.1", {"http": 8080, "admin": 9090}, {"http": port})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=None) as client:
        yield client


class NetDriver(SimDriver):
    name = "net"  # not simulated: HTTP and TCP checks really probe


async def run(check: HealthCheck, port: int, http: httpx.AsyncClient) -> Outcome | None:
    return await probe(check, target(port), NetDriver(), http)


async def test_simulated_tasks_pass_every_check(http: httpx.AsyncClient) -> None:
    for check in (
        HealthCheck(),
        HealthCheck(protocol="TCP"),
        HealthCheck(protocol="COMMAND", command="false"),
    ):
        assert await probe(check, target(free_port()), SimDriver(), http) == Outcome(True)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Outcome(True)),
        (204, Outcome(True)),
        (302, Outcome(True)),
        (399, Outcome(True)),
        (404, Outcome(False, "HTTP 404 from /health")),
        (500, Outcome(False, "HTTP 500 from /health")),
    ],
)
async def test_http_passes_on_200_to_399(
    status: int, expected: Outcome, http: httpx.AsyncClient
) -> None:
    handler = answering(status)
    async with serve(handler) as port:
        outcome = await run(HealthCheck(path="/health"), port, http)
    assert outcome == expected
    assert handler.paths == ["/health"]  # type: ignore[attr-defined]


async def test_http_1xx_fails_unless_ignored() -> None:
    # A real HTTP stack treats 1xx as interim and waits for more: a mock answers 199 as final.
    transport = httpx.MockTransport(lambda request: httpx.Response(199))
    async with httpx.AsyncClient(transport=transport) as http:
        assert await run(HealthCheck(), 1, http) == Outcome(False, "HTTP 199 from /")
        assert await run(HealthCheck(ignore_http1xx=True), 1, http) is None


async def test_http_connection_refused(http: httpx.AsyncClient) -> None:
    outcome = await run(HealthCheck(), free_port(), http)
    assert outcome == Outcome(False, "connection refused")


async def test_http_timeout(http: httpx.AsyncClient) -> None:
    async with serve(answering(200, delay=5.0)) as port:
        check = HealthCheck(timeout_seconds=0.2, interval_seconds=1)
        started = asyncio.get_running_loop().time()
        outcome = await run(check, port, http)
        elapsed = asyncio.get_running_loop().time() - started
    assert outcome == Outcome(False, "timed out after 0.2s")
    assert elapsed < 1.0


async def test_a_port_not_published_fails_clearly(http: httpx.AsyncClient) -> None:
    outcome = await run(HealthCheck(port_name="admin"), 1, http)
    assert outcome == Outcome(False, "port admin: not published on this node")


async def test_tcp_connects_or_is_refused(http: httpx.AsyncClient) -> None:
    accepted = asyncio.Event()

    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # waits for the client to speak, as many servers do

    async with serve(quiet) as port:
        assert await run(HealthCheck(protocol="TCP"), port, http) == Outcome(True)
        await asyncio.wait_for(accepted.wait(), 2.0)
    outcome = await run(HealthCheck(protocol="TCP"), free_port(), http)
    assert outcome == Outcome(False, "connection refused")


async def test_tcp_passes_when_the_server_speaks_first(http: httpx.AsyncClient) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-test\r\n")
        await writer.drain()
        await reader.read()

    async with serve(banner) as port:
        assert await run(HealthCheck(protocol="TCP"), port, http) == Outcome(True)


async def test_tcp_fails_on_a_connection_closed_at_once(http: httpx.AsyncClient) -> None:
    """What Docker's userland proxy does when nothing listens in the container."""

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None  # serve() closes the connection

    async with serve(close_at_once) as port:
        outcome = await run(HealthCheck(protocol="TCP"), port, http)
    assert outcome == Outcome(False, "connection closed at once (nothing listening?)")


async def test_http_on_a_connection_closed_at_once(http: httpx.AsyncClient) -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with serve(close_at_once) as port:
        outcome = await run(HealthCheck(), port, http)
    assert outcome == Outcome(False, "connection closed without an answer")


async def test_tcp_timeout_on_an_unanswered_connect(http: httpx.AsyncClient) -> None:
    # A listening socket whose backlog is full never completes another handshake.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            check = HealthCheck(protocol="TCP", timeout_seconds=0.3, interval_seconds=1)
            outcome = await run(check, port, http)
        finally:
            for filler in fillers:
                filler.close()
    assert outcome == Outcome(False, "timed out after 0.3s")


class ExecDriver(NetDriver):
    def __init__(self, answer: tuple[int, str] | Exception, delay: float = 0.0) -> None:
        super().__init__()
        self.answer, self.delay = answer, delay
        self.calls: list[tuple[str, str, float, str | None]] = []

    async def exec(
        self, handle: str, command: str, timeout: float, container: str | None = None
    ) -> tuple[int, str]:
        self.calls.append((handle, command, timeout, container))
        await asyncio.sleep(self.delay)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def command(driver: ExecDriver, http: httpx.AsyncClient, **fields: Any) -> Outcome | None:
    check = HealthCheck(protocol="COMMAND", command="test -f /tmp/ok", **fields)
    return await probe(check, target(1), driver, http, container="web")


async def test_command_passes_on_exit_0_and_reports_the_output_tail(
    http: httpx.AsyncClient,
) -> None:
    ok = ExecDriver((0, "fine"))
    assert await command(ok, http, timeout_seconds=2) == Outcome(True)
    assert ok.calls == [("h1", "test -f /tmp/ok", 2.0, "web")]
    long = "x" * 500 + " the end\n"
    outcome = await command(ExecDriver((1, long)), http)
    assert outcome is not None and outcome.message is not None
    assert outcome.message.startswith("exit 1: x") and outcome.message.endswith("the end")
    assert len(outcome.message) == len("exit 1: ") + 200
    assert await command(ExecDriver((2, "")), http) == Outcome(False, "exit 2")


async def test_command_that_cannot_run_or_hangs_fails(http: httpx.AsyncClient) -> None:
    outcome = await command(ExecDriver(DriverError("no such container")), http)
    assert outcome == Outcome(False, "could not run the command: no such container")
    slow = ExecDriver((0, ""), delay=5.0)
    outcome = await command(slow, http, timeout_seconds=0.1, interval_seconds=1)
    assert outcome == Outcome(False, "timed out after 0.1s")


async def test_process_driver_exec_runs_in_the_task_environment(tmp_path: Path) -> None:
    driver = ProcessDriver(tmp_path)
    await driver.open(None, lambda notice: None)  # type: ignore[arg-type]
    launch = Launch("t1", "img", {"GREETING": "hello"}, {}, [], 0.1, 16, command="sleep 30")
    handle = await driver.start(launch)
    try:
        assert await driver.exec(handle, 'echo "$GREETING"; exit 3', 5.0) == (3, "hello\n")
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await driver.exec(handle, "sleep 30", 0.2)
        assert asyncio.get_running_loop().time() - started < 2.0
        with pytest.raises(DriverError):
            await driver.exec("pid-0-nope", "true", 1.0)
    finally:
        await driver.remove(handle)
        await driver.close()
