"""Agents' CPU-heavy sections take turns behind the rest of the loop's work
(``theseus.server.agent_turns``)."""

from __future__ import annotations

import asyncio

import pytest

from theseus.server.agent_turns import AgentTurns


async def test_other_work_runs_between_agents_sections() -> None:
    """Ten agents' sections ready before a user's request: without turns, all ten ran first
    (the loop is first come, first served); with them, the request runs after at most one."""
    turns = AgentTurns(per_turn=1)
    order: list[str] = []
    most_waiting = 0

    async def agent(number: int) -> None:
        nonlocal most_waiting
        async with turns.turn():
            most_waiting = max(most_waiting, turns.waiting)
            order.append(f"agent {number}")

    async def user() -> None:
        order.append("user")

    await asyncio.gather(*[agent(n) for n in range(10)], user())
    assert order.index("user") <= 1
    assert sorted(order) == sorted(["user", *(f"agent {n}" for n in range(10))])
    assert [o for o in order if o != "user"] == [f"agent {n}" for n in range(10)]  # FIFO
    assert most_waiting == 9 and turns.waiting == 0


async def test_a_section_that_fails_gives_its_slot_back() -> None:
    turns = AgentTurns(per_turn=1)

    async def failing() -> None:
        async with turns.turn():
            raise ValueError("a bad report batch")

    for _ in range(3):  # the slot came back each time, or the second would wait for ever
        with pytest.raises(ValueError):
            await asyncio.wait_for(failing(), 1.0)
    assert turns.waiting == 0
