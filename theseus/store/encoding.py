"""How Theseus's decisions become store operations: the one place that knows which key each
record goes to and how it is encoded (JSON), so that writers never spell a key themselves.

* ``encode_plan``: a reconcile pass's ``Plan`` (tasks, statuses, registry entries), with the
  records behind its puts so that the cache need not parse them back (``StateCache.expect``).
* ``encode_group_writes``: the writes of controlled rollouts (``GroupWrite``: a group record,
  its spec versions, its deployments), each unit guarded by the mod revision of what it
  changes as the caller saw it, so that a decision taken on a stale view is refused and taken
  again. Used by the API's writer (deploy, scale, remove, rollback, cancel) and by the leader
  (progress, failure, revert).
* ``encode_registry_repair``: ``/cleanup``'s rebuild of the registry, each key guarded by its
  mod revision so that it never overwrites a change it has not seen.
* single records: task statuses, node records, liveness, the operator's node controls.

Task records and statuses, nearly every byte a deploy writes, leave out the fields at their
defaults (``encode_compact``): a task record with the smallest spec was 930 bytes of JSON,
now 202, a status 278 and now 151 (``bench/record_sizes.py``). Every byte is carried by
etcd's raft log and WAL, and as base64 JSON to each server's watch, on cores the servers
share with etcd. A reader, any version, fills the defaults back in, so nothing changes for
it; the flip side is that a field's default is part of the stored format
(``tests/unit/test_stored_formats.py`` pins them). The other records are few, and written whole.

Pure: nothing here talks to the store (``theseus.store.commit`` does). The key layout is
``theseus.store.keys``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from theseus.model.nodes import NodeControl, NodeRecord
from theseus.model.state import ClusterState
from theseus.model.tasks import TaskRecord, TaskStatus
from theseus.reconciler.deployments import GroupWrite
from theseus.reconciler.reconcile import Plan
from theseus.reconciler.registry import RegistryDiff
from theseus.store import keys
from theseus.store.base import Delete, Guard, ModRevisionIs, Op, Put
from theseus.store.commit import Txn, pack_ops
from theseus.store.expected import Expected


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json().encode()


def encode_compact(record: BaseModel) -> bytes:
    """``record`` without the fields at their defaults (the hot records: see above)."""
    return record.model_dump_json(exclude_defaults=True).encode()


def encode_task(task: TaskRecord, spec: bytes) -> bytes:
    """``task``'s record around ``spec``, its spec already encoded (``encode_compact``): a
    plan's tasks share a few specs, and the spec was half of encoding each of them. Its place
    among the fields changes nothing to a reader."""
    fields = task.model_dump_json(exclude={"spec"}, exclude_defaults=True).encode()
    return fields[:-1] + b',"spec":' + spec + b"}"


@dataclass
class EncodedPlan:
    """A plan as store operations, and the records behind the puts that hold one (with
    their encodings: what the cache takes back as it is when the watch returns them)."""

    ops: list[Op]
    expected: dict[str, Expected]

    def transactions(self, shared: Sequence[Guard] = ()) -> list[Txn]:
        """The operations packed into transactions, each carrying ``shared``: a plan's
        writes are independent of one another (``pack_ops``)."""
        return pack_ops(self.ops, shared)


def encode_plan(plan: Plan) -> EncodedPlan:
    ops: list[Op] = []
    expected: dict[str, Expected] = {}
    specs: dict[int, bytes] = {}  # by id: the plan holds every spec until it returns
    # Grouped by node: each transaction wakes the assignment long-poll of every node it
    # touches, so a node's new tasks had better arrive together (a 10,000-task deploy
    # otherwise wakes each of 1,000 nodes about once per task).
    for task in sorted(plan.task_puts.values(), key=lambda t: t.node or ""):
        key = keys.task_key(task.id)
        spec = specs.get(id(task.spec))
        if spec is None:
            spec = specs[id(task.spec)] = encode_compact(task.spec)
        value = encode_task(task, spec)
        ops.append(Put(key, value))
        expected[key] = Expected(value, task)
    for status in plan.status_puts.values():
        key = keys.status_key(status.task_id)
        value = encode_compact(status)
        ops.append(Put(key, value))
        expected[key] = Expected(value, status)
    ops.extend(Delete(keys.task_key(task_id)) for task_id in plan.task_deletes)
    ops.extend(Delete(keys.status_key(task_id)) for task_id in plan.status_deletes)
    ops.extend(Put(key, value) for key, value in plan.registry_puts.items())
    ops.extend(Delete(key) for key in plan.registry_deletes)
    return EncodedPlan(ops, expected)


def encode_group_writes(state: ClusterState, writes: list[GroupWrite]) -> list[Txn]:
    """One unit per write, guarded by what ``state`` saw of the group (unless the write only
    touches deployments) and of every deployment it rewrites."""
    return [_encode_group_write(state, write) for write in writes]


def _encode_group_write(state: ClusterState, write: GroupWrite) -> Txn:
    ops: list[Op] = []
    guards: list[Guard] = []
    key = keys.group_key(write.group)
    if write.record is not None:
        ops.append(Put(key, encode(write.record)))
    elif write.remove:
        ops.append(Delete(key))
    if write.touches_group:
        guards.append(ModRevisionIs(key, state.group_revisions.get(write.group, 0)))
    for version in write.versions:
        ops.append(Put(keys.version_key(write.group, version.number), encode(version)))
    ops.extend(Delete(keys.version_key(write.group, n)) for n in write.drop_versions)
    for deployment in write.deployments:
        deployment_key = keys.deployment_key(deployment.id)
        ops.append(Put(deployment_key, encode(deployment)))
        known = state.deployment_revisions.get(deployment.id, 0)
        guards.append(ModRevisionIs(deployment_key, known))
    return Txn(ops, guards)


def encode_forgotten_deployments(deployment_ids: list[str]) -> list[Txn]:
    return [Txn((Delete(keys.deployment_key(d)),)) for d in deployment_ids]


def encode_registry_repair(state: ClusterState, diff: RegistryDiff) -> list[Txn]:
    """The diff's puts and deletes, each guarded by the key's mod revision in ``state``."""
    ops: list[Op] = [Put(key, value) for key, value in diff.puts.items()]
    ops += [Delete(key) for key in sorted(diff.deletes)]
    return [
        Txn((op,), (ModRevisionIs(op.key, state.registry_revisions.get(op.key, 0)),)) for op in ops
    ]


def status_put(status: TaskStatus) -> Put:
    return Put(keys.status_key(status.task_id), encode_compact(status))


def node_put(record: NodeRecord) -> Put:
    return Put(keys.node_key(record.name), encode(record))


def control_op(node: str, control: NodeControl | None) -> Op:
    """The operator's say over ``node``; ``None`` clears it (eligible again)."""
    key = keys.control_key(node)
    return Put(key, encode(control)) if control else Delete(key)


def alive_put(node: str, at: float, ttl: int) -> Put:
    """A node's liveness key: when it was written, and how long the node may go unheard
    before the leader deletes it (``theseus.server.liveness``; every server must know it)."""
    return Put(keys.alive_key(node), f"{at:.3f} {ttl}".encode())


def alive_ttl(value: bytes) -> int | None:
    """The TTL recorded in an ``alive`` value; None if there is none (older servers wrote
    only the time)."""
    parts = value.split()
    if len(parts) != 2:
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None
