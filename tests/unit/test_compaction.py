"""The leader compacts etcd's history every interval, up to the revision it read one interval
before (``theseus.server.compaction``), against a ``MemoryStore``."""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.clock import ManualClock
from theseus.server.compaction import HistoryCompactor, Mark, compaction_due
from theseus.server.metrics import ServerMetrics
from theseus.store.base import HistoryCompacted, Put
from theseus.store.memory import MemoryStore


def test_the_revision_read_one_interval_ago_is_due() -> None:
    assert compaction_due(None, 5000.0, 300.0) is None
    assert compaction_due(Mark(42, 1000.0), 1299.0, 300.0) is None
    assert compaction_due(Mark(42, 1000.0), 1300.0, 300.0) == 42


async def test_only_the_leader_compacts_and_one_interval_of_history_stays() -> None:
    store, clock, leading = MemoryStore(), ManualClock(1000.0), [False]
    metrics = ServerMetrics()
    compactor = HistoryCompactor(store, lambda: leading[0], 300.0, metrics, clock)
    for n in range(5):
        await store.commit([Put("/k", str(n).encode())])
    await compactor.step()
    assert store.calls["current_revision"] == 0, "a follower reads nothing"

    leading[0] = True
    await compactor.step()  # the mark: revision 5, now
    marked = store.revision
    await store.commit([Put("/k", b"later")])
    clock.now += 299.0
    await compactor.step()
    assert store.calls["compact_history"] == 0, "not before the interval"

    clock.now += 1.0
    await compactor.step()
    assert compactor.compacted == marked
    assert metrics.registry.get_sample_value("theseus_etcd_compacted_revision") == marked
    assert metrics.registry.get_sample_value("theseus_etcd_compactions_total") == 1
    # The history from the mark on stays; before it, a watch is told to reload.
    async with asyncio.timeout(5):
        async for change in store.watch("/", "/\x7f", marked):
            assert change.revision == marked
            break
        with pytest.raises(HistoryCompacted):
            async for _ in store.watch("/", "/\x7f", marked - 1):
                pass

    # A new mark was read with it: the next compaction comes one interval later.
    clock.now += 300.0
    await compactor.step()
    assert compactor.compacted == marked + 1


async def test_a_new_term_reads_its_own_mark_first() -> None:
    store, clock, leading = MemoryStore(), ManualClock(1000.0), [True]
    compactor = HistoryCompactor(store, lambda: leading[0], 300.0, ServerMetrics(), clock)
    await store.commit([Put("/k", b"1")])
    await compactor.step()
    leading[0] = False
    await compactor.step()
    leading[0] = True
    clock.now += 400.0
    await compactor.step()  # the old term's mark was forgotten: a mark, no compaction
    assert store.calls["compact_history"] == 0


async def test_etcd_out_of_reach_is_tried_again() -> None:
    store, clock = MemoryStore(), ManualClock(1000.0)
    compactor = HistoryCompactor(store, lambda: True, 300.0, ServerMetrics(), clock)
    await store.commit([Put("/k", b"1")])
    await compactor.step()
    clock.now += 300.0
    store.faults.fail("compact_history", times=1)
    await compactor.step()  # logged, not raised
    assert compactor.compacted == 0
    await compactor.step()
    assert compactor.compacted == 1


async def test_an_interval_of_zero_is_no_compaction() -> None:
    store = MemoryStore()
    await asyncio.wait_for(HistoryCompactor(store, lambda: True, 0.0).run(), 1.0)
    assert store.calls["current_revision"] == 0
