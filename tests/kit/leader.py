"""A leader on the in-memory store, for the unit tests of what it plans and when
(test_leader_scope, test_leader_wakes): the cluster it starts from, and the leader itself."""

from __future__ import annotations

from typing import Any

from prometheus_client.registry import CollectorRegistry

from theseus.model.groups import GroupRecord
from theseus.model.nodes import NodeRecord
from theseus.server.leader import Leader
from theseus.server.metrics import ServerMetrics
from theseus.store import keys
from theseus.store.base import Put
from theseus.store.cache import StateCache
from theseus.store.encoding import alive_put, encode, node_put
from theseus.store.leadership import Leadership
from theseus.store.memory import MemoryStore


async def commit_groups_and_live_node(
    store: MemoryStore, groups: list[GroupRecord], node: NodeRecord
) -> int:
    """``groups`` and ``node`` written, the node alive with a TTL of 30 s (never heard after:
    lost 30 s after the leader's election); the revision."""
    revision = await store.commit(
        [
            *(Put(keys.group_key(group.group_key.key), encode(group)) for group in groups),
            node_put(node),
            alive_put(node.name, 0.0, 30),
        ]
    )
    assert revision is not None
    return revision


def make_leader(
    store: MemoryStore, cache: StateCache, **options: Any
) -> tuple[Leader, ServerMetrics]:
    """A leader (not started) with metrics of its own and no registry repair to speak of;
    ``options`` go to ``Leader``."""
    metrics = ServerMetrics(CollectorRegistry())
    leadership = Leadership(store, cache, "me", lease_ttl=5)
    options.setdefault("registry_repair_interval", 3600)
    return Leader(store, cache, leadership, metrics=metrics, **options), metrics
