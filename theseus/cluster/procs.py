"""Start, identify and stop the detached processes of a local cluster (Linux ``/proc``).

Called by ``theseus.cluster.local``. A recorded pid is only ever signalled after
``/proc/<pid>/cmdline`` proves it is still the process we started: pids are reused, and
``theseus down`` must never kill a stranger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from theseus.cluster.statefile import ProcessRecord


def spawn(command: Sequence[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` detached: its own session (so the terminal's Ctrl-C or hang-up does
    not reach it), stdin closed, stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )


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


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited between check and signal
        os.kill(pid, sig)


def stop(records: Sequence[ProcessRecord], grace: float = 10.0) -> dict[str, str]:
    """SIGTERM every recorded process that is still ours, wait up to ``grace`` seconds for all
    of them together, then SIGKILL the survivors. Returns ``name -> outcome`` for reporting."""
    outcome: dict[str, str] = {}
    running = []
    for record in records:
        if is_ours(record):
            _signal(record.pid, signal.SIGTERM)
            running.append(record)
        else:
            outcome[record.name] = "not running"
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        running = [r for r in running if is_ours(r)]
        if running:
            time.sleep(0.1)
    for record in records:
        if record.name in outcome:
            continue
        if record in running:
            _signal(record.pid, signal.SIGKILL)
            outcome[record.name] = f"killed (did not stop within {grace:.0f} s)"
        else:
            outcome[record.name] = "stopped"
    if running:
        # Give the kernel a moment so that a following `up` finds the ports free.
        deadline = time.monotonic() + 2.0
        while any(is_ours(r) for r in running) and time.monotonic() < deadline:
            time.sleep(0.05)
    return outcome


def port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0
