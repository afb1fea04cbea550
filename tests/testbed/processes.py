"""The test bed's daemons (dockerd, sshd, the registry): started detached inside a network
namespace, and stopped only through the PID recorded when they started, once
``/proc/<pid>/cmdline`` proves it still runs what was recorded.

Called by ``tests.testbed.engines``, ``tests.testbed.sshd`` and ``tests.testbed.down``.
``nsenter --net`` rather than ``ip netns exec``: the latter also makes a mount namespace and
remounts /sys, and dockerd then finds no devices cgroup. ``nsenter`` execs the daemon, so the
PID we get is the daemon's own.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from signal import SIGTERM

from tests.testbed.state import ProcessEntry, ProcessKind
from theseus.cluster.procs import cmdline
from theseus.cluster.supervise import SpawnOptions, environ_without_proxies, spawn, stop_together

NETNS_DIR = Path("/var/run/netns")
STOP_GRACE = 10.0  # SIGTERM to SIGKILL: dockerd stops its containers' shims within this
# The daemons this process started, to reap them once stopped.
_children: dict[int, subprocess.Popen[bytes]] = {}


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return ["nsenter", f"--net={NETNS_DIR / netns}", *argv]


def start(name: str, kind: ProcessKind, netns: str, argv: Sequence[str], log: Path) -> ProcessEntry:
    """Start ``argv`` in ``netns``, in a session of its own (it outlives ``up``), its output
    appended to ``log``; no proxy settings: it talks to the test bed only."""
    command = in_netns(netns, argv)
    popen = spawn(command, log, SpawnOptions(env=environ_without_proxies(), detached=True))
    _children[popen.pid] = popen
    return ProcessEntry(
        name=name,
        kind=kind,
        pid=popen.pid,
        start_time=start_time(popen.pid) or 0,
        command=list(argv),
        log=str(log),
        netns=netns,
    )


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None: no such process, or a zombie.
    nsenter execs the daemon, so the time is the same before and after the exec."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_ours(entry: ProcessEntry) -> bool:
    """``entry.pid`` is still the process started then (not a later one given its pid)."""
    return start_time(entry.pid) == entry.start_time


def alive(entry: ProcessEntry) -> bool:
    return is_ours(entry)


@dataclass(frozen=True, eq=False)
class _Recorded:
    entry: ProcessEntry

    @property
    def name(self) -> str:
        return self.entry.name

    def alive(self) -> bool:
        return is_ours(self.entry)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.entry.pid, sig)


def stop(entries: Sequence[ProcessEntry], grace: float = STOP_GRACE) -> dict[str, str]:
    """SIGTERM to each recorded daemon still ours, all together; SIGKILL after ``grace``."""
    return stop_together([_Recorded(e) for e in entries], grace)


def reap(entries: Sequence[ProcessEntry]) -> None:
    """Collect the exit status of recorded daemons that were this process's children and have
    exited (the fixture runs ``up`` and ``down`` in one process; the registry's starter keeps
    its own Popen): a zombie would still show in ``ps``. Only those PIDs: never another
    child's status."""
    for pid, popen in list(_children.items()):
        if popen.poll() is not None:
            del _children[pid]
    for entry in entries:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(entry.pid, os.WNOHANG)


def netns_pids(netns: str) -> list[int]:
    """Every process in the namespace (``ip netns pids``): what the bootstrap started there
    through sshd, and whatever a crashed daemon left."""
    if not (NETNS_DIR / netns).exists():
        return []
    result = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in result.stdout.split() if pid.isdigit() and int(pid) != os.getpid()]


@dataclass(frozen=True, eq=False)
class _Pid:
    """A process found in one of the test bed's namespaces (or cgroups), by its PID."""

    pid: int
    where: str
    started: int | None  # when found: the pid is signalled only while it is that process

    @property
    def name(self) -> str:
        return f"pid {self.pid} in {self.where}"

    def alive(self) -> bool:
        return self.started is not None and start_time(self.pid) == self.started

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)


def stop_pids(
    pids: dict[int, str], grace: float = STOP_GRACE, sig: int = SIGTERM
) -> dict[str, str]:
    """Stop the processes found in the test bed's namespaces or cgroups (pid -> where)."""
    found = [_Pid(pid, where, start_time(pid)) for pid, where in sorted(pids.items())]
    return stop_together(found, grace, sig)


def cmdline_of(pid: int) -> list[str]:
    """The argv of a process started by someone else (the registry's starter), to record."""
    argv = cmdline(pid)
    if argv is None:
        raise RuntimeError(f"process {pid} is not running")
    return argv
