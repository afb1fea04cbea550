"""The task runner: keeps this node's tasks where the server wants them, through a driver.

Owned by the agent (``theseus.agent.agent``), which feeds it each new assignment list
(``apply``), driver exit notices (``observe_exit``), periodic resyncs (``resync``) and the
tasks to stop when no server answers (``fence``, ``theseus.agent.fencing``); the HTTP
endpoint reads logs through it. Every decision comes from the pure ``decide.next_step``; this
module only performs steps (and adds one of its own: ``END_POD``, which stops the other members
of a pod once one member's exit has been reported). Each task has at most one worker coroutine
at a time, created when the task has something to do and gone when it has not, so operations
on one task never interleave while many tasks start concurrently, and an idle node costs no
coroutines.

A running task whose spec has health checks also has a check loop (``theseus.agent.checking``)
while it runs and is meant to run; the runner reports each change of its verdict, and when the
loop asks for a kill, the task's worker performs it (``Step.KILL``) like any other step, within
the node's budget of health kills (``theseus.agent.kill_budget``). What a start hands the driver
is built by ``theseus.agent.launch``, once the spec has passed the node's gates
(``theseus.agent.gates.refusal``: host volumes, privileges).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator
from functools import partial

import httpx

from theseus.agent.checking import Check, HealthLoop, checks_of, http_client
from theseus.agent.decide import PHASE_REPORT, DesiredState, Local, Phase, Step, next_step
from theseus.agent.drivers.base import (
    DriverError,
    ExitNotice,
    Owner,
    TaskDriver,
)
from theseus.agent.gates import refusal
from theseus.agent.health import Verdict
from theseus.agent.kill_budget import KillBudget
from theseus.agent.launch import launch_of
from theseus.agent.probes import ProbeTarget
from theseus.agent.reports import ReportQueue
from theseus.agent.slots import Slot, UnknownContainer, UnknownTask, container_problem
from theseus.api.schemas import Assignment, TaskReport
from theseus.model.hostgates import NodeGates

log = logging.getLogger(__name__)

RETRY_FIRST = 0.5
RETRY_MAX = 5.0
_WITH_MESSAGE = (Phase.FAILED, Phase.EXITED, Phase.STARTING)
PROGRESS_EVERY = 2.0  # seconds between two reports of one task's pull progress, at least


class TaskRunner:
    def __init__(
        self,
        driver: TaskDriver,
        owner: Owner,
        reports: ReportQueue,
        kill_budget: KillBudget | None = None,
        gates: NodeGates | None = None,
    ) -> None:
        self.driver = driver
        # What this node allows its tasks (host volumes, privileges): every start is checked
        # against it, whatever the server sent.
        self.gates = gates or NodeGates()
        self.owner = owner
        self.reports = reports
        self.kill_budget = kill_budget or KillBudget()  # health kills this node may make
        self.slots: dict[str, Slot] = {}
        self.assigned: dict[str, Assignment] | None = None  # None until the first list
        self._epoch = itertools.count(1)
        self._last_epoch = 0
        self._checkers: set[asyncio.Task[None]] = set()  # running and cancelled-but-not-done
        self._deferred: set[asyncio.TimerHandle] = set()  # check loops to start again later
        self._http: httpx.AsyncClient | None = None  # HTTP checks' client, once one is needed
        # Set when the driver shows a container we do not know: the agent resyncs at once.
        self.resync_soon = asyncio.Event()

    # --- inputs ---------------------------------------------------------------------------

    def apply(self, assignments: list[Assignment]) -> None:
        """A new full assignment list from the server."""
        self.assigned = {a.task_id: a for a in assignments}
        for assignment in assignments:
            slot = self.slots.get(assignment.task_id)
            if slot is not None:
                slot.grace = assignment.spec.task_kill_grace_period_seconds
        self.kick_all()

    def observe_exit(self, notice: ExitNotice) -> None:
        """A driver saw a task's container die or start (a hint; resync is the safety net)."""
        slot = self.slots.get(notice.task_id)
        if notice.started:
            if slot is None or (slot.busy is None and slot.handle != notice.handle):
                self.resync_soon.set()  # not started by us: adopt it (and decide) now
            return
        if slot is None:
            return
        if slot.busy is Step.START:
            slot.early_exit = notice
        elif slot.busy is None and slot.phase is Phase.RUNNING and slot.handle == notice.handle:
            self._exited(slot, notice.exit_code, notice.message, notice.oom_killed)
            self.kick(slot.task_id)

    def forget_idle(self) -> None:
        """Forget every task with no step in flight (its container left as it is): what was
        adopted for a cluster this node turned out not to be in."""
        self.slots = {task_id: s for task_id, s in self.slots.items() if s.worker is not None}

    def fence(self, task_ids: list[str], reason: str) -> None:
        """No server reached for these tasks' setting: stop them for good (``Step.FENCE``)."""
        for task_id in task_ids:
            slot = self.slots.setdefault(task_id, Slot(task_id))
            slot.fenced = slot.fenced or reason
            self.kick(task_id)

    async def resync(self) -> None:
        """Compare the driver's containers with local knowledge; adopt unknown ones."""
        before = self._last_epoch
        observed = {o.task_id: o for o in await self.driver.list_tasks()}
        for task_id, seen in observed.items():
            slot = self.slots.get(task_id)
            if slot is None:  # adoption: a container of ours we did not know (agent restart)
                slot = self.slots[task_id] = Slot(task_id)
                if self.assigned is not None and task_id in self.assigned:
                    slot.grace = self.assigned[task_id].spec.task_kill_grace_period_seconds
                slot.handle = seen.handle
                slot.phase = Phase.RUNNING if seen.running else Phase.EXITED
                slot.exit_code, slot.oom_killed = seen.exit_code, seen.oom_killed
                slot.adopted_at = seen.started_at if seen.started_at is not None else time.time()
                slot.message = None if seen.running else seen.message
                slot.end_pod = not seen.running
                slot.fence_after = seen.fence_after
                log.info("adopted %s (%s)", task_id, slot.phase)
            elif slot.busy is not None or slot.changed > before:
                continue  # changed while we listed: the listing may be stale for it
            elif slot.handle != seen.handle:
                slot.handle = seen.handle  # e.g. a leftover of a failed start: remove it later
            elif slot.phase is Phase.RUNNING and not seen.running:
                self._exited(slot, seen.exit_code, seen.message, seen.oom_killed)
        for slot in list(self.slots.values()):
            if slot.task_id in observed or slot.handle is None:
                continue
            if slot.busy is not None or slot.changed > before:
                continue
            if slot.phase is Phase.RUNNING:
                self._exited(slot, None, "the container disappeared")
            slot.handle = None
        self.kick_all()

    # --- decisions --------------------------------------------------------------------------

    def desired(self, task_id: str) -> DesiredState:
        if self.assigned is None:
            # Before the server's first list only a fence acts (``kick``), on a container
            # adopted from the previous run: it ran because it was meant to.
            return "run"
        assignment = self.assigned.get(task_id)
        return assignment.desired if assignment is not None else None

    def kick_all(self) -> None:
        if self.assigned is None:
            return
        for task_id in self.assigned.keys() | self.slots.keys():
            self.kick(task_id)

    def kick(self, task_id: str) -> None:
        """Make sure a worker runs for ``task_id`` if it has something to do."""
        slot = self.slots.get(task_id)
        if self.assigned is None and (slot is None or slot.fenced is None):
            # Nothing is decided before the server's list arrives (adoption waits), but a
            # fence: an agent restarted while it reaches no server stops what it adopted.
            return
        if slot is not None:
            self._sync_health(slot)
        if slot is not None and slot.worker is not None:
            return  # the running worker asks next_step again after its current step
        if slot is None and next_step(self.desired(task_id), Local(Phase.NEW)) is None:
            return
        if slot is not None and self._step(slot) is None:
            return
        if slot is None:
            slot = self.slots[task_id] = Slot(task_id)
        slot.worker = asyncio.create_task(self._work(slot), name=f"task-{task_id}")

    async def _work(self, slot: Slot) -> None:
        delay = RETRY_FIRST
        try:
            while self.slots.get(slot.task_id) is slot:
                step = self._step(slot)
                if step is None:
                    return
                slot.busy = step
                try:
                    self._sync_health(slot)  # e.g. no more probes of a container being stopped
                    await self._perform(step, slot)
                    delay = RETRY_FIRST
                except Exception:  # the backend hiccupped: decide again after a pause
                    log.exception(
                        "%s of task %s failed; retrying in %.1fs", step, slot.task_id, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                finally:
                    slot.busy = None
                    slot.changed = self._last_epoch = next(self._epoch)
                    self._sync_health(slot)  # e.g. checks begin once it runs
        finally:
            slot.worker = None

    def _step(self, slot: Slot) -> Step | None:
        step = next_step(self.desired(slot.task_id), slot.local())
        if step is None and slot.end_pod:
            if slot.phase is Phase.EXITED and slot.handle is not None and self._is_pod(slot):
                return Step.END_POD
            slot.end_pod = False  # not a pod, or nothing left to stop
        return step

    # --- steps ------------------------------------------------------------------------------

    async def _perform(self, step: Step, slot: Slot) -> None:
        if step is Step.START:
            await self._start(slot)
        elif step is Step.STOP:
            if slot.handle is not None:
                slot.exit_code = await self.driver.stop(slot.handle, slot.grace)
            slot.phase = Phase.STOPPED
            self._report(slot)
            await self._remove(slot)
        elif step is Step.REMOVE:
            await self._remove(slot)
        elif step is Step.KILL:
            assert slot.handle is not None
            code = await self.driver.stop(slot.handle, slot.grace)
            reason, slot.kill_reason = slot.kill_reason, None
            self._exited(slot, code, reason)
        elif step is Step.FENCE:  # stopped as a drain would; never started if it was not yet
            code = None
            if slot.handle is not None and slot.phase is Phase.RUNNING:
                code = await self.driver.stop(slot.handle, slot.grace)
            self._exited(slot, code, slot.fenced)
        elif step is Step.REPORT:
            self._report(slot)
        elif step is Step.DISCARD:
            assert slot.handle is not None
            if slot.phase is Phase.RUNNING:
                await self.driver.stop(slot.handle, slot.grace)
            await self._remove(slot)
            del self.slots[slot.task_id]
        elif step is Step.FORGET:
            del self.slots[slot.task_id]
        elif step is Step.END_POD:
            # A pod ends whole: one member's exit stops the others. The containers stay, for
            # their logs, until the server asks for the task's removal.
            assert slot.handle is not None
            await self.driver.stop(slot.handle, slot.grace)
            slot.end_pod = False

    def _is_pod(self, slot: Slot) -> bool:
        assignment = (self.assigned or {}).get(slot.task_id)
        return assignment is not None and assignment.spec.containers is not None

    async def _start(self, slot: Slot) -> None:
        assert self.assigned is not None
        assignment = self.assigned[slot.task_id]
        slot.grace = assignment.spec.task_kill_grace_period_seconds
        slot.phase, slot.message, slot.progress_at = Phase.STARTING, None, None
        self._report(slot)
        refused = refusal(assignment.spec, self.gates)
        if refused is not None:  # nothing is started: the server replaces it, with backoff
            log.warning("refused to start task %s: %s", slot.task_id, refused)
            slot.phase = Phase.FAILED
            slot.message = f"refused by node {self.owner.node}: {refused}; nothing was started"
            self._report(slot)
            return
        try:
            launch = launch_of(assignment, self.owner, self.driver.discovery, self.gates)
            launch = dataclasses.replace(launch, on_progress=partial(self._pulling, slot))
            slot.handle = await self.driver.start(launch)
        except DriverError as exc:
            slot.phase, slot.message = Phase.FAILED, str(exc)
            self._report(slot)
            return
        except Exception as exc:  # an unexpected backend error is still a failed start
            log.exception("starting task %s failed", slot.task_id)
            slot.phase, slot.message = Phase.FAILED, f"{exc.__class__.__name__}: {exc}"
            self._report(slot)
            return
        slot.phase, slot.message = Phase.RUNNING, None
        self._report(slot)
        early, slot.early_exit = slot.early_exit, None
        if early is not None and early.handle == slot.handle:
            self._exited(slot, early.exit_code, early.message, early.oom_killed)

    def _pulling(self, slot: Slot, text: str) -> None:
        """A pull for the task's start made progress: a ``starting`` report that says so
        (``pulling IMAGE: 12.3 of 40.1 MB``), at most one every ``PROGRESS_EVERY`` seconds."""
        now = time.monotonic()
        if slot.phase is not Phase.STARTING or self.slots.get(slot.task_id) is not slot:
            return
        if slot.progress_at is not None and now - slot.progress_at < PROGRESS_EVERY:
            return
        slot.progress_at, slot.message = now, text
        self._report(slot)

    async def _remove(self, slot: Slot) -> None:
        if slot.handle is not None:
            await self.driver.remove(slot.handle)
            slot.handle = None

    def _exited(
        self, slot: Slot, exit_code: int | None, message: str | None = None, oom: bool = False
    ) -> None:
        slot.phase, slot.exit_code, slot.message = Phase.EXITED, exit_code, message
        slot.oom_killed = oom
        slot.end_pod = True
        slot.changed = self._last_epoch = next(self._epoch)
        self._sync_health(slot)
        self._report(slot)

    def _report(self, slot: Slot) -> None:
        state = PHASE_REPORT[slot.phase]
        terminal = slot.phase in (Phase.EXITED, Phase.STOPPED)
        self.reports.put(
            TaskReport(
                task_id=slot.task_id,
                state=state,
                exit_code=slot.exit_code if terminal else None,
                oom_killed=slot.oom_killed if terminal else False,
                # A start's message is its pull's progress.
                message=slot.message if slot.phase in _WITH_MESSAGE else None,
                container_id=slot.handle,
                healthy=slot.healthy,
                health_message=slot.health_message,
                at=time.time(),
            )
        )
        slot.reported = state

    # --- health checks ------------------------------------------------------------------

    def _sync_health(self, slot: Slot) -> None:
        """Run the task's check loop exactly while it runs, is meant to, and has checks."""
        checks = self._checks_wanted(slot)
        if slot.checker is not None and (not checks or slot.checked != slot.handle):
            slot.checker.cancel()  # awaited by close(); no callback can come after this
            slot.checker = slot.checked = None
        if not checks or slot.checker is not None:
            return
        assert self.assigned is not None and slot.handle is not None
        assignment = self.assigned[slot.task_id]
        target = ProbeTarget(
            slot.handle,
            self.owner.address,
            dict(assignment.spec.ports),
            dict(assignment.host_ports),
        )
        adopted = slot.adopted_at is not None
        started = time.monotonic()
        if slot.adopted_at is not None:  # the grace period began when the container did
            started -= max(0.0, time.time() - slot.adopted_at)
        if slot.checks_started is not None:  # checks again (a deferred kill): no new grace
            started = slot.checks_started
        slot.checks_started = started
        if self._http is None:
            self._http = http_client()
        loop = HealthLoop(
            checks,
            target,
            self.driver,
            self._http,
            started,
            on_verdict=partial(self._health_changed, slot),
            on_kill=partial(self._health_failed, slot),
            lenient=not adopted,
            # Healthy once (the server's record): its grace period ended then, whatever the
            # agent that saw it happen took with it when it died.
            passed_once=adopted and assignment.was_healthy,
        )
        slot.healthy = slot.health_message = None
        slot.checked = slot.handle
        slot.checker = asyncio.create_task(loop.run(), name=f"health-{slot.task_id}")
        self._checkers.add(slot.checker)
        slot.checker.add_done_callback(self._checkers.discard)

    def _checks_wanted(self, slot: Slot) -> list[Check]:
        if slot.phase is not Phase.RUNNING or slot.handle is None:
            return []
        if slot.kill_reason or slot.fenced:
            return []
        assignment = self.assigned.get(slot.task_id) if self.assigned is not None else None
        if assignment is None or assignment.desired != "run":
            return []
        return checks_of(assignment.spec)

    def _health_changed(self, slot: Slot, verdict: Verdict) -> None:
        if self.slots.get(slot.task_id) is not slot or slot.phase is not Phase.RUNNING:
            return
        slot.healthy, slot.health_message = verdict.healthy, verdict.message
        log.info("task %s: healthy=%s %s", slot.task_id, verdict.healthy, verdict.message or "")
        self._report(slot)  # a "running" report that carries the new verdict

    def _health_failed(self, slot: Slot, reason: str) -> None:
        if self.slots.get(slot.task_id) is not slot or slot.phase is not Phase.RUNNING:
            return
        if slot.handle is None or slot.handle != slot.checked:
            return  # another container by now (a retry scheduled for an older one)
        wait = self.kill_budget.take(time.monotonic())
        if wait > 0:
            # Over the node's budget: the task stays unhealthy (out of the registry) and its
            # checks go on; it is killed when a token frees up if it is still failing then.
            log.warning(
                "task %s: %s; kill deferred %.1fs (kill budget)", slot.task_id, reason, wait
            )
            self._restart_checks_later(slot, wait)
            return
        log.warning("task %s: %s", slot.task_id, reason)
        slot.kill_reason = reason
        self.kick(slot.task_id)

    def _restart_checks_later(self, slot: Slot, delay: float) -> None:
        """The check loop ended when it asked for the kill: run a new one after ``delay``,
        which asks again if the task still fails (and reports healthy if it recovered)."""

        def restart() -> None:
            self._deferred.discard(handle)
            checker = slot.checker
            if self.slots.get(slot.task_id) is slot and checker is not None and checker.done():
                slot.checker = slot.checked = None
                # Its grace period is over for good: the loop that asked for the kill had
                # counted failures, so it was past it (or the task had passed once).
                slot.checks_started = -math.inf
                self._sync_health(slot)

        handle = asyncio.get_running_loop().call_later(min(delay, 3600.0), restart)
        self._deferred.add(handle)

    # --- reads ------------------------------------------------------------------------------

    def logs(
        self, task_id: str, follow: bool, tail: int | None, container: str | None = None
    ) -> AsyncIterator[bytes]:
        """``container``: one member of a pod (``UnknownContainer`` if the task's spec has
        no such member)."""
        slot = self.slots.get(task_id)
        if slot is None or slot.handle is None:
            raise UnknownTask(task_id)
        assignment = (self.assigned or {}).get(task_id)
        if container is not None and assignment is not None:
            names = [c.name for c in assignment.spec.containers or []]
            if container not in names:
                raise UnknownContainer(container_problem(task_id, container, names))
        return self.driver.logs(slot.handle, follow, tail, container)

    async def close(self) -> None:
        """Stop working (tasks keep running: a restarted agent adopts them)."""
        for handle in self._deferred:
            handle.cancel()  # no check loop may start after the close
        self._deferred.clear()
        tasks = [s.worker for s in self.slots.values() if s.worker is not None]
        tasks.extend(self._checkers)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
