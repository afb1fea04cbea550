"""The health-check loop of one running task: probes every check on its own interval.

Owned by the task runner (``theseus.agent.runner``), which starts one ``HealthLoop`` per
running task whose spec has checks (the group's ``health_checks`` and each pod member's) and
cancels it when the task stops running; a task without checks costs nothing. Each check runs
at once, then every ``interval_seconds`` (measured from the previous start, so a slow probe
does not stretch the interval; one slower than the interval is followed by the next at
once). Outcomes go to the pure ``theseus.agent.health``; the loop calls back only when the
task's verdict changes (``on_verdict``: the runner reports it) and once when the task must be
killed (``on_kill``), after which it ends by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from theseus.agent.drivers.base import TaskDriver
from theseus.agent.health import CheckState, TaskHealth, Verdict
from theseus.agent.probes import ProbeTarget, probe
from theseus.model.health import HealthCheck
from theseus.model.spec import GroupSpec

log = logging.getLogger(__name__)

Check = tuple[str | None, HealthCheck]  # (pod member or None, check)


def checks_of(spec: GroupSpec) -> list[Check]:
    """Every check of a task: the group's, then each pod member's."""
    if not spec.health_checks and not spec.containers:
        return []  # the common case, asked for every task of every assignment list
    found: list[Check] = [(None, check) for check in spec.health_checks]
    for member in spec.containers or []:
        found.extend((member.name, check) for check in member.health_checks)
    return found


def http_client() -> httpx.AsyncClient:
    """The client for HTTP checks. Without keep-alive: each probe opens a new connection, as
    a new peer would. One per agent: a client costs tens of milliseconds to create."""
    return httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_keepalive_connections=0))


class _Killed(Exception):
    """Ends every check of the task once one asked for the kill."""


class HealthLoop:
    def __init__(
        self,
        checks: list[Check],
        target: ProbeTarget,
        driver: TaskDriver,
        http: httpx.AsyncClient,
        started: float,
        on_verdict: Callable[[Verdict], None],
        on_kill: Callable[[str], None],
        lenient: bool = True,
        passed_once: bool = False,
    ) -> None:
        """``http``: the client of HTTP checks (``http_client()``, shared by every task);
        ``started``: when the task started, on ``time.monotonic``'s clock (the start of the
        grace period); ``lenient``: see ``theseus.agent.health`` (False when adopted);
        ``passed_once``: an adopted task the server knows was healthy (no grace left)."""
        self.target = target
        self.driver = driver
        self.http = http
        self.health = TaskHealth(
            [CheckState(check, started, member, lenient, passed_once) for member, check in checks]
        )
        self.on_verdict = on_verdict
        self.on_kill = on_kill
        self.verdict = Verdict()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for state in self.health.states:
                    group.create_task(self._check(state))
        except* _Killed:
            pass

    async def _check(self, state: CheckState) -> None:
        interval = state.check.interval_seconds
        due = time.monotonic()
        while True:
            try:
                outcome = await probe(
                    state.check, self.target, self.driver, self.http, state.container
                )
            except Exception:  # the agent's own trouble (a bug, the backend away): no verdict
                log.exception("health check of %s could not run", self.target.handle)
                outcome = None
            if outcome is not None:
                state.record(time.monotonic(), outcome)
                self._publish()
                reason = self.health.kill_reason()
                if reason is not None:
                    self.on_kill(reason)
                    raise _Killed
            # A probe that outlasted the interval (its timeout may be longer) is followed by
            # the next one at once, not by a burst catching up on the ticks it missed.
            due = max(due + interval, time.monotonic())
            await asyncio.sleep(due - time.monotonic())

    def _publish(self) -> None:
        verdict = self.health.verdict()
        if verdict != self.verdict:
            self.verdict = verdict
            self.on_verdict(verdict)
