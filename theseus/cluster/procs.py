"""Identify and stop the processes an earlier ``theseus up`` started, from their record
(Linux ``/proc``).

Called by ``theseus.cluster.local`` (``up`` cleaning up after a dead cluster, ``down``) and by
``bench/node_loss.py``. A recorded pid is only ever signalled after ``/proc/<pid>/cmdline``
proves it is still the process we started: pids are reused, and ``theseus down`` must never
kill a stranger. Starting and stopping themselves are ``theseus.cluster.supervise``'s.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from theseus.cluster.statefile import ProcessRecord
from theseus.cluster.supervise import STOP_GRACE, stop_together


def cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None (no such process, or a zombie: empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def is_ours(record: ProcessRecord) -> bool:
    """True when ``record.pid`` still runs the command we recorded.

    argv[0] is compared loosely (an interpreter may rewrite it); the arguments must match."""
    argv = cmdline(record.pid)
    if argv is None or not record.command:
        return False
    return argv == record.command or argv[1:] == record.command[1:]


@dataclass(frozen=True, eq=False)
class _Recorded:
    """A recorded process as ``stop_together`` sees it: alive while it is provably ours."""

    record: ProcessRecord

    @property
    def name(self) -> str:
        return self.record.name

    def alive(self) -> bool:
        return is_ours(self.record)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # it exited between check and signal
            os.kill(self.record.pid, sig)


def stop(records: Sequence[ProcessRecord], grace: float = STOP_GRACE) -> dict[str, str]:
    """SIGTERM every recorded process that is still ours, wait up to ``grace`` seconds for all
    of them together, then SIGKILL the survivors. Returns ``name -> outcome`` for reporting."""
    return stop_together([_Recorded(record) for record in records], grace)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0
