"""Health-check probes (I/O): one HTTP request, TCP connection or command per call.

Called by the agent's check loop (``theseus.agent.checking``), which turns each ``Outcome``
into a verdict (``theseus.agent.health``). Probes run on the agent, next to the task, against
the node address and the host port the task's port is published on, exactly the way a peer
reaches the task (so a check also catches a broken port mapping). Every probe is bounded by
the check's ``timeout_seconds``; ``probe`` never raises for a failing task, it describes it:

* HTTP: ``GET http://<node address>:<host port><path>`` passes on 200-399; a 1xx answer
  is ignored (no outcome) with ``ignore_http1xx``, else it fails like any other status.
* TCP: a connection is accepted and not closed at once by the other side (Docker's
  userland proxy accepts on the host port whether or not the task listens, then closes).
* COMMAND: ``sh -c <command>`` exits 0 inside the task's container (``TaskDriver.exec``).

Tasks of the ``sim`` driver pass every check (benchmarks may roll out specs with checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from dataclasses import dataclass

import httpx

from theseus.agent.drivers.base import DriverError, TaskDriver
from theseus.agent.health import Outcome
from theseus.model.health import HealthCheck

OUTPUT_TAIL = 200  # characters of a failed command's output kept in its message
SIMULATED = "sim"  # the driver of hollow nodes (``theseus.agent.drivers.sim``)
TCP_SETTLE = 0.2  # seconds a TCP check's connection must stay open (or answer) to pass


@dataclass(frozen=True)
class ProbeTarget:
    """Where one task's probes go."""

    handle: str  # the driver's handle of the task's container (COMMAND checks)
    address: str  # the node address its ports are published on
    ports: dict[str, int]  # the spec's ports (name -> container port)
    host_ports: dict[str, int]  # the assignment's (name -> host port)


async def probe(
    check: HealthCheck,
    target: ProbeTarget,
    driver: TaskDriver,
    http: httpx.AsyncClient,
    container: str | None = None,
) -> Outcome | None:
    """Run one check once; None when its answer is to be ignored (an HTTP 1xx)."""
    if driver.name == SIMULATED:
        return Outcome(True)  # simulated tasks listen nowhere and pass every check
    timeout = check.timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            if check.protocol == "COMMAND":
                assert check.command is not None  # the model requires it
                return await _command(driver, target.handle, check.command, timeout, container)
            port = _host_port(check, target)
            if isinstance(port, Outcome):
                return port
            if check.protocol == "TCP":
                return await _tcp(target.address, port, timeout)
            return await _http(http, check, target.address, port)
    except TimeoutError:
        return Outcome(False, f"timed out after {timeout:g}s")


def _host_port(check: HealthCheck, target: ProbeTarget) -> int | Outcome:
    name = check.port(target.ports)
    if name is None or name not in target.host_ports:
        return Outcome(False, f"port {name or check.port_index}: not published on this node")
    return target.host_ports[name]


async def _http(
    http: httpx.AsyncClient, check: HealthCheck, address: str, port: int
) -> Outcome | None:
    try:
        answer = await http.get(f"http://{address}:{port}{check.path}")
    except httpx.HTTPError as exc:
        return Outcome(False, _describe_error(exc))
    status = answer.status_code
    if 200 <= status < 400:
        return Outcome(True)
    if status < 200 and check.ignore_http1xx:
        return None
    return Outcome(False, f"HTTP {status} from {check.path}")


async def _tcp(address: str, port: int, timeout: float) -> Outcome:
    try:
        reader, writer = await asyncio.open_connection(address, port)
    except OSError as exc:
        return Outcome(False, _describe_error(exc))
    try:
        # Docker's userland proxy accepts on the host port even when nothing listens in the
        # container, then closes at once: a connection closed before a moment passes fails.
        async with asyncio.timeout(min(TCP_SETTLE, timeout / 2)):
            if await reader.read(1) == b"":
                return Outcome(False, "connection closed at once (nothing listening?)")
    except TimeoutError:
        pass  # still open: a server that waits for its client to speak first
    except OSError as exc:
        return Outcome(False, _describe_error(exc))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return Outcome(True)


async def _command(
    driver: TaskDriver, handle: str, command: str, timeout: float, container: str | None
) -> Outcome:
    try:
        code, output = await driver.exec(handle, command, timeout, container)
    except DriverError as exc:
        return Outcome(False, f"could not run the command: {exc}")
    if code == 0:
        return Outcome(True)
    tail = output.strip()[-OUTPUT_TAIL:]
    return Outcome(False, f"exit {code}: {tail}" if tail else f"exit {code}")


def _describe_error(exc: BaseException) -> str:
    """A short reason: "connection refused" rather than a chained exception's repr."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or (
            isinstance(seen, OSError) and seen.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip()
    if "refused" in text.lower():
        return "connection refused"
    closed = not text or "without sending a response" in text
    if closed and isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
        return "connection closed without an answer"  # e.g. nothing listening behind a proxy
    return text or exc.__class__.__name__
