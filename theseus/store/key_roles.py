"""What a key of the mirror is to the readers of ``theseus.store.cache`` (pure).

``record_at``: the record the state holds for a key, which the cache hands its observers (the
event stream, the groups' tallies) before and after each change. ``plans_from``: whether a
change can alter what the leader's next reconcile pass plans; the cache advances its
``work_revision`` on those, and the leader waits on that between passes
(``theseus.server.leader``).
"""

from __future__ import annotations

from theseus.model.state import ClusterState
from theseus.store import keys


def record_at(state: ClusterState, key: str) -> object:
    """The record ``state`` holds for ``key`` (None if none, or not kept)."""
    if key.startswith(keys.REGISTRY):
        return state.registry.get(key)
    for prefix, table in (
        (keys.TASKS, state.tasks),
        (keys.STATUS, state.statuses),
        (keys.GROUPS, state.groups),
        (keys.NODES, state.nodes),
        (keys.ALIVE, state.alive),
        (keys.CONTROL, state.controls),
        (keys.DEPLOYMENTS, state.deployments),
    ):
        if key.startswith(prefix):
            return table.get(key.removeprefix(prefix))
    return None


def plans_from(key: str, live_set_changed: bool) -> bool:
    """Whether a change at ``key`` can alter what a reconcile pass plans: every change but a
    live node's TTL changed (``live_set_changed`` False: the same nodes are alive), the
    registry (the leader plans from its own view of what it wrote, and compares it with
    etcd's on a timer), the access keys and the servers' heard records (the leader's sweep
    reads those: ``theseus.server.liveness``).

    At 5,000 nodes a registration storm is followed by some 4,000 leases replaced, as the
    cluster's size calls for longer ones (``theseus.server.heartbeats``), and each woke the
    leader for a pass that copied the whole state and found nothing to do."""
    if key.startswith(keys.ALIVE):
        return live_set_changed
    return not key.startswith((keys.REGISTRY, keys.ACL, keys.HEARD))
