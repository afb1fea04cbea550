"""Client calls of the event stream and its callbacks, on a ``ServerClient`` (its servers,
failover and errors): ``theseus events`` and ``theseus event-subscription`` use them, and so
do the tests.

``events`` follows the stream across servers: when the server it reads from goes away
mid-stream, it reconnects to the next one after the last event it got (``after=<id>``), so
nothing still in the window is missed; a position the window no longer has comes back as a
``stream``/``reset`` event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import httpx

from theseus.api.client import ServerClient, ServerUnreachable
from theseus.api.events import (
    STREAM,
    Event,
    Subscription,
    SubscriptionCreate,
    SubscriptionList,
)

RECONNECT_FOR = 30.0  # seconds a follower keeps trying to reconnect before giving up


def events(
    client: ServerClient,
    *,
    topics: Sequence[str] = (),
    services: Sequence[str] = (),
    since: float | None = None,
    after: str | None = None,
    follow: bool = False,
    heartbeats: bool = False,
) -> Iterator[Event]:
    """The events, oldest first (``heartbeats``: the stream's heartbeats too)."""
    last = after
    down_since: float | None = None
    while True:
        params: dict[str, str | list[str]] = {
            "follow": "true" if follow else "false",
            "topic": list(topics),
            "service": list(services),
        }
        if last is not None:
            params["after"] = last
        elif since is not None:
            params["since"] = repr(since)
        try:
            for line in client.stream_lines("/v1/events", httpx.QueryParams(params)):
                if not line.strip():
                    continue
                event = Event.model_validate_json(line)
                down_since = None
                if event.topic != STREAM or event.type == "reset":
                    last = event.id
                elif last is None and event.type == "heartbeat":
                    last = event.id  # an idle follower resumes from there, not from "now"
                if event.type != "heartbeat" or heartbeats:
                    yield event
            if not follow:
                return
            time.sleep(0.2)  # the server ended the stream (it is stopping): to the next one
            client.servers.failed(client.address)
        except ServerUnreachable:
            if not follow:
                raise
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > RECONNECT_FOR:
                raise
            time.sleep(0.2)


def subscribe(client: ServerClient, body: SubscriptionCreate) -> Subscription:
    response = client.request(
        "POST", "/v1/event-subscriptions", once=True, json=body.model_dump(mode="json")
    )
    return Subscription.model_validate(response.json())


def subscriptions(client: ServerClient) -> SubscriptionList:
    response = client.request("GET", "/v1/event-subscriptions")
    return SubscriptionList.model_validate(response.json())


def unsubscribe(client: ServerClient, subscription_id: str) -> None:
    client.request("DELETE", f"/v1/event-subscriptions/{subscription_id}")
