"""Agents' statuses committed together (``theseus.server.status_commits``): reports that
arrive while a commit is in flight share the next one, in order, and a failed commit fails
only the requests it carried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from theseus.server.status_commits import StatusCommits
from theseus.store.base import Guard, Op, Put, StoreUnavailable
from theseus.store.memory import MemoryStore


class HeldStore(MemoryStore):
    """A store whose commits wait until released, counting the transactions it took."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()
        self.transactions = 0
        self.fail_next = False

    async def commit(
        self, ops: Sequence[Op], guards: Sequence[Guard] = (), *, prompt: bool = False
    ) -> int | None:
        await self.released.wait()
        self.transactions += 1
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("etcd went away")
        return await super().commit(ops, guards)


def writes(key: str, value: str) -> list[Put]:
    return [Put(key, value.encode())]


async def test_reports_that_arrive_during_a_commit_share_the_next_one() -> None:
    store = HeldStore()
    commits = StatusCommits(store)
    first = asyncio.create_task(commits.write(writes("/s/first", "1")))
    await asyncio.sleep(0)  # the first flush has started: it waits for the store
    later = [asyncio.create_task(commits.write(writes(f"/s/{i}", "1"))) for i in range(50)]
    await asyncio.sleep(0)
    store.released.set()
    revisions = await asyncio.gather(first, *later)
    assert (commits.flushes, store.transactions) == (2, 2)  # the first alone, then the 50
    assert revisions[0] < revisions[1] and len(set(revisions[1:])) == 1
    assert all(store.value(f"/s/{i}") == b"1" for i in range(50))


async def test_a_tasks_statuses_are_written_in_the_order_they_were_decided() -> None:
    store = HeldStore()
    commits = StatusCommits(store)
    older = asyncio.create_task(commits.write(writes("/s/task", "starting")))
    await asyncio.sleep(0)
    newer = asyncio.create_task(commits.write(writes("/s/task", "running")))
    store.released.set()
    await asyncio.gather(older, newer)
    assert store.value("/s/task") == b"running"


async def test_a_failed_commit_fails_the_requests_it_carried_and_the_next_one_goes_on() -> None:
    store = HeldStore()
    commits = StatusCommits(store)
    store.fail_next = True
    failed = asyncio.create_task(commits.write(writes("/s/a", "1")))
    await asyncio.sleep(0)
    next_one = asyncio.create_task(commits.write(writes("/s/b", "1")))
    store.released.set()
    with pytest.raises(StoreUnavailable):
        await failed
    assert await next_one > 0
    assert store.value("/s/a") is None and store.value("/s/b") == b"1"


async def test_a_request_that_hangs_up_leaves_its_writes_and_the_others_answered() -> None:
    store = HeldStore()
    commits = StatusCommits(store)
    gone = asyncio.create_task(commits.write(writes("/s/gone", "1")))
    stays = asyncio.create_task(commits.write(writes("/s/stays", "1")))
    await asyncio.sleep(0)
    gone.cancel()
    store.released.set()
    assert await stays > 0
    assert store.value("/s/gone") == b"1"
    assert gone.cancelled()


async def test_nothing_to_write_commits_nothing() -> None:
    store = HeldStore()
    assert await StatusCommits(store).write([]) == 0
    assert store.transactions == 0
