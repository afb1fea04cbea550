"""The one way Theseus writes many things to the store: packed into guarded transactions
that fit etcd's limits, committed in order, a few at a time when order does not matter.

A ``Txn`` is a unit that must be committed whole: its operations and the guards they depend
on (a group record and the check that nobody changed it since it was read, say). ``pack``
puts consecutive units together into transactions of at most ``BATCH_OPS`` writes (a unit
larger than that goes alone, whole, up to ``theseus.store.limits``' bounds), each also
carrying the ``shared`` guards (a leader's fence); ``commit_all`` commits them. Writes that
are independent of one another (a plan's, the agents' statuses) are packed by ``pack_ops``,
the same transactions without a unit per write, and committed by ``commit_txns``. Callers: the
leader's plan and deployment steps (``theseus.server.leader``), the agents' reports
(``theseus.server.status_commits``), and the API's writes (``theseus.server.writes``), which
need one transaction for a whole document and use ``single`` to get it or be told it is too
large.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from theseus.store.base import Guard, Op, Put, Store
from theseus.store.limits import MAX_TXN_BYTES, MAX_TXN_OPS

# A plan's transactions in flight at once. One more than one keeps etcd busy while the next is
# sent; every one more is one more that a user's write (a scale, a deploy) waits behind in etcd's
# queue. At 5,000 nodes, a plan of 50 transactions of 1,024 writes took as long with 2 as with 4
# (7.1-7.5 s), and a small deploy's slowest answers during it went from 0.6-0.8 s to 0.5-0.6 s.
# Since ``BATCH_OPS`` the plan's transactions are a quarter of that size and its commit is paced
# by their round trips (7.6-8.1 s against 4.6-5.2 s), though tasks run no later: more in flight
# is the lever if that ever matters (BENCHMARKS.md, issue 17, sixteenth session).
PARALLEL_TXNS = 2
# The writes packed into one transaction when many are committed (a plan, the agents'
# reports). etcd applies transactions one after the other, each whole, so a user's small
# write waits behind those in flight: during a 5,000-node deploy one of 1,024 puts took etcd
# about 100 ms, and a small deploy's slowest answers were two of them. With 256, its
# commit's p90 fell from 160-173 to 89-112 ms, for two thirds more transactions of the same
# writes and no more CPU (BENCHMARKS.md, issue 17, sixteenth session; 128 was no better).
BATCH_OPS = 256


class TxnTooLarge(ValueError):
    """A unit that must be committed whole does not fit in one transaction."""


@dataclass(frozen=True)
class Txn:
    """Operations committed together, if every guard holds."""

    ops: Sequence[Op]
    guards: Sequence[Guard] = ()

    @property
    def size(self) -> int:
        """Bytes of keys and values: what counts against ``MAX_TXN_BYTES``."""
        return sum(op_size(op) for op in self.ops)


def op_size(op: Op) -> int:
    """An operation's bytes against ``MAX_TXN_BYTES``: its key, and a put's value."""
    return len(op.key) + (len(op.value) if isinstance(op, Put) else 0)


@dataclass
class Committed:
    """What ``commit_all`` did: the highest revision it wrote (0: none), and how many
    transactions a guard refused."""

    revision: int = 0
    refused: int = 0


def pack(
    units: Iterable[Txn], shared: Sequence[Guard] = (), batch_ops: int = BATCH_OPS
) -> list[Txn]:
    """Consecutive units merged into transactions of at most ``batch_ops`` operations and
    within etcd's limits, order kept; each one carries ``shared`` too. A unit of more than
    ``batch_ops`` operations is a transaction of its own. ``TxnTooLarge`` if one unit alone
    does not fit etcd's limits."""
    packed: list[Txn] = []
    ops: list[Op] = []
    guards: list[Guard] = []
    size = 0

    def close() -> None:
        nonlocal ops, guards, size
        if ops or guards:
            packed.append(Txn(ops, [*shared, *guards]))
        ops, guards, size = [], [], 0

    for unit in units:
        unit_size = unit.size
        if not fits(len(unit.ops), len(unit.guards) + len(shared), unit_size):
            raise TxnTooLarge(
                f"{len(unit.ops)} operations and {len(unit.guards)} guards "
                f"({unit_size} bytes) do not fit in one etcd transaction"
            )
        if len(ops) + len(unit.ops) > batch_ops or not fits(
            len(ops) + len(unit.ops),
            len(shared) + len(guards) + len(unit.guards),
            size + unit_size,
        ):
            close()
        ops.extend(unit.ops)
        guards.extend(unit.guards)
        size += unit_size
    close()
    return packed


def pack_ops(
    ops: Sequence[Op], shared: Sequence[Guard] = (), batch_ops: int = BATCH_OPS
) -> list[Txn]:
    """``pack`` of units of one operation each (writes independent of one another: a plan's,
    the agents' statuses), without making the units: the same transactions. Making a unit per
    write of a 50,000-write plan and packing them held the event loop about 350 ms
    (BENCHMARKS.md, issue 17's twenty-first session)."""
    packed: list[Txn] = []
    start = count = size = 0
    for i, op in enumerate(ops):
        bytes_ = op_size(op)
        if count + 1 > batch_ops or not fits(count + 1, len(shared), size + bytes_):
            if not fits(1, len(shared), bytes_):
                raise TxnTooLarge(f"one operation ({bytes_} bytes) does not fit in a transaction")
            packed.append(Txn(ops[start:i], list(shared)))
            start, count, size = i, 0, 0
        count += 1
        size += bytes_
    if count:
        packed.append(Txn(ops[start:], list(shared)))
    return packed


def fits(ops: int, guards: int, size: int) -> bool:
    return ops <= MAX_TXN_OPS and guards <= MAX_TXN_OPS and size <= MAX_TXN_BYTES


def single(units: Iterable[Txn]) -> Txn | None:
    """All of ``units`` as one transaction (None when there is nothing to write);
    ``TxnTooLarge`` if they do not fit in one."""
    packed = pack(units, batch_ops=MAX_TXN_OPS)
    if len(packed) > 1:
        ops = sum(len(t.ops) for t in packed)
        raise TxnTooLarge(f"this change needs {ops} etcd operations in one transaction; split it")
    return packed[0] if packed else None


async def commit_all(
    store: Store,
    units: Iterable[Txn],
    shared: Sequence[Guard] = (),
    parallel: int = 1,
    stop_on_refusal: bool = False,
) -> Committed:
    """Pack ``units`` (``pack``) and commit the transactions, up to ``parallel`` at a time
    when no key is written by two of them (else one after the other, in order).

    ``stop_on_refusal``: once a transaction is refused, commit no further one (a leader whose
    fence failed must stop writing; a rebuild guarded key by key starts over). Transactions
    already in flight still complete."""
    return await commit_txns(store, pack(units, shared), parallel, stop_on_refusal)


async def commit_txns(
    store: Store, txns: list[Txn], parallel: int = 1, stop_on_refusal: bool = False
) -> Committed:
    """``commit_all`` of transactions packed already (``pack``, ``pack_ops``)."""
    if parallel > 1 and _repeats_a_key(txns):
        parallel = 1
    gate = asyncio.Semaphore(max(1, parallel))
    result = Committed()

    async def write(txn: Txn) -> None:
        async with gate:
            if stop_on_refusal and result.refused:
                return
            revision = await store.commit(txn.ops, txn.guards)
            if revision is None:
                result.refused += 1
            else:
                result.revision = max(result.revision, revision)

    if parallel == 1:
        for txn in txns:
            await write(txn)
    else:
        await asyncio.gather(*(write(txn) for txn in txns))
    return result


def _repeats_a_key(txns: list[Txn]) -> bool:
    keys = [op.key for txn in txns for op in txn.ops]
    return len(set(keys)) != len(keys)
