"""The leader's lease keep-alive against a scripted store: it rides out failed refreshes while
the lease may still live, and gives up (ending the leadership) once it may not."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from theseus.server.leader import Leader
from theseus.store.cache import StateCache
from theseus.store.etcd import EtcdStore, StoreUnavailable

TTL = 1  # seconds: refreshes every third of it


class ScriptedStore:
    """``refresh_lease`` answers from a script: True/False, or an exception to raise."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.refreshes = 0

    async def refresh_lease(self, lease: int) -> bool:
        self.refreshes += 1
        answer = self.answers.pop(0) if self.answers else StoreUnavailable("etcd is gone")
        if isinstance(answer, Exception):
            raise answer
        return answer


def leader(store: ScriptedStore) -> Leader:
    return Leader(cast(EtcdStore, store), cast(StateCache, cast(Any, None)), "me", lease_ttl=TTL)


async def keep_alive(store: ScriptedStore, timeout: float) -> float:
    """Run the keep-alive until it gives up; how long it kept the leadership."""
    loop = asyncio.get_running_loop()
    granted = loop.time()
    await asyncio.wait_for(leader(store)._keep_alive(7, granted), timeout)
    return loop.time() - granted


async def test_a_failed_refresh_is_retried_while_the_lease_may_live() -> None:
    store = ScriptedStore(True, StoreUnavailable("member moved"), True, True, False)
    await keep_alive(store, timeout=5)
    assert store.refreshes == 5  # went on after the failure; stopped when etcd said expired


async def test_without_any_successful_refresh_it_gives_up_within_the_ttl() -> None:
    store = ScriptedStore()  # every refresh fails
    held = await keep_alive(store, timeout=5)
    assert TTL <= held < TTL + 0.5
    assert store.refreshes >= 3  # retried quickly, not once per third of the TTL


async def test_a_refresh_that_hangs_does_not_outlive_the_lease() -> None:
    class Hanging(ScriptedStore):
        async def refresh_lease(self, lease: int) -> bool:
            self.refreshes += 1
            await asyncio.Event().wait()
            return True

    held = await keep_alive(Hanging(), timeout=5)
    assert held < TTL + 0.5
