"""Faults injected into the test bed's hosts: a whole host killed at once, as a power cut
would; a host cut off the network while everything on it keeps running, then healed. Called by
the across-hosts and partition tests (``tests/integration/test_across_hosts.py``,
``test_partitions.py``) and the test bed benchmark (``bench/testbed.py``).

A killed host stays dead: ``tests.testbed.down`` removes what is left of it (its namespace,
veth, engine directories) with the rest of the bed. A cut host is healed by ``heal_host``, and
``down`` removes its link whatever its state.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

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


def cut_host(host: HostPlan) -> None:
    """Take the root namespace's end of ``host``'s veth down: the host loses its link to every
    other host and to the root namespace (its sshd included), while its processes, engine and
    containers run on and reach nothing. Its engine is still reached on its unix socket."""
    subprocess.run(["ip", "link", "set", host.veth, "down"], check=True, capture_output=True)


def heal_host(host: HostPlan) -> None:
    """Bring ``host``'s link back (``cut_host`` undone)."""
    subprocess.run(["ip", "link", "set", host.veth, "up"], check=True, capture_output=True)
