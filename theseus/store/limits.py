"""What one etcd transaction may hold: the single limit every chunked commit respects.

Theseus starts its etcd members with ``--max-txn-ops MAX_TXN_OPS`` (``theseus.cluster``), and
every writer (``theseus.store``) splits its writes to fit. etcd counts a transaction's
comparisons and its operations separately, each against this limit.
"""

from __future__ import annotations

MAX_TXN_OPS = 1024
