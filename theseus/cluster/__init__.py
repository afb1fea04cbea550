"""A whole Theseus cluster on this machine: etcd, one server and N agents as child processes.

``theseus up`` / ``theseus down`` (``theseus.cli.cluster_cmds``) call ``local.up`` and
``local.down``. The pure parts (command lines, the state file) live in ``commands`` and
``statefile`` so that they can be unit-tested without starting anything.
"""
