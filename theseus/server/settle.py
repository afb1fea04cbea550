"""How long the leader holds a big deploy's pass back for the deploy's next documents (pure:
``theseus.server.leader.Leader`` feeds ``Settling`` the clock and its cache's numbers).

A big deploy often comes as several documents back to back (one changes at most
``MAX_GROUP_CHANGES`` groups: 50,000 tasks in 500 services are 8). A pass that placed the first
alone and the rest in a second one sent most nodes their tasks twice, and each agent polled and
reported twice: at 5,000 nodes 0.52 requests per task against 0.27, and all running after
39-52 s against 28-33 s when the documents happened to make one pass (BENCHMARKS.md, issue
17's tenth session). So a pass with many placements to make (``SETTLE_MIN_PLACEMENTS``) waits
until the deploy has grown by no ``SETTLE_GROWTH`` instances for ``SETTLE_QUIET`` seconds, and
at most ``SETTLE_MAX`` in all. Small deploys, scaling by a few, and a failed task's
replacement are not held back.

Growth, not any change of a group: the benchmark's probes (a service scaled 1 <-> 2 four
times a second, as a busy CI pipeline might) never left the groups quiet for long, and every
big deploy waited the whole ``SETTLE_MAX``. The quiet must outlast the gap between two
documents as this server's cache sees them: the client's wait for the first answer, then the
second's commit and its way back through the watch. At 0.25 s a loaded server split a
1,000-node deploy of two documents whose first was answered in 221 ms: all running after
18.9 s against 12.2-14.1 s in one pass (issue 17's twenty-first session).
"""

from __future__ import annotations

from dataclasses import dataclass

from theseus.server.pass_process import CHILD_MIN_PLACEMENTS

SETTLE_QUIET = 0.5  # seconds without growth before the pass
SETTLE_MAX = 2.0  # seconds a pass is held back at most
SETTLE_MIN_PLACEMENTS = CHILD_MIN_PLACEMENTS  # instances lacking from which a pass waits
SETTLE_GROWTH = 100  # instances: a change that adds fewer does not prolong the wait


@dataclass
class Settling:
    """The wait of the pass ahead (monotonic seconds). ``since``: when it began (None: not
    waiting); ``wanted``: instances lacking at the last growth; ``grew_at``: the group change
    that brought it."""

    since: float | None = None
    wanted: int = 0
    grew_at: float = 0.0

    def delay(self, now: float, changed_at: float, wanted: int) -> float:
        """Seconds the pass should still wait, with ``wanted`` instances lacking now and the
        groups' last change at ``changed_at``; 0 ends the wait."""
        if now - changed_at >= SETTLE_QUIET or (
            self.since is None and wanted < SETTLE_MIN_PLACEMENTS
        ):
            self.since = None
            return 0.0
        if self.since is None:
            self.since, self.wanted, self.grew_at = now, wanted, changed_at
        elif wanted >= self.wanted + SETTLE_GROWTH:
            self.wanted, self.grew_at = wanted, changed_at
        wait = max(0.0, min(self.grew_at + SETTLE_QUIET - now, self.since + SETTLE_MAX - now))
        if wait == 0.0:
            self.since = None
        return wait
