"""Prometheus counters of the event stream and its callbacks, on ``prometheus_client``'s
default registry (each server's ``GET /metrics`` registers them in its own registry too:
``theseus.server.app``): the stream's clients now, the
events derived, and the callback deliveries by outcome. Counted by
``theseus.server.events.feed`` (derived), ``theseus.server.routes.events`` (clients) and
``theseus.server.events.callbacks`` (deliveries); several servers in one process (unit tests)
share them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STREAM_CLIENTS = Gauge(
    "theseus_event_stream_clients", "Clients reading this server's event stream (GET /v1/events)"
)
EVENTS_DERIVED = Counter(
    "theseus_events_derived_total", "Events derived from the etcd changes this server applied"
)
CALLBACK_POSTS = Counter(
    "theseus_event_callback_posts_total",
    "Callback deliveries (POSTs of a batch of events) by outcome",
    ["outcome"],  # acknowledged, failed
)
CALLBACK_EVENTS = Counter(
    "theseus_event_callback_events_total", "Events acknowledged by callback receivers"
)
COLLECTORS = (STREAM_CLIENTS, EVENTS_DERIVED, CALLBACK_POSTS, CALLBACK_EVENTS)
