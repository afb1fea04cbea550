"""etcd operations for the writes of controlled rollouts (``theseus.reconciler.deployments``).

Used by the API's writer (deploy, scale, remove, rollback, cancel) and by the leader (progress,
failure, revert). Each ``GroupWrite`` is guarded by the mod revision of what it changes as the
caller saw it (its group, unless it only touches deployments, and every deployment it
rewrites), so a decision taken on a stale view is refused and taken again.
"""

from __future__ import annotations

from theseus.model.state import ClusterState
from theseus.reconciler.deployments import GroupWrite
from theseus.store import keys
from theseus.store.etcd import Delete, Guard, ModRevisionIs, Op, Put

# What etcd lets one transaction hold: Theseus starts its etcd with ``--max-txn-ops 1024``
# (``theseus.cluster.commands``); etcd counts guards and operations separately.
ETCD_MAX_TXN_OPS = 1024


def encode_writes(state: ClusterState, writes: list[GroupWrite]) -> tuple[list[Op], list[Guard]]:
    ops: list[Op] = []
    guards: list[Guard] = []
    for write in writes:
        key = keys.group_key(write.group)
        if write.record is not None:
            ops.append(Put(key, write.record.model_dump_json().encode()))
        elif write.remove:
            ops.append(Delete(key))
        if write.touches_group:
            guards.append(ModRevisionIs(key, state.group_revisions.get(write.group, 0)))
        for version in write.versions:
            version_key = keys.version_key(write.group, version.number)
            ops.append(Put(version_key, version.model_dump_json().encode()))
        ops.extend(Delete(keys.version_key(write.group, n)) for n in write.drop_versions)
        for deployment in write.deployments:
            deployment_key = keys.deployment_key(deployment.id)
            ops.append(Put(deployment_key, deployment.model_dump_json().encode()))
            known = state.deployment_revisions.get(deployment.id, 0)
            guards.append(ModRevisionIs(deployment_key, known))
    return ops, guards


def too_large(ops: list[Op], guards: list[Guard]) -> bool:
    return max(len(ops), len(guards)) > ETCD_MAX_TXN_OPS
