"""Reads the kernel's files for a task's processes: the only I/O of the task metrics.

Called by ``theseus.agent.stats.collector`` in a worker thread, once per pass. A container's
cgroup directories are found once from ``/proc/<pid>/cgroup`` (``ContainerReader``, which
works for either Docker cgroup driver and any cgroup parent) and its files read at every pass;
its network counters come from ``/proc/<pid>/net/dev`` (its own namespace, seen through its
process). The process driver's tasks are process groups: one scan of ``/proc`` per pass
(``process_groups``) measures all of them. Parsing is in ``cgroups`` and ``procfs``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping

from theseus.agent.drivers.base import StatsTarget
from theseus.agent.stats.cgroups import cgroup_dirs, v1_reading, v2_reading
from theseus.agent.stats.procfs import (
    ProcStat,
    parse_net_dev,
    parse_proc_stat,
    parse_status_rss,
    tree_reading,
)
from theseus.agent.stats.samples import Reading

CGROUP_ROOT = "/sys/fs/cgroup"
PROC = "/proc"


def is_cgroup_v2(root: str = CGROUP_ROOT) -> bool:
    """The unified hierarchy is mounted at the root (``cgroup.controllers`` exists only there
    on v2; a hybrid v1 host mounts v2 at ``unified/`` without controllers)."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def read_text(path: str) -> str | None:
    """The whole (small) file; ``None`` when it cannot be read. Plain ``os`` calls: a buffered
    text file costs more than the kernel's own work here, at ten files per container."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", errors="replace")


def read_files(dirs: Mapping[str, str]) -> dict[str, str]:
    """Each file's contents (name → text); a missing or unreadable one is left out."""
    contents: dict[str, str] = {}
    for name, directory in dirs.items():
        text = read_text(f"{directory}/{name}")
        if text is not None:
            contents[name] = text
    return contents


class ContainerReader:
    """One container process: its cgroup directories, resolved at the first read."""

    def __init__(
        self, target: StatsTarget, v2: bool, proc: str = PROC, root: str = CGROUP_ROOT
    ) -> None:
        self.target = target
        self._v2, self._proc, self._root = v2, proc, root
        self._dirs: dict[str, str] | None = None

    def read(self) -> Reading | None:
        """The container's figures now; ``None`` when it is gone (its process, or every
        file of its cgroup)."""
        if self._dirs is None:
            text = read_text(f"{self._proc}/{self.target.pid}/cgroup")
            if text is None:
                return None
            self._dirs = cgroup_dirs(text, self._v2, self._root)
        files = read_files(self._dirs)
        if not files:
            return None
        reading = v2_reading(files) if self._v2 else v1_reading(files)
        if self.target.network:
            reading = with_network(reading, self.target.pid, self._proc)
        return reading


def with_network(reading: Reading, pid: int, proc: str = PROC) -> Reading:
    """``reading`` with the counters of ``pid``'s network namespace, where readable."""
    text = read_text(f"{proc}/{pid}/net/dev")
    counters = parse_net_dev(text) if text is not None else None
    if counters is None:
        return reading
    return dataclasses.replace(
        reading,
        network_rx_bytes=counters.rx_bytes,
        network_tx_bytes=counters.tx_bytes,
        network_rx_packets=counters.rx_packets,
        network_tx_packets=counters.tx_packets,
    )


def process_groups(groups: Collection[int], proc: str = PROC) -> dict[int, Reading]:
    """The figures of each process group in ``groups`` (by its leader's pid), from one scan
    of ``/proc``; a group without a live process is left out."""
    if not groups:
        return {}
    wanted = set(groups)
    found: dict[int, tuple[list[ProcStat], list[int]]] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        text = read_text(f"{proc}/{entry}/stat")
        stat = parse_proc_stat(text) if text is not None else None
        if stat is None or stat.pgrp not in wanted:
            continue
        status = read_text(f"{proc}/{entry}/status")
        rss = parse_status_rss(status) if status is not None else None
        stats, sizes = found.setdefault(stat.pgrp, ([], []))
        stats.append(stat)
        sizes.append(rss or 0)
    return {pgrp: tree_reading(stats, sizes) for pgrp, (stats, sizes) in found.items()}
