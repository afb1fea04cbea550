"""The leader's side of events on ``MemoryStore``: callback deliveries (in order, retried
unchanged after a failure, cursors saved and resumed by the next leader, a reset for a cursor
before the window) and the keeper of notable events (one batch per flush, resumed after the
newest, read back by ``history`` with audits derived again)."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.kit.builders import make_state
from tests.kit.wait import wait_until_async
from theseus.api.events import SubscriptionCreate
from theseus.security.records import AuditRecord
from theseus.server.events.callbacks import Deliveries
from theseus.server.events.feed import EventFeed
from theseus.server.events.keeper import EventKeeper, history
from theseus.server.events.subscriptions import Subscriptions
from theseus.store import keys
from theseus.store.base import Put
from theseus.store.memory import MemoryStore


def _node_events(feed: EventFeed, first: int, count: int) -> None:
    """``count`` revisions from ``first``, each one NodeReady event."""
    for i in range(count):
        feed.changed(keys.alive_key(f"n{i}"), first + i, None, 1, b"")


class Receiver:
    def __init__(self) -> None:
        self.up = True
        self.ids: list[str] = []
        self.calls = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if not self.up:
            return httpx.Response(503)
        body = json.loads(request.content)
        self.ids += [e["id"] for e in body["events"]]
        return httpx.Response(204)


def _deliveries(
    store: MemoryStore, feed: EventFeed, receiver: Receiver, leading: list[bool]
) -> Deliveries:
    transport = httpx.MockTransport(receiver.handle)
    return Deliveries(
        Subscriptions(store),
        feed,
        lambda: leading[0],
        client=lambda: httpx.AsyncClient(transport=transport),
    )


async def test_deliveries_go_in_order_and_retry_after_a_failure() -> None:
    store = MemoryStore()
    feed = EventFeed(make_state)
    feed.reloaded(1)
    sub = await Subscriptions(store).create(SubscriptionCreate(url="http://r.example/"), "t")
    receiver = Receiver()
    leading = [True]
    deliveries = _deliveries(store, feed, receiver, leading)
    runner = asyncio.create_task(deliveries.run(interval=0.01))
    try:
        _node_events(feed, 10, 3)
        await wait_until_async(lambda: len(receiver.ids) == 3, 3, "the first three")
        receiver.up = False
        _node_events(feed, 20, 2)
        await wait_until_async(lambda: receiver.calls >= 6, 5, "retries while down")
        receiver.up = True
        await wait_until_async(lambda: len(receiver.ids) == 5, 5, "the two held back")
        assert receiver.ids == ["10-0", "11-0", "12-0", "20-0", "21-0"]
        cursors = await wait_until_async(
            lambda: _saved(store, sub.id, (21, 0)), 3, "the cursor in etcd"
        )
        assert cursors
        # A new leader (this one stops leading) goes on from the saved cursor.
        leading[0] = False
        await wait_until_async(lambda: not deliveries._workers, 3, "the workers stopped")
        _node_events(feed, 30, 1)
        second = Receiver()
        other = _deliveries(store, feed, second, [True])
        follower = asyncio.create_task(other.run(interval=0.01))
        await wait_until_async(lambda: second.ids, 3, "the next leader's first delivery")
        assert second.ids == ["30-0"]
        follower.cancel()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def _saved(store: MemoryStore, sub_id: str, position: tuple[int, int]) -> bool:
    return (await Subscriptions(store).cursors()).get(sub_id) == position


async def test_a_cursor_before_the_window_gets_a_reset_first() -> None:
    store = MemoryStore()
    sub = await Subscriptions(store).create(SubscriptionCreate(url="http://r.example/"), "t")
    await Subscriptions(store).save_cursors({sub.id: (3, 0)})
    feed = EventFeed(make_state)
    feed.reloaded(50)  # this server's window starts after the cursor
    _node_events(feed, 51, 1)
    receiver = Receiver()
    runner = asyncio.create_task(_deliveries(store, feed, receiver, [True]).run(interval=0.01))
    try:
        await wait_until_async(lambda: len(receiver.ids) == 2, 3, "the reset and the event")
        assert receiver.ids == ["reset-50", "51-0"]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_the_keeper_writes_one_batch_per_flush_and_history_reads_it() -> None:
    store = MemoryStore()
    feed = EventFeed(make_state, clock=lambda: 1000.0)
    feed.reloaded(1)
    keeper = EventKeeper(store, feed, lambda: True)
    _node_events(feed, 10, 3)
    feed.changed(keys.REGISTRY + "web/x", 13, None, b"{}", b"{}")  # routine: not kept
    await keeper.flush()
    await keeper.flush()  # nothing new: no write
    _, batches = await store.load(keys.EVENTS, keys.prefix_end(keys.EVENTS))
    assert [len(json.loads(b.value)) for b in batches] == [3]
    record = AuditRecord(at=1001.0, who="t:x", token_id=None, method="POST", path="/p", status=200)
    key = f"{keys.AUDIT}{int(1001 * 1e9):020d}-s-0"
    revision = await store.commit([Put(key, record.model_dump_json().encode())])
    assert revision is not None
    kept = await history(store, since=999.0, before=100)  # by position: the store's audit first
    assert [e.id for e in kept] == [f"{revision}-0", "10-0", "11-0", "12-0"]
    assert kept[0].topic == "audit"
    assert await history(store, since=1000.5, before=100) == kept[:1]  # by time
    assert [e.id for e in await history(store, since=0, before=11)] == [
        f"{revision}-0",
        "10-0",
        "11-0",
    ]
    # The next leader's keeper resumes after the newest batch: nothing is written twice.
    again = EventKeeper(store, feed, lambda: True)
    await again.flush()
    _, batches = await store.load(keys.EVENTS, keys.prefix_end(keys.EVENTS))
    assert len(batches) == 1


async def test_a_receiver_that_never_answers_slows_no_other() -> None:
    store = MemoryStore()
    feed = EventFeed(make_state)
    feed.reloaded(1)
    subs = Subscriptions(store)
    await subs.create(SubscriptionCreate(url="http://stuck.example/"), "t")
    await subs.create(SubscriptionCreate(url="http://quick.example/"), "t")
    quick: list[str] = []
    never = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "stuck.example":
            await never.wait()  # holds its worker's request open
        quick.extend(e["id"] for e in json.loads(request.content)["events"])
        return httpx.Response(204)

    transport = httpx.MockTransport(handle)
    deliveries = Deliveries(
        subs, feed, lambda: True, client=lambda: httpx.AsyncClient(transport=transport)
    )
    runner = asyncio.create_task(deliveries.run(interval=0.01))
    try:
        for n, first in enumerate((10, 20, 30), 1):
            _node_events(feed, first, 2)
            wanted = 2 * n
            await wait_until_async(
                lambda wanted=wanted: len(quick) == wanted, 2, "the quick receiver's events"
            )
        assert quick == ["10-0", "11-0", "20-0", "21-0", "30-0", "31-0"]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_the_keeper_splits_a_burst_into_keys_of_bounded_size() -> None:
    store = MemoryStore()
    feed = EventFeed(make_state, clock=lambda: 1000.0)
    feed.reloaded(1)
    _node_events(feed, 10, 1200)  # 1,200 notable events (a node flapping, a big failure)
    await EventKeeper(store, feed, lambda: True).flush()
    _, batches = await store.load(keys.EVENTS, keys.prefix_end(keys.EVENTS))
    assert [len(json.loads(b.value)) for b in batches] == [500, 500, 200]
    assert max(len(b.value) for b in batches) < 200_000
    kept = await history(store, since=0, before=10_000)
    assert [e.index for e in kept] == list(range(10, 1210))
