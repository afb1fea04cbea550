"""The agent's budget of health kills: a burst, then a steady rate (pure)."""

from __future__ import annotations

import pytest

from theseus.agent.kill_budget import KillBudget


def test_a_burst_then_one_token_per_period() -> None:
    budget = KillBudget(per_minute=6, burst=2)  # a token every 10 s
    assert budget.take(100.0) == 0.0
    assert budget.take(100.0) == 0.0
    assert budget.take(100.0) == pytest.approx(10.0)
    assert budget.take(104.0) == pytest.approx(6.0)  # nothing spent by asking
    assert budget.take(110.0) == 0.0
    assert budget.take(110.0) == pytest.approx(10.0)


def test_tokens_never_pile_up_beyond_the_burst() -> None:
    budget = KillBudget(per_minute=60, burst=3)
    assert budget.take(0.0) == 0.0
    results = [budget.take(10_000.0) for _ in range(4)]
    assert results[:3] == [0.0, 0.0, 0.0] and results[3] == pytest.approx(1.0)


def test_a_zero_rate_allows_only_the_burst() -> None:
    budget = KillBudget(per_minute=0, burst=1)
    assert budget.take(0.0) == 0.0
    assert budget.take(1e9) == float("inf")
