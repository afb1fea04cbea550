"""Everything that touches etcd; the server is the only process that imports this package.

* ``base``: the ``Store`` protocol and its vocabulary (puts, deletes, guards, watch events);
  ``etcd`` and ``memory``: its two implementations (a real etcd cluster; in memory, for tests).
* ``keys`` and ``encoding``: where each record lives and how decisions become operations.
* ``limits`` and ``commit``: what one transaction may hold, and the one packed, guarded commit.
* ``cache``: every server's in-memory mirror of the state, kept by one watch.
* ``leadership``: the election, its lease and the fence of each term.
"""
