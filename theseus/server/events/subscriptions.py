"""The event stream's HTTP callbacks as stored in etcd: subscriptions and their cursors.

A subscription (``/theseus/event-subs/<id>``) is written by an admin through
``theseus.server.routes.event_subscriptions``; its cursor (``/theseus/event-cursors/<id>``,
the position of the last event its receiver acknowledged) by the leader's deliveries
(``theseus.server.events.callbacks``), so that the next leader goes on where this one
stopped. Both live in etcd only (not in the cache): they are few, read at a leader's start and
every second by the deliveries, and on demand by the routes.
"""

from __future__ import annotations

import json
import secrets
import time

from pydantic import ValidationError

from theseus.api.events import Subscription, SubscriptionCreate
from theseus.server.events.feed import AFTER_ALL
from theseus.store import keys
from theseus.store.base import Delete, Put, Store

SUBS_END = keys.prefix_end(keys.EVENT_SUBSCRIPTIONS)
CURSORS_END = keys.prefix_end(keys.EVENT_CURSORS)
MAX_SUBSCRIPTIONS = 100


class TooManySubscriptions(Exception):
    pass


class Stored:
    """A subscription with the revision it was created at (it gets the events after it)."""

    def __init__(self, subscription: Subscription, created_revision: int) -> None:
        self.subscription = subscription
        self.created_revision = created_revision


class Subscriptions:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(self, body: SubscriptionCreate, who: str) -> Subscription:
        if len(await self.load()) >= MAX_SUBSCRIPTIONS:
            raise TooManySubscriptions(f"at most {MAX_SUBSCRIPTIONS} event subscriptions")
        subscription = Subscription(
            id=f"sub-{secrets.token_hex(4)}",
            url=body.url,
            topics=list(dict.fromkeys(body.topics)),
            services=list(dict.fromkeys(body.services)),
            created_at=time.time(),
            created_by=who,
        )
        await self._store.commit(
            [
                Put(
                    keys.EVENT_SUBSCRIPTIONS + subscription.id,
                    subscription.model_dump_json().encode(),
                )
            ]
        )
        return subscription

    async def delete(self, subscription_id: str) -> bool:
        found = {s.subscription.id for s in await self.load()}
        if subscription_id not in found:
            return False
        await self._store.commit(
            [
                Delete(keys.EVENT_SUBSCRIPTIONS + subscription_id),
                Delete(keys.EVENT_CURSORS + subscription_id),
            ]
        )
        return True

    async def load(self) -> list[Stored]:
        _, entries = await self._store.load(keys.EVENT_SUBSCRIPTIONS, SUBS_END)
        stored = []
        for entry in entries:
            try:
                subscription = Subscription.model_validate_json(entry.value)
            except ValidationError:
                continue
            stored.append(Stored(subscription, entry.create_revision))
        return sorted(stored, key=lambda s: s.subscription.created_at)

    async def cursors(self) -> dict[str, tuple[int, int]]:
        _, entries = await self._store.load(keys.EVENT_CURSORS, CURSORS_END)
        cursors = {}
        for entry in entries:
            try:
                index, n = json.loads(entry.value)
                cursors[entry.key.removeprefix(keys.EVENT_CURSORS)] = (int(index), int(n))
            except (ValueError, TypeError):
                continue
        return cursors

    async def save_cursors(self, cursors: dict[str, tuple[int, int]]) -> None:
        """One transaction for every cursor that moved (the deliveries' one write a second)."""
        if cursors:
            await self._store.commit(
                [
                    Put(keys.EVENT_CURSORS + sub_id, json.dumps(list(position)).encode())
                    for sub_id, position in cursors.items()
                ]
            )


def cursor_id(position: tuple[int, int] | None) -> str | None:
    """How a cursor is shown: the id of the last acknowledged event."""
    if position is None:
        return None
    return f"{position[0]}" if position[1] == AFTER_ALL else f"{position[0]}-{position[1]}"
