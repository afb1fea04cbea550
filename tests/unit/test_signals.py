"""The cache's wake-ups (``theseus.store.signals``): a ``Pulse`` wakes who waits for the next
change, and makes nothing when no one waits; a ``KeyedSignal`` wakes one key's waiters only."""

from __future__ import annotations

import asyncio

from theseus.store.signals import KeyedSignal, Pulse


async def test_a_pulse_wakes_who_waits_for_the_next_fire_and_only_then() -> None:
    pulse = Pulse()
    pulse.fire()  # no one waits: nothing is made, nothing is kept set
    assert pulse._event is None
    first = pulse.next()
    assert pulse.next() is first  # two waiters of the same change share one event
    waiter = asyncio.create_task(first.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    pulse.fire()
    await asyncio.wait_for(waiter, 1.0)
    # A waiter that asks after that fire waits for the next one.
    later = pulse.next()
    assert later is not first and not later.is_set()
    pulse.fire()
    assert later.is_set() and pulse._event is None


async def test_a_keyed_signal_wakes_the_waiters_of_its_key_and_no_one_else() -> None:
    signal = KeyedSignal()
    web = asyncio.create_task(signal.wait(["web"], 5.0))
    db = asyncio.create_task(signal.wait(["db"], 5.0))
    await asyncio.sleep(0)
    signal.fire("web")
    await asyncio.wait_for(web, 1.0)
    assert not db.done()
    signal.fire_all()
    await asyncio.wait_for(db, 1.0)
