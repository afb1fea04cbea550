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

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class OverInstances:
    opened: dict[str, float] = field(default_factory=dict)  # service -> when it went over
    longest: float = 0.0
    longest_service: str | None = None
    windows: int = 0

    def sample(self, at: float, instances: Mapping[str, int], running: Mapping[str, int]) -> None:
        """``instances``: each group's; ``running``: the counted containers per service
        (a service without a group counts as 0 instances)."""
        for service in set(instances) | set(running) | set(self.opened):
            over = running.get(service, 0) > instances.get(service, 0)
            if over and service not in self.opened:
                self.opened[service] = at
                self.windows += 1
            elif not over and service in self.opened:
                self._close(service, at)

    def _close(self, service: str, at: float) -> None:
        length = at - self.opened.pop(service)
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
