"""How long each group ran more than its ``instances`` (pure; no I/O).

A sample is, per service, the group's instances and the containers that run for it and are
not being stopped on purpose: containers whose task the servers mean to run, or whose task
they no longer know or have declared lost (a cut-off host's, until its agent fences them).
A container of a task set to stop (a scale-down) is not counted: stopping takes the time it
takes. A window opens at the first sample over ``instances`` and closes at the first sample
back at or under it; its length is the time between. Called by the test bed's chaos run
(``tests.chaos.testbed``), which samples at every tick; unit-tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class OverInstances:
    opened: dict[str, float] = field(default_factory=dict)  # service -> when it went over
    longest: float = 0.0
    longest_service: str | None = None
    windows: int = 0
    # What was seen when each open window opened, and the windows longer than ``report_over``
    # with it: a long one is explained in the run's log.
    seen_at_open: dict[str, str] = field(default_factory=dict)
    report_over: float = float("inf")
    long_windows: list[str] = field(default_factory=list)

    def sample(
        self,
        at: float,
        instances: Mapping[str, int],
        running: Mapping[str, int],
        describe: Callable[[str], str] = lambda service: "",
    ) -> None:
        """``instances``: each group's; ``running``: the counted containers per service
        (a service without a group counts as 0 instances); ``describe``: what was seen of a
        service (kept when its window opens)."""
        for service in set(instances) | set(running) | set(self.opened):
            over = running.get(service, 0) > instances.get(service, 0)
            if over and service not in self.opened:
                self.opened[service] = at
                self.seen_at_open[service] = (
                    f"{running.get(service, 0)} counted, {instances.get(service, 0)} instances;"
                    f" {describe(service)}"
                )
                self.windows += 1
            elif not over and service in self.opened:
                self._close(service, at)

    def _close(self, service: str, at: float) -> None:
        length = at - self.opened.pop(service)
        seen = self.seen_at_open.pop(service, "")
        if length > self.report_over:
            self.long_windows.append(f"{service} over for {length:.1f}s from: {seen}")
        if length > self.longest:
            self.longest, self.longest_service = length, service

    def finish(self, at: float) -> float:
        """Close the windows still open (the run ended inside them); the longest."""
        for service in list(self.opened):
            self._close(service, at)
        return self.longest


def counted(containers: list[tuple[str, str]], stopping: set[str]) -> dict[str, int]:
    """``containers``: (service, task id) of every running container; ``stopping``: the
    tasks the servers have set to stop. The containers per service that count."""
    counts: dict[str, int] = {}
    for service, task in containers:
        if task not in stopping:
            counts[service] = counts.get(service, 0) + 1
    return counts
