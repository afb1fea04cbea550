"""The node agent: one per machine. Registers its node, heartbeats, long-polls its
assignments, runs them through a driver and reports every state change to the server.

Entry point: ``run_agent(AgentConfig)`` (the ``theseus agent`` command and tests call it). The
agent talks to the server only over HTTP (``AsyncServerClient``). It never stops tasks because
the server is away, nor when it shuts down itself: containers carry labels naming their task
and a restarted agent re-adopts them ("When things fail" in README.md). Concurrent loops,
each bounded:

* registration (again whenever the server answers 404: node unknown or lease expired);
* heartbeat every ``heartbeat_interval`` seconds, as the server last said (in its answer to
  the registration or to an assignments poll: the interval grows with the cluster);
* assignments long-poll, resumable by index, fed to the task runner (level-triggered);
* resync with the driver every ``resync_interval`` seconds (the safety net for missed events);
* fencing: once no server has answered a heartbeat for a task's group setting
  (``stop_after_server_loss_seconds``), the task is stopped here for good, since the servers
  have replaced it (``theseus.agent.fencing``: what counts as an answer, and why);
* the report sender; the HTTP endpoint (health, logs, and the registry reads proxied to the
  server for containers) on the TCP address, and the registry reads alone on the node's
  discovery socket ``<state dir>/discovery/agent.sock`` (``theseus.agent.discovery``), which
  every container can reach.

What the node allows its tasks (``AgentConfig.gates``: host volumes, privileges) is checked
once at start (``theseus.agent.gates.checked_gates``: an agent that declares a protected path
does not start), declared to the server at registration (placement reads it) and checked
again by the runner before every task start.

Unreachable server: every call retries with capped exponential backoff (0.2 s doubling to 5 s);
tasks keep running, until the fence of their group (above).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx

from theseus.agent import fencing
from theseus.agent.discovery import discovery_app
from theseus.agent.drivers import DEFAULT_PULL_TIMEOUT, ImageSettings, make_driver
from theseus.agent.drivers.base import DISCOVERY_SOCKET, Owner, TaskDriver, discovery_dir
from theseus.agent.gates import checked_gates
from theseus.agent.http import AgentHttpServer, create_app
from theseus.agent.identity import NAME as IDENTITY_NAME
from theseus.agent.identity import Identity, JoinError, join
from theseus.agent.identity import pki_dir as identity_pki
from theseus.agent.kill_budget import KillBudget
from theseus.agent.metrics import AgentMetrics
from theseus.agent.registry_logins import CACHE_SECONDS as LOGIN_CACHE_SECONDS
from theseus.agent.registry_logins import RegistryLogins
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.api.client import DEFAULT_SERVER, ApiError, AsyncServerClient, ServerUnreachable
from theseus.api.failover import parse_addresses
from theseus.api.schemas import NodeRegistration, RegistrationAnswer, ReportBatch
from theseus.images.tags import BUSYBOX_IMAGE
from theseus.model.hostgates import NodeGates

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
# Containers' registry watches each hold a connection to the server for up to a minute: give
# them a pool of their own, so that they can never hold up the agent's heartbeats or reports.
DISCOVERY_LIMITS = httpx.Limits(max_connections=500, max_keepalive_connections=20)


def machine_mem_mib() -> float:
    """Total memory from /proc/meminfo, in MiB (1024 when unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 1024.0


def default_state_dir(node: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "theseus" / "agents" / node


@dataclass
class AgentConfig:
    server: str = DEFAULT_SERVER
    name: str = field(default_factory=socket.gethostname)
    address: str = "127.0.0.1"  # advertised, published on, and the HTTP endpoint's address
    port: int = 5051
    cpus: float = field(default_factory=lambda: float(os.cpu_count() or 1))
    mem: float = field(default_factory=machine_mem_mib)
    port_range: tuple[int, int] = (31000, 32000)
    attributes: dict[str, str] = field(default_factory=dict)
    driver: str | None = None  # None: docker if the daemon answers, else process
    state_dir: Path | None = None  # None: default_state_dir(name)
    resync_interval: float = 7.0
    health_kills_per_minute: float = 10.0  # at once, then this many a minute (KillBudget)
    gates: NodeGates = field(default_factory=NodeGates)  # host volumes, privileges allowed
    poll_wait: float = 30.0
    serve_http: bool = True  # hollow agents of a benchmark may go without
    handle_signals: bool = True  # SIGTERM/SIGINT end run_agent (tests cancel it instead)
    transport: httpx.AsyncBaseTransport | None = None  # tests only
    # A secure cluster (https servers): the join token for the first start; later starts use
    # the certificate it got (``theseus.agent.identity``).
    join_token: str | None = None
    # Images (``theseus.agent.drivers.docker_pull``): the bound of one pull, whether images
    # without a registry host may be pulled (from Docker Hub), the pods' network image.
    pull_timeout: float = DEFAULT_PULL_TIMEOUT
    pull_unqualified: bool = False
    pod_infra_image: str = BUSYBOX_IMAGE
    registry_login_cache: float = LOGIN_CACHE_SECONDS  # 0: ask the server at every pull


class NodeUnknown(Exception):
    """The server answered 404 for our node: register again."""


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        driver: TaskDriver,
        identity: Identity | None = None,
        logins: RegistryLogins | None = None,
    ) -> None:
        self.config = config
        self.driver = driver
        self.identity = identity
        tls = identity.client if identity is not None else None
        self.client = AsyncServerClient(config.server, transport=config.transport, tls=tls)
        if logins is not None:  # the driver's pulls ask for them through this agent's client
            logins.bind(self.client)
        self.discovery_client = AsyncServerClient(
            config.server,
            transport=config.transport
            or httpx.AsyncHTTPTransport(limits=DISCOVERY_LIMITS, verify=tls or True),
        )
        state_dir = config.state_dir or default_state_dir(config.name)
        self.discovery_socket = discovery_dir(state_dir) / DISCOVERY_SOCKET
        self.owner = Owner(node=config.name, address=config.address)
        self.reports = ReportQueue()
        budget = KillBudget(config.health_kills_per_minute, config.health_kills_per_minute)
        self.runner = TaskRunner(driver, self.owner, self.reports, budget, config.gates)
        self.answer: RegistrationAnswer | None = None
        self.heartbeat_interval = BACKOFF_FIRST  # until the server says
        self._registered = asyncio.Event()
        self._unregistered = asyncio.Event()
        self._unregistered.set()
        # Monotonic time at which the last heartbeat (or registration) that a server answered
        # was sent: the node's lease was renewed no earlier. None before the first one.
        self.last_contact: float | None = None
        self._fence_wake = asyncio.Event()  # the tasks or their settings changed: decide again
        # GET /metrics (theseus.agent.metrics); more collectors: self.metrics.registry.register
        self.metrics = AgentMetrics(config.name)
        self.metrics.contact_by(lambda: self.last_contact)

    # --- registration -------------------------------------------------------------------

    def registration(self) -> NodeRegistration:
        c = self.config
        return NodeRegistration(
            name=c.name,
            address=c.address,
            agent_port=c.port,
            cpus=c.cpus,
            mem=c.mem,
            port_range=c.port_range,
            attributes=c.attributes,
            driver=self.driver.name,
            gates=c.gates,
        )

    async def register(self) -> RegistrationAnswer:
        answer = await _retrying(
            "register", self._contact(lambda: self.client.register(self.registration()))
        )
        if self.owner.cluster_id and answer.cluster_id != self.owner.cluster_id:
            log.warning(
                "the server's cluster changed (%s → %s): tasks of the old cluster are not in "
                "the new one's assignments and will be removed",
                self.owner.cluster_id,
                answer.cluster_id,
            )
        self.owner.cluster_id = answer.cluster_id
        self.answer = answer
        self.heartbeat_interval = answer.heartbeat_interval
        self._unregistered.clear()
        self._registered.set()
        log.info("registered node %s in cluster %s", self.config.name, answer.cluster_id)
        return answer

    def _contact(self, call: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``call``, which notes the time it was sent as the last contact when it succeeds
        (only a 2xx answer returns: ``fencing`` says why nothing else counts)."""

        async def timed() -> T:
            sent = time.monotonic()
            answer = await call()
            last, self.last_contact = self.last_contact, max(sent, self.last_contact or sent)
            if last is not None and sent - last > 3 * max(self.heartbeat_interval, 1.0):
                log.warning("a server answered again, after %.1fs without one", sent - last)
            return answer

        return timed

    def _node_unknown(self) -> None:
        self._registered.clear()
        self._unregistered.set()

    async def _registration_loop(self) -> None:
        while True:
            await self._unregistered.wait()
            try:
                await self.register()
            except ApiError as exc:  # refused (4xx): keep trying, the operator sees the log
                log.error("the server refused to register node %s: %s", self.config.name, exc)
                await asyncio.sleep(BACKOFF_MAX)

    async def _call(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        raise_refusals: bool = False,
        max_delay: float = BACKOFF_MAX,
    ) -> T:
        """``call`` once registered, retried while the server is away or failing; a 404
        (node unknown, lease expired) registers again. With ``raise_refusals``, other 4xx
        answers (the request itself is wrong: retrying cannot help) are raised."""
        delay = BACKOFF_FIRST
        while True:
            await self._registered.wait()
            try:
                return await call()
            except ApiError as exc:
                if exc.status == 404:
                    log.warning("the server does not know node %s: registering", self.config.name)
                    self._node_unknown()
                    continue
                if raise_refusals and 400 <= exc.status < 500 and exc.status not in (408, 429):
                    raise
                log.warning("%s: the server answered %s: %s", what, exc.status, exc.message)
            except ServerUnreachable as exc:
                log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)

    # --- loops ----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            # Retried no slower than the heartbeat itself: a backoff longer than the server's
            # liveness timeout would get a node declared lost while the server is only busy.
            answer = await self._call(
                "heartbeat",
                self._contact(
                    lambda: self.metrics.counted_heartbeat(
                        lambda: self.client.heartbeat(self.config.name)
                    )
                ),
                max_delay=self.heartbeat_interval,
            )
            if answer.heartbeat_interval is not None:
                self.heartbeat_interval = answer.heartbeat_interval
            await asyncio.sleep(self.heartbeat_interval)

    async def _assignment_loop(self) -> None:
        index = 0
        while True:
            poll = partial(self.client.assignments, self.config.name, index, self.config.poll_wait)
            answer = await self._call("assignments", poll)
            index = answer.index
            if answer.heartbeat_interval is not None:
                # The server only advises a slower pace once the node's lease allows it.
                self.heartbeat_interval = answer.heartbeat_interval
            self.runner.apply(answer.tasks)
            self._fence_wake.set()

    async def _fence_loop(self) -> None:
        while True:
            self._fence_wake.clear()
            wait = self._fence_due()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # None: until the tasks change
                    await self._fence_wake.wait()

    def _fence_due(self) -> float | None:
        """Fence the tasks that are due; seconds until the next one may be."""
        runner, assigned = self.runner, self.runner.assigned
        if self.last_contact is None or assigned is None:
            return None
        now, interval = time.monotonic(), self.heartbeat_interval
        local = {task_id: slot.local() for task_id, slot in runner.slots.items()}
        delays = fencing.candidates(assigned, local)
        due = fencing.due(now, self.last_contact, delays, interval)
        if due:
            silence = now - self.last_contact
            log.warning(
                "no server reached for %.1fs: stopping %d tasks (fenced): %s",
                silence,
                len(due),
                ", ".join(due),
            )
            runner.fence(due, fencing.reason(silence))
            for task_id in due:
                del delays[task_id]
        return fencing.next_due(now, self.last_contact, delays, interval)

    async def _resync_loop(self) -> None:
        while True:
            # Every ``resync_interval``, or at once when the driver shows an unknown container.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.resync_interval):
                    await self.runner.resync_soon.wait()
            self.runner.resync_soon.clear()
            try:
                await self.runner.resync()
            except Exception:  # the backend is away: keep everything, try next time
                log.exception("resync with the %s driver failed", self.driver.name)

    async def _send(self, batch: ReportBatch) -> None:
        try:
            await self._call("reports", lambda: self.client.report(self.config.name, batch), True)
        except ApiError as exc:  # a malformed batch would block every later report: drop it
            log.error("the server refused %d reports (%s); dropped", len(batch.reports), exc)

    # --- life cycle -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        http: AgentHttpServer | None = None
        discovery: AgentHttpServer | None = None
        loops: list[asyncio.Task[None]] = []
        try:
            await self.register()
            await self.driver.open(self.owner, self.runner.observe_exit)
            await self.runner.resync()  # adopt what a previous run left (decided once assigned)
            if self.config.serve_http:
                secure = self.identity is not None
                app = create_app(
                    self.runner,
                    self.config.name,
                    self.discovery_client,
                    secure,
                    metrics=self.metrics.registry,
                )
                http = AgentHttpServer(
                    app,
                    self.config.address,
                    self.config.port,
                    tls=self.identity.server if self.identity is not None else None,
                )
                await http.start()
                # Containers reach this one, in every mode: discovery reads only (no logs, no
                # writes), so it needs no credentials (a container has none).
                discovery = AgentHttpServer(
                    discovery_app(self.discovery_client), None, uds=self.discovery_socket
                )
                await discovery.start()
            for name, loop in (
                ("registration", self._registration_loop()),
                ("heartbeat", self._heartbeat_loop()),
                ("assignments", self._assignment_loop()),
                ("resync", self._resync_loop()),
                ("fencing", self._fence_loop()),
                ("reports", self.reports.run(self._send)),
            ):
                loops.append(asyncio.create_task(loop, name=f"agent-{name}"))
            if self.identity is not None:
                renewal = self.identity.renew_forever(self.client, self.config.address)
                loops.append(asyncio.create_task(renewal, name="agent-certificate"))
            log.info(
                "agent %s ready (driver %s, %s:%s, discovery %s)",
                self.config.name,
                self.driver.name,
                self.config.address,
                self.config.port,
                self.discovery_socket if http is not None else "off",
            )
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            for task in done:
                if task is not stopped:
                    task.result()  # a loop that ended is a bug: surface it
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.runner.close()
            await self._flush_reports()
            for server in (http, discovery):
                if server is not None:
                    await server.stop()
            await self.driver.close()
            await self.client.aclose()
            await self.discovery_client.aclose()
            log.info("agent %s stopped; its tasks keep running", self.config.name)

    async def _flush_reports(self) -> None:
        """Give queued reports one short chance to reach the server before exiting."""
        if not len(self.reports):
            return
        sender = asyncio.create_task(self.reports.run(self._send_once))
        await self.reports.drained(2.0)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)

    async def _send_once(self, batch: ReportBatch) -> None:
        await self.client.report(self.config.name, batch)


async def _retrying(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Retry while the server is away or failing (5xx); a 4xx is a configuration error."""
    delay = BACKOFF_FIRST
    while True:
        try:
            return await call()
        except ServerUnreachable as exc:
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
        except ApiError as exc:
            if exc.status < 500:
                raise
            log.warning("%s: the server answered %s: %s", what, exc.status, exc.message)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def run_agent(config: AgentConfig) -> None:
    """Run an agent until SIGTERM/SIGINT (``config.handle_signals``) or cancellation.
    Never stops its tasks on the way out."""
    state_dir = config.state_dir or default_state_dir(config.name)
    state_dir.mkdir(parents=True, exist_ok=True)
    # A protected or missing host volume ends the agent here, before it registers.
    config = replace(config, gates=checked_gates(config.gates, state_dir))
    identity = await establish_identity(config, state_dir)
    logins = RegistryLogins(config.name, config.registry_login_cache)
    images = ImageSettings(
        config.pull_timeout, config.pull_unqualified, config.pod_infra_image, logins
    )
    driver = await make_driver(config.driver, state_dir, images)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if config.handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await Agent(config, driver, identity, logins).run(stop)
    finally:
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


async def establish_identity(config: AgentConfig, state_dir: Path) -> Identity | None:
    """The agent's certificate in a secure cluster (its servers are https): the one it has,
    or one got by joining with ``config.join_token``; None in a development cluster."""
    servers = parse_addresses(config.server)
    if not any(server.startswith("https://") for server in servers):
        return None
    files = identity_pki(state_dir)
    if not files.has(IDENTITY_NAME):
        if not config.join_token:
            raise JoinError(
                f"node {config.name} has no certificate in {files.root} yet: start it once with "
                "--token (a join token from `theseus join-token`)"
            )
        await join(servers, config.join_token, config.name, config.address, files)
    return Identity(files, config.name)
