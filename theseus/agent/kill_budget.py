"""How many tasks an agent may kill for failing health checks, over time (pure).

Marathon's worst failure mode was an overloaded leader whose
own slowness made every check time out, and which then killed services en masse. Theseus runs
checks on the agents, which removes the leader from the picture; an overloaded *node* can
still see all its checks time out at once. This token bucket bounds the damage: an agent
kills at most ``burst`` tasks at once, then one every ``60 / per_minute`` seconds. A task over
budget stays unhealthy (so it is out of the registry at once: nothing is served by it) and is
killed when a token frees up, if it is still failing then. The task runner owns one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class KillBudget:
    per_minute: float = 10.0
    burst: float = 10.0
    _tokens: float | None = field(default=None, repr=False)
    _at: float = field(default=0.0, repr=False)

    def take(self, now: float) -> float:
        """Spend a token: 0.0 when one was free (kill now), else the seconds until one is
        (nothing is spent; ask again then)."""
        tokens = self._refill(now)
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        if self.per_minute <= 0:
            return float("inf")
        return (1.0 - tokens) * 60.0 / self.per_minute

    def _refill(self, now: float) -> float:
        if self._tokens is None:
            self._tokens, self._at = self.burst, now
        elapsed = max(0.0, now - self._at)
        self._tokens = min(self.burst, self._tokens + elapsed * self.per_minute / 60.0)
        self._at = now
        return self._tokens
