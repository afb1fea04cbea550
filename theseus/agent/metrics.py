"""The agent's Prometheus metrics: one ``AgentMetrics`` per agent, its own registry.

``GET /metrics`` on the agent's HTTP endpoint (``theseus.agent.http``) renders
``AgentMetrics.registry``. The registry is the agent's own, passed explicitly (never
``prometheus_client``'s global default), so that several agents in one process (the unit
tests, the hollow nodes of ``bench/hollow.py``) keep their figures apart.

More collectors join it with ``agent.metrics.registry.register(collector)`` (a
``prometheus_client.registry.Collector``, whose ``collect`` runs at each scrape on the agent's
event loop): the per-task container metrics do so.

Counted here: heartbeats sent and failed (``counted_heartbeat`` wraps the heartbeat call of
``theseus.agent.agent``), and, read at scrape time, the seconds since a server last answered
(what the agent's fencing, ``theseus.agent.fencing``, goes by). docs/observability.md lists
every metric.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    disable_created_metrics,
)
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from theseus import __version__
from theseus.api.client import ApiError, ServerUnreachable

T = TypeVar("T")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class AgentMetrics:
    def __init__(self, node: str, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            disable_created_metrics()  # type: ignore[no-untyped-call]  # as the server's (theseus.server.metrics)
            registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        Info("theseus_agent", "This agent: its node and version.", registry=registry).info(
            {"node": node, "version": __version__}
        )
        self.heartbeats_sent = Counter(
            "theseus_agent_heartbeats_sent",
            "Heartbeats this agent sent (retries included).",
            registry=registry,
        )
        failed = Counter(
            "theseus_agent_heartbeats_failed",
            "Heartbeats that got no success, by reason (unreachable: no server answered; "
            "rejected: a server answered with an error, e.g. 404 for a node declared lost).",
            ["reason"],
            registry=registry,
        )
        self._unreachable = failed.labels("unreachable")
        self._rejected = failed.labels("rejected")
        self.last_contact = Gauge(
            "theseus_agent_seconds_since_server_contact",
            "Seconds since a server last answered this agent with success (-1: never).",
            registry=registry,
        )

    def contact_by(self, last_contact: Callable[[], float | None]) -> None:
        """Read ``last_contact`` (a ``time.monotonic()`` or None) at each scrape."""

        def age() -> float:
            last = last_contact()
            return -1.0 if last is None else time.monotonic() - last

        self.last_contact.set_function(age)

    async def counted_heartbeat(self, call: Callable[[], Awaitable[T]]) -> T:
        self.heartbeats_sent.inc()
        try:
            return await call()
        except ServerUnreachable:
            self._unreachable.inc()
            raise
        except ApiError:
            self._rejected.inc()
            raise


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format (``CONTENT_TYPE``)."""
    return _generate_latest(registry)
