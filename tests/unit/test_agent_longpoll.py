"""The agent's long-poll is asked again of the new server when its heartbeats move there
(``theseus.agent.longpoll``): a cut-off server would hold it for its whole timeout."""

from __future__ import annotations

import asyncio

from theseus.agent.longpoll import unless_moved


async def test_the_answer_of_a_poll_that_ends_is_returned() -> None:
    moved = asyncio.Event()
    assert await unless_moved(asyncio.sleep(0.01, "list"), moved, lambda: "a", "a") == "list"


async def test_a_poll_on_a_server_left_behind_is_cancelled() -> None:
    moved, current = asyncio.Event(), ["a"]
    cancelled = asyncio.Event()

    async def hung() -> str:
        try:
            await asyncio.sleep(3600)  # a cut-off server: no answer, ever
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    polling = asyncio.create_task(unless_moved(hung(), moved, lambda: current[0], "a"))
    await asyncio.sleep(0.01)
    current[0] = "b"  # the heartbeats moved on
    moved.set()
    assert await asyncio.wait_for(polling, 1) is None
    assert cancelled.is_set()


async def test_a_move_back_to_the_same_server_leaves_the_poll_alone() -> None:
    moved = asyncio.Event()
    polling = asyncio.create_task(
        unless_moved(asyncio.sleep(0.05, "list"), moved, lambda: "a", "a")
    )
    await asyncio.sleep(0.01)
    moved.set()  # e.g. a heartbeat that failed over and came back: the same server
    assert await asyncio.wait_for(polling, 1) == "list"
