"""What one etcd transaction may hold: the limits every chunked commit respects.

Theseus starts its etcd members with ``--max-txn-ops MAX_TXN_OPS`` (``theseus.cluster``), and
every writer goes through ``theseus.store.commit``, which packs writes into transactions that
fit. etcd counts a transaction's comparisons and its operations separately, each against
``MAX_TXN_OPS``. It also refuses a request over ``--max-request-bytes`` (1.5 MiB by default):
``MAX_TXN_BYTES`` keeps the keys and values of one transaction well under it, with room for
the encoding's own overhead.
"""

from __future__ import annotations

MAX_TXN_OPS = 1024
MAX_TXN_BYTES = 1024 * 1024
