"""Leadership on the in-memory store: a term rides out failed refreshes while its lease may
still live, ends once it may not (lease loss), and its writes are refused once another server
holds the leader key (the fence), even while it still believes it leads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.kit.builders import make_group, make_node
from tests.kit.wait import wait_until_async
from theseus.reconciler.reconcile import Plan
from theseus.server import leader as leader_module
from theseus.server import pass_process
from theseus.server.leader import Leader
from theseus.server.pass_process import PassProcessFailed, PassResult
from theseus.store import keys
from theseus.store.base import CreateRevisionIs, Delete, Put
from theseus.store.cache import StateCache
from theseus.store.encoding import alive_put, encode, node_put
from theseus.store.leadership import Leadership, Term
from theseus.store.memory import MemoryStore

TTL = 1  # seconds: refreshes every third of it


@dataclass
class Terms:
    """A ``lead`` callback that records each term and holds it until it is over."""

    terms: list[Term] = field(default_factory=list)
    elected: asyncio.Event = field(default_factory=asyncio.Event)
    ended_after: list[float] = field(default_factory=list)  # seconds each term lasted

    async def lead(self, term: Term) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.terms.append(term)
        self.elected.set()
        await term.ended()
        self.ended_after.append(loop.time() - started)

    async def first(self) -> Term:
        async with asyncio.timeout(5):
            await self.elected.wait()
        return self.terms[0]


@pytest.fixture
async def leading(store: MemoryStore, cache: StateCache) -> AsyncIterator[Terms]:
    """One leadership campaigning on ``store``, leading through ``Terms.lead``."""
    terms = Terms()
    running = asyncio.create_task(Leadership(store, cache, "me", lease_ttl=TTL).run(terms.lead))
    yield terms
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def test_a_failed_refresh_is_retried_while_the_lease_may_live(
    store: MemoryStore, leading: Terms
) -> None:
    term = await leading.first()
    refreshes = store.calls["refresh_lease"]
    store.faults.fail("refresh_lease", times=1)  # etcd moves to another member
    async with asyncio.timeout(5):
        await store.wait_calls("refresh_lease", refreshes + 2)  # the failure, then a success
    assert not term.over
    entry = await store.get(keys.LEADER)
    assert entry is not None
    store.expire_lease(entry.lease)  # etcd says it expired: the term ends
    async with asyncio.timeout(5):
        await term.ended()
    assert len(leading.terms) == 1 or leading.terms[1].revision > term.revision


async def test_without_any_successful_refresh_it_gives_up_within_the_ttl(
    store: MemoryStore, leading: Terms
) -> None:
    store.faults.fail("refresh_lease")
    term = await leading.first()
    refreshes = store.calls["refresh_lease"]
    async with asyncio.timeout(5):
        await term.ended()
    assert TTL - 0.2 <= leading.ended_after[0] < TTL + 0.5
    assert store.calls["refresh_lease"] - refreshes >= 3  # retried quickly, not every TTL/3


async def test_a_refresh_that_hangs_does_not_outlive_the_lease(
    store: MemoryStore, leading: Terms
) -> None:
    store.faults.hang("refresh_lease")
    term = await leading.first()
    async with asyncio.timeout(5):
        await term.ended()
    assert leading.ended_after[0] < TTL + 0.5


async def test_a_deposed_term_cannot_write(store: MemoryStore, leading: Terms) -> None:
    term = await leading.first()
    assert await store.commit([Put("/t/a", b"1")], [term.fence]) is not None
    # Another server takes the key behind the leader's back; its own lease still lives.
    await store.commit([Delete(keys.LEADER)])
    lease = await store.grant_lease(10)
    taken = await store.commit(
        [Put(keys.LEADER, b"other", lease=lease)], [CreateRevisionIs(keys.LEADER, 0)]
    )
    assert taken is not None
    assert not term.over, "nothing told the term it is over"
    assert await store.commit([Put("/t/a", b"2")], [term.fence]) is None
    assert store.value("/t/a") == b"1"


async def test_a_deposed_leader_steps_down_and_its_plans_are_refused(
    store: MemoryStore, cache: StateCache
) -> None:
    leadership = Leadership(store, cache, "me", lease_ttl=TTL)
    leader = Leader(store, cache, leadership)
    running = asyncio.create_task(leader.run())
    try:
        await wait_until_async(lambda: leader.is_leader, 5, "elected", interval=0.01)
        plan = Plan(registry_puts={"/services/web/[]/config": b"{}"})
        assert await leader.commit(plan) is not None
        await store.commit([Delete(keys.LEADER)])
        lease = await store.grant_lease(10)
        other = [Put(keys.LEADER, b"other", lease=lease)]
        assert await store.commit(other, [CreateRevisionIs(keys.LEADER, 0)]) is not None
        refused = Plan(registry_puts={"/services/web/[]/config": b'{"stale": true}'})
        assert await leader.commit(refused) is None
        assert store.value("/services/web/[]/config") == b"{}"
        # Its pass sees that the key is no longer its own.
        await wait_until_async(lambda: not leader.is_leader, 5, "stepped down", interval=0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


@pytest.mark.parametrize("child_fails", [False, True])
async def test_a_leader_passing_in_a_child_process_places_tasks_or_falls_back_to_its_thread(
    store: MemoryStore, cache: StateCache, monkeypatch: pytest.MonkeyPatch, child_fails: bool
) -> None:
    forked: list[bool] = []
    real_forked_pass = leader_module.forked_pass

    def counted(*args: Any, **kwargs: Any) -> PassResult:
        forked.append(True)
        if child_fails:
            raise PassProcessFailed("the pass's process ended without an answer (status=9)")
        return real_forked_pass(*args, **kwargs)

    monkeypatch.setattr(leader_module, "forked_pass", counted)
    monkeypatch.setattr(pass_process, "CHILD_MIN_PLACEMENTS", 2)  # 2 tasks are worth a child
    group, node = make_group("web", instances=2), make_node("n1")
    await store.commit(
        [
            Put(keys.group_key(group.group_key.key), encode(group)),
            node_put(node),
            alive_put(node.name, 0.0, 30),
        ]
    )
    leader = Leader(store, cache, Leadership(store, cache, "me", lease_ttl=TTL), fork_passes=True)
    running = asyncio.create_task(leader.run())
    try:
        await wait_until_async(
            lambda: len(cache.state.tasks_of(group.group_key.key)) == 2, 10, "2 tasks placed"
        )
        assert {t.node for t in cache.state.tasks.values()} == {"n1"}
        assert forked, "no pass went to a child"
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
