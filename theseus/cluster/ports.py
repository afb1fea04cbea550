"""Free loopback ports for the processes the test kit (``tests/kit/cluster.py``) and the
benchmarks (``bench/``) start; ``theseus up`` takes its ports from its options instead.

The ports come from 20000-29999: below the kernel's ephemeral range (32768-60999 by default)
and Theseus's host ports (31000-32000). A port the kernel hands out (port 0, or an outgoing
connection's source port) could be taken by a client between this check and the child's
bind; these never are. Each port is handed out once per process, from a start that depends on
the PID, so that the processes of one test run do not race each other for the same ports.
"""

from __future__ import annotations

import os
import socket

PORTS = range(20_000, 30_000)
_next_port = PORTS.start + (os.getpid() * 7919) % len(PORTS)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to at ``host``, not handed out before by this process."""
    global _next_port
    for _ in range(len(PORTS)):
        port = _next_port
        _next_port = port + 1 if port + 1 < PORTS.stop else PORTS.start
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1} on {host}")


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A free port whose successor is free too (an etcd member of ``theseus up`` listens for
    its peers on its client port + 1)."""
    for _ in range(len(PORTS)):
        port = free_port(host)
        if free_port(host) == port + 1:
            return port
    raise RuntimeError(f"no two consecutive free ports in {PORTS.start}-{PORTS.stop - 1}")
