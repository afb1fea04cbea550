"""``theseus.store.commit.pack``, ``pack_ops`` and ``single``: how many writes share one
transaction.

Many writes (a plan, the agents' reports) go in transactions of at most ``BATCH_OPS``, so a
user's write waits behind small ones in etcd; one document's writes still go in a single
transaction up to etcd's own limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theseus.store.base import Delete, ModRevisionIs, Op, Put
from theseus.store.commit import BATCH_OPS, Txn, TxnTooLarge, pack, pack_ops, single
from theseus.store.limits import MAX_TXN_BYTES, MAX_TXN_OPS

FENCE = ModRevisionIs("/fence", 7)


def puts(count: int, prefix: str = "k") -> Txn:
    return Txn(tuple(Put(f"/{prefix}/{i}", b"v") for i in range(count)))


def test_many_small_units_fill_transactions_of_the_batch_size_in_order() -> None:
    units = [puts(1, f"u{i}") for i in range(2 * BATCH_OPS + 3)]
    packed = pack(units, shared=[FENCE])
    assert [len(txn.ops) for txn in packed] == [BATCH_OPS, BATCH_OPS, 3]
    assert [op.key for txn in packed for op in txn.ops] == [u.ops[0].key for u in units]
    assert all(txn.guards == [FENCE] for txn in packed)


def test_a_unit_is_never_split_and_one_beyond_the_batch_size_goes_alone() -> None:
    big = puts(BATCH_OPS + 10, "big")
    packed = pack([puts(5, "a"), big, puts(5, "b")])
    assert [len(txn.ops) for txn in packed] == [5, BATCH_OPS + 10, 5]
    assert packed[1].ops == list(big.ops)


def test_units_that_would_pass_the_batch_size_together_are_not_merged() -> None:
    half = BATCH_OPS // 2 + 1
    packed = pack([puts(half, "a"), puts(half, "b")])
    assert [len(txn.ops) for txn in packed] == [half, half]


def test_a_unit_beyond_etcds_limit_is_refused() -> None:
    with pytest.raises(TxnTooLarge):
        pack([puts(MAX_TXN_OPS + 1)])


def test_a_single_transaction_may_hold_up_to_etcds_limit() -> None:
    units = [puts(1, f"u{i}") for i in range(MAX_TXN_OPS)]
    txn = single(units)
    assert txn is not None and len(txn.ops) == MAX_TXN_OPS
    with pytest.raises(TxnTooLarge):
        single([*units, puts(1, "one-more")])


# Operations of every size: small ones, deletes, and values large enough that a few fill a
# transaction's bytes before its count (MAX_TXN_BYTES / 3 each).
OPS = st.lists(
    st.one_of(
        st.builds(Put, st.just("/k/small"), st.binary(max_size=40)),
        st.builds(Delete, st.just("/k/gone")),
        st.builds(Put, st.just("/k/big"), st.just(b"x" * (MAX_TXN_BYTES // 3))),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(min_value=1, max_value=8))
def test_pack_ops_makes_the_transactions_pack_makes_of_one_op_units(
    ops: list[Op], batch_ops: int
) -> None:
    units = [Txn((op,)) for op in ops]
    assert pack_ops(ops, [FENCE], batch_ops) == pack(units, [FENCE], batch_ops)


def test_pack_ops_refuses_an_operation_beyond_etcds_limit() -> None:
    with pytest.raises(TxnTooLarge):
        pack_ops([Put("/small", b"v"), Put("/huge", b"x" * (MAX_TXN_BYTES + 1))])
