"""Shared helpers of the benchmarks that start their own processes (scale, footprint, node
loss): free ports, an etcd member and a server as child processes, /proc readings of CPU and
memory, etcd's write counters, percentiles.

Not a benchmark itself. Every process started here is a child of the benchmark, signalled only
by its own PID, and also asked by the kernel to stop when the benchmark dies
(``PR_SET_PDEATHSIG``), so that a benchmark killed by a test's timeout leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
# The etcd counters read for "writes": keys put and deleted, write transactions, and the store
# revision (one per committed write request that changed something).
ETCD_COUNTERS = (
    "etcd_mvcc_put_total",
    "etcd_mvcc_delete_total",
    "etcd_mvcc_txn_total",
    "etcd_debugging_mvcc_current_revision",
    "etcd_server_proposals_committed_total",
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def child_environ() -> dict[str, str]:
    """This environment without proxy settings: every request of a benchmark is loopback."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls it


def _die_with_parent() -> None:
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB: resident now, and its peak so far."""
    rss = hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


@dataclass
class Sampler:
    """Samples a process's RSS every ``interval`` seconds in a thread, keeping the maximum."""

    pid: int
    interval: float = 0.1
    peak_rss: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak_rss = max(self.peak_rss, memory_mib(self.pid)[0])
            self._stop.wait(self.interval)


# --- child processes ------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stopped: bool = False  # by us: its exit is no failure

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Children:
    """The processes a benchmark started, stopped in the reverse order of start."""

    root: Path
    started: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str]) -> Child:
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_environ(),
                preexec_fn=_die_with_parent,
            )
        child = Child(name, popen, log)
        self.started.append(child)
        return child

    def check_alive(self) -> None:
        for child in self.started:
            if not child.stopped and not child.alive():
                raise RuntimeError(
                    f"{child.name} exited with code {child.popen.returncode}:\n{child.tail()}"
                )

    def stop_all(self) -> None:
        for child in reversed(self.started):
            child.stop()

    def etcd(self, max_txn_ops: int = 1024) -> tuple[Child, int]:
        """An etcd member with its data in ``root``; returns it and its client port."""
        port, peer = free_port(), free_port()
        data = self.root / "etcd"
        data.mkdir(mode=0o700, exist_ok=True)
        client_url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
        child = self.spawn(
            "etcd",
            [
                "etcd",
                "--name=bench",
                f"--data-dir={data}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=bench={peer_url}",
                f"--max-txn-ops={max_txn_ops}",
                "--logger=zap",
                "--log-outputs=stderr",
            ],
        )
        self._wait(child, lambda: answers(f"{client_url}/health"), "etcd")
        return child, port

    def server(
        self, etcd_port: int, liveness_timeout: int = 4, log_level: str = "info"
    ) -> tuple[Child, str]:
        """One ``theseus server`` process (its own PID: CPU and RSS are read from /proc)."""
        port = free_port()
        child = self.spawn(
            "server",
            [
                sys.executable,
                "-m",
                "theseus",
                "server",
                "--port",
                str(port),
                "--etcd",
                f"127.0.0.1:{etcd_port}",
                "--liveness-timeout",
                str(liveness_timeout),
                "--log-level",
                log_level,
            ],
        )
        url = f"http://127.0.0.1:{port}"
        self._wait(child, lambda: answers(f"{url}/v1/health"), "the server")
        return child, url

    def _wait(self, child: Child, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not check():
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up:\n{child.tail()}")
            time.sleep(0.05)


@contextlib.contextmanager
def stopped_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit, so that ``finally`` blocks clean up on ``kill <pid>``."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def etcd_counters(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ETCD_COUNTERS:
            values[name] = float(value)
    return values
