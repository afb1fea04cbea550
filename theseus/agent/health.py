"""Health-check verdicts (pure): Marathon's grace period, failure counting and kill rule.

Owns the state of each check of one task and what follows from a probe's outcome; no I/O and
no clock of its own (callers pass ``now``, any monotonic clock). The agent's check loop
(``theseus.agent.checking``) feeds it probe outcomes (``theseus.agent.probes``) and reports
the task's verdict to the server when it changes. Rules (Marathon's, as docs/health.md says):

* A failure is ignored while the check is in its grace period: ``grace_period_seconds``
  after the task started, ended early by the first success. An ignored failure leaves the
  verdict unknown; its message is still kept, so that ``theseus ps`` can say why a task is
  not healthy yet.
* Outside the grace period, one failure makes the check unhealthy (the task leaves the
  registry at once) and ``max_consecutive_failures`` in a row get the task killed (0: never).
* One success makes it healthy and resets the count.
* A task is healthy when every check is, unhealthy when any is, unknown otherwise.

An adopted task (the agent restarted beside it) may have passed a check already. When the
server's record says it was healthy, the new agent starts its checks as passed once: failures
count at once, as they would have for the agent that died. Otherwise (a verdict that never
reached the server) ``lenient=False`` reports failures in the grace period as unhealthy,
still without counting them towards a kill: leaving the registry too early is the safe side,
keeping a failing task there for the rest of a grace period is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from theseus.model.health import HealthCheck


@dataclass(frozen=True)
class Outcome:
    """One probe's result. ``message`` says why it failed (None when it passed)."""

    passed: bool
    message: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A task's health as reported to the server: ``healthy`` None means unknown."""

    healthy: bool | None = None
    message: str | None = None


@dataclass
class CheckState:
    """One check of one task (a pod member's check carries its ``container`` name)."""

    check: HealthCheck
    started: float  # when the task started, on the caller's clock
    container: str | None = None
    lenient: bool = True  # False for an adopted task: see the module docstring
    passed_once: bool = False
    failures: int = 0  # consecutive failures counted outside the grace period
    healthy: bool | None = None
    message: str | None = None  # the last failure's, None after a success

    def in_grace(self, now: float) -> bool:
        return not self.passed_once and now < self.started + self.check.grace_period_seconds

    def record(self, now: float, outcome: Outcome) -> None:
        if outcome.passed:
            self.passed_once, self.failures = True, 0
            self.healthy, self.message = True, None
            return
        self.message = outcome.message or "failed"
        if self.container is not None:
            self.message = f"{self.container}: {self.message}"
        if self.in_grace(now):
            if not self.lenient:
                self.healthy = False
            return
        self.failures += 1
        self.healthy = False

    @property
    def must_kill(self) -> bool:
        limit = self.check.max_consecutive_failures
        return limit > 0 and self.failures >= limit


class TaskHealth:
    """Every check of one task, and the verdicts and kill decision drawn from them."""

    def __init__(self, states: list[CheckState]) -> None:
        self.states = states

    def verdict(self) -> Verdict:
        if any(s.healthy is False for s in self.states):
            return Verdict(False, next(s.message for s in self.states if s.healthy is False))
        if all(s.healthy is True for s in self.states):
            return Verdict(True)
        # Unknown; the message of a failure ignored in the grace period says why, if any.
        return Verdict(None, next((s.message for s in self.states if s.message), None))

    def kill_reason(self) -> str | None:
        """Why the task must be killed now, or None."""
        for state in self.states:
            if state.must_kill:
                return (
                    f"killed after {state.failures} failed health checks in a row: {state.message}"
                )
        return None
