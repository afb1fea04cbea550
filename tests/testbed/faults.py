"""Faults injected into the test bed's hosts: a whole host killed at once, as a power cut
would. Called by the across-hosts tests (``tests/integration/test_across_hosts.py``) and the
test bed benchmark (``bench/testbed.py``); the partitions of the next issue belong here too.

A killed host stays dead: ``tests.testbed.down`` removes what is left of it (its namespace,
veth, engine directories) with the rest of the bed.
"""

from __future__ import annotations

import contextlib
import os
import signal

from tests.testbed import engines, processes
from tests.testbed.plan import HostPlan


def kill_host(host: HostPlan) -> int:
    """SIGKILL every process of ``host`` at once: those in its network namespace (the agent,
    its supervisor, sshd, the engine, containerd and its shims) and its containers' (in
    namespaces of their own, found by the engine's cgroup parent). How many were killed."""
    pids = set(processes.netns_pids(host.netns)) | engines.cgroup_pids(host.cgroup_parent)
    pids.discard(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
