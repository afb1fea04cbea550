"""``/proc`` files → figures (pure): a network namespace's counters and a process tree's use.

Called by ``theseus.agent.stats.reader``: ``/proc/<pid>/net/dev`` of a container's process
gives its network namespace's counters (the host's ``lo`` excluded); the process driver's
tasks, which have no cgroup of their own, are measured from ``/proc/<pid>/stat`` and
``/proc/<pid>/status`` of every process in the task's process group.
"""

from __future__ import annotations

from dataclasses import dataclass

from theseus.agent.stats.samples import Reading

# /proc/<pid>/stat counts CPU time in USER_HZ ticks (100 on every Linux ABI that matters).
USER_HZ = 100


@dataclass(frozen=True)
class NetCounters:
    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int


def parse_net_dev(text: str) -> NetCounters | None:
    """``/proc/<pid>/net/dev`` → the sum over its interfaces but the loopback; ``None`` when
    the text holds no interface table."""
    rx_bytes = rx_packets = tx_bytes = tx_packets = 0
    seen = False
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep or "|" in line:
            continue  # the two header lines
        fields = rest.split()
        if len(fields) < 10:
            continue
        seen = True
        if name.strip() == "lo":
            continue
        rx_bytes += int(fields[0])
        rx_packets += int(fields[1])
        tx_bytes += int(fields[8])
        tx_packets += int(fields[9])
    return NetCounters(rx_bytes, rx_packets, tx_bytes, tx_packets) if seen else None


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/<pid>/stat`` says of one process."""

    pid: int
    pgrp: int
    user_seconds: float  # its own, plus that of its children it has waited for
    system_seconds: float


def parse_proc_stat(text: str) -> ProcStat | None:
    """``/proc/<pid>/stat``; the command (field 2) may hold spaces and parentheses, so the
    fields are counted from its last ``)``."""
    head, sep, tail = text.rpartition(")")
    if not sep:
        return None
    fields = tail.split()
    try:
        pid = int(head.split("(", 1)[0])
        # After ")": state(3) ppid(4) pgrp(5) ... utime(14) stime(15) cutime(16) cstime(17)
        pgrp = int(fields[2])
        utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    except (ValueError, IndexError):
        return None
    return ProcStat(pid, pgrp, (utime + cutime) / USER_HZ, (stime + cstime) / USER_HZ)


def parse_status_rss(text: str) -> int | None:
    """``VmRSS`` of ``/proc/<pid>/status`` in bytes (``None`` for a kernel thread or zombie)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            try:
                return int(parts[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def tree_reading(stats: list[ProcStat], rss: list[int]) -> Reading:
    """A process group's figures: CPU of its live processes (and of the children they
    waited for), resident memory summed (pages shared between them count more than once:
    an upper bound), no cache, limit or OOM figures (there is no cgroup to read them from)."""
    user = sum(s.user_seconds for s in stats)
    system = sum(s.system_seconds for s in stats)
    memory = sum(rss)
    return Reading(
        cpu_seconds=user + system,
        cpu_user_seconds=user,
        cpu_system_seconds=system,
        memory_usage_bytes=memory,
        memory_working_set_bytes=memory,
        memory_rss_bytes=memory,
        processes=len(stats),
    )
