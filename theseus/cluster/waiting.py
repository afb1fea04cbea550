"""Waiting for a condition with a deadline: the one polling loop of the launcher, the
benchmarks and the tests.

``wait_until`` is called by ``theseus.cluster.local`` (``theseus up`` waiting for its
processes), by ``theseus.cluster.supervise`` (a child answering its health probe), by
``bench/`` and, through ``tests/kit/wait.py`` (which adds an asyncio flavour raising the
same ``WaitTimeout``), by the tests. A check returns something truthy once the condition holds;
that value is what the wait returns, so a check can hand over what it found. A check may also
raise to end the wait early (a process that exited will never become healthy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold by the deadline; ``last`` is what the check returned last."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        super().__init__(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        self.what = what
        self.timeout = timeout
        self.last = last


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something truthy, and return
    that. ``WaitTimeout`` naming ``what`` once ``timeout`` seconds have passed. The check runs
    at least once, and once more at the deadline (a slow check may overrun it by one call)."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(what, timeout, last)
        time.sleep(min(interval, remaining))
