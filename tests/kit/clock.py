"""A clock a test moves by hand, for the code that takes one (``clock=``): a monotonic
clock's stand-in."""

from __future__ import annotations


class ManualClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
