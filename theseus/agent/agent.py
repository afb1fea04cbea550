"""The node agent: one per machine. Registers its node, heartbeats, long-polls its
assignments, runs them through a driver and reports every state change to the server.

Entry point: ``run_agent(AgentConfig)`` (the ``theseus agent`` command and tests call it). The
agent talks to the server only over HTTP (``AsyncServerClient``). It never stops tasks because
the server is away, nor when it shuts down itself: containers carry labels naming their task
and a restarted agent re-adopts them ("When things fail" in README.md). Concurrent loops,
each bounded:

* registration (again whenever the server answers 404: node unknown or lease expired);
* heartbeat every ``heartbeat_interval`` seconds, as the server last said (in its answer to
  the registration or to an assignments poll: the interval grows with the cluster); each
  carries what its tasks used at the last stats pass (``theseus.agent.stats``);
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
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx

from theseus.agent import fencing
from theseus.agent.backoff import BACKOFF_FIRST, BACKOFF_MAX, retrying
from theseus.agent.config import AgentConfig, default_state_dir
from theseus.agent.discovery import discovery_app
from theseus.agent.drivers import ImageSettings, make_driver
from theseus.agent.drivers.base import DISCOVERY_SOCKET, Owner, TaskDriver, discovery_dir
from theseus.agent.gates import checked_gates
from theseus.agent.http import AgentHttpServer, Metrics, create_app
from theseus.agent.identity import NAME as IDENTITY_NAME
from theseus.agent.identity import Identity, JoinError, join
from theseus.agent.identity import pki_dir as identity_pki
from theseus.agent.kill_budget import KillBudget
from theseus.agent.longpoll import unless_moved
from theseus.agent.metrics import AgentMetrics
from theseus.agent.registry_logins import RegistryLogins
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.agent.stats.collector import StatsCollector
from theseus.agent.stats.prometheus import TaskMetrics
from theseus.api.agent_client import AsyncServerClient
from theseus.api.client import ApiError, ServerUnreachable
from theseus.api.failover import parse_addresses
from theseus.api.schemas import NodeRegistration, RegistrationAnswer, ReportBatch

log = logging.getLogger(__name__)

CLUSTER_ID_FILE = "cluster-id"  # in the state directory

T = TypeVar("T")
HEARTBEAT_JITTER = 0.2  # a heartbeat goes up to this fraction of its interval early
# Containers' registry watches each hold a connection to the server for up to a minute: give
# them a pool of their own, so that they can never hold up the agent's heartbeats or reports.
DISCOVERY_LIMITS = httpx.Limits(max_connections=500, max_keepalive_connections=20)


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
        # The cluster this node last registered in: a restarted agent adopts that cluster's
        # containers before any server answers, so that it can fence them during a partition.
        self.cluster_id_file = state_dir / CLUSTER_ID_FILE
        self.started = time.monotonic()
        self.owner = Owner(node=config.name, address=config.address)
        self.reports = ReportQueue()
        budget = KillBudget(config.health_kills_per_minute, config.health_kills_per_minute)
        self.runner = TaskRunner(driver, self.owner, self.reports, budget, config.gates)
        self.stats = StatsCollector.of(self.runner, config.stats_interval, config.stats_retention)
        self.answer: RegistrationAnswer | None = None
        self.heartbeat_interval = BACKOFF_FIRST  # until the server says
        self._registered = asyncio.Event()
        self._unregistered = asyncio.Event()
        self._unregistered.set()
        # Monotonic time at which the last heartbeat (or registration) that a server answered
        # was sent: the node's lease was renewed no earlier. None before the first one.
        self.last_contact: float | None = None
        self._server_moved = asyncio.Event()  # the heartbeats went to another server
        self._fence_wake = asyncio.Event()  # the tasks or their settings changed: decide again
        # GET /metrics: the agent's own (theseus.agent.metrics) and its tasks' (cAdvisor's
        # names, theseus.agent.stats.prometheus), in a registry of its own.
        self.metrics = AgentMetrics(config.name)
        self.metrics.contact_by(lambda: self.last_contact)
        self.metrics.registry.register(TaskMetrics(self.stats.store, config.name))

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
        # The tasks of a registration are learned afresh, and the cluster's etcd may be a
        # new or restored one whose revisions would never reach the indexes kept so far.
        self.client.peer_indexes.forget()
        answer = await retrying(
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
        self._remember_cluster(answer.cluster_id)
        self.answer = answer
        self.heartbeat_interval = answer.heartbeat_interval
        self._unregistered.clear()
        self._registered.set()
        log.info("registered node %s in cluster %s", self.config.name, answer.cluster_id)
        return answer

    def _remember_cluster(self, cluster_id: str) -> None:
        try:
            if self._remembered_cluster() != cluster_id:
                self.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
                self.cluster_id_file.write_text(cluster_id + "\n")
        except OSError as exc:  # only a restart during a partition would miss it
            log.warning("cannot keep the cluster id in %s: %s", self.cluster_id_file, exc)

    def _remembered_cluster(self) -> str:
        try:
            return self.cluster_id_file.read_text().strip()
        except OSError:
            return ""

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
            server = self.client.servers.current
            answer = await self._call(
                "heartbeat",
                self._contact(
                    lambda: self.metrics.counted_heartbeat(
                        lambda: self.client.heartbeat(self.config.name, self.stats.usage())
                    )
                ),
                max_delay=self.heartbeat_interval,
            )
            if self.client.servers.current != server:
                self._server_moved.set()  # a long-poll on the old one is asked again
            if answer.heartbeat_interval is not None:
                self.heartbeat_interval = answer.heartbeat_interval
            await asyncio.sleep(self._until_next_heartbeat())

    def _until_next_heartbeat(self) -> float:
        """Seconds until the next heartbeat is due: one interval after the last answered
        one was sent, not after its answer came. The node's lease runs from when it was sent
        (or later), so a slow answer (a busy server, or this agent's own loop starved of CPU)
        must not push the next heartbeat, and the silence the fence counts, further out."""
        sent = self.last_contact if self.last_contact is not None else time.monotonic()
        # Up to a fifth early, at random (Nomad staggers its heartbeats too): agents that
        # registered together, or heard a new pace together, would otherwise heartbeat
        # together for ever, 5,000 of them within seconds.
        interval = self.heartbeat_interval * (1.0 - random.uniform(0.0, HEARTBEAT_JITTER))
        return max(0.0, sent + interval - time.monotonic())

    async def _assignment_loop(self) -> None:
        index = 0
        wait = self.config.poll_wait
        while True:
            poll = partial(self.client.assignments, self.config.name, index, wait)
            asked, current = self.client.servers.current, lambda: self.client.servers.current
            polled = unless_moved(
                self._call("assignments", poll), self._server_moved, current, asked
            )
            answer = await polled
            if answer is None:
                continue  # the heartbeats moved to another server: ask that one
            index = answer.index
            # A big cluster's server asks for longer polls (``server.heartbeats``).
            wait = answer.poll_wait if answer.poll_wait is not None else self.config.poll_wait
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
        local = {task_id: slot.local() for task_id, slot in runner.slots.items()}
        if assigned is not None:
            delays = fencing.candidates(assigned, local)
        else:  # restarted, no list yet: what it adopted, by the containers' labels
            labels = {task_id: slot.fence_after for task_id, slot in runner.slots.items()}
            delays = fencing.adopted_candidates(local, labels)
        # Never reached a server since this agent started: the silence counts from then.
        last_contact = self.last_contact if self.last_contact is not None else self.started
        now, interval = time.monotonic(), self.heartbeat_interval
        due = fencing.due(now, last_contact, delays, interval)
        if due:
            silence = now - last_contact
            log.warning(
                "no server reached for %.1fs: stopping %d tasks (fenced): %s",
                silence,
                len(due),
                ", ".join(due),
            )
            runner.fence(due, fencing.reason(silence))
            for task_id in due:
                del delays[task_id]
        return fencing.next_due(now, last_contact, delays, interval)

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
            remembered = self._remembered_cluster()
            if remembered:
                # Adopt what the previous run left and fence it if no server answers for its
                # groups' settings: registration may wait for the network as long as it lasts.
                self.owner.cluster_id = remembered
                await self.driver.open(self.owner, self.runner.observe_exit)
                await self.runner.resync()
                loops.append(asyncio.create_task(self._fence_loop(), name="agent-fencing"))
                await self.register()
                if self.owner.cluster_id != remembered:  # another cluster: not ours to fence
                    self.runner.forget_idle()
            else:
                await self.register()
                await self.driver.open(self.owner, self.runner.observe_exit)
            await self.runner.resync()  # adopt what a previous run left (decided once assigned)
            if self.config.serve_http:
                secure = self.identity is not None
                metrics = Metrics(self.stats.store, self.stats.interval, self.metrics.registry)
                app = create_app(
                    self.runner, self.config.name, self.discovery_client, secure, metrics
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
                ("reports", self.reports.run(self._send)),
                ("stats", self.stats.run()),
            ):
                loops.append(asyncio.create_task(loop, name=f"agent-{name}"))
            if not remembered:
                loops.append(asyncio.create_task(self._fence_loop(), name="agent-fencing"))
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
    driver = await make_driver(config.driver, state_dir, images, config.log_limits)
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
