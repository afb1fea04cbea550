"""The launcher: a whole Theseus cluster on this machine, etcd, servers and agents as child
processes, for ``theseus up`` / ``theseus down``, the tests and the benchmarks.

- ``argv``: one frozen description per process and its command line (pure).
- ``commands``: what ``theseus up`` starts, its options mapped onto those descriptions (pure).
- ``supervise``: starting, watching, restarting and stopping processes by their own PID.
- ``waiting``: ``wait_until``, the one polling loop with a deadline.
- ``ports``: free loopback ports for the tests' and benchmarks' processes.
- ``local``: ``theseus up`` and ``theseus down`` (called by ``theseus.cli.cluster_cmds``).
- ``statefile`` and ``procs``: the record ``up`` leaves for ``down``, and proving a recorded
  PID still ours before ``down`` signals it.

The test kit (``tests/kit/cluster.py``) and the benchmarks (``bench/procs.py``) build their
own processes from ``argv`` and run them with ``supervise``.
"""
