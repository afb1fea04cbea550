"""Shared helpers of the benchmarks that start their own processes (scale, footprint, node
loss): their etcd member and server, started through the launcher (``theseus/cluster/``),
/proc readings of CPU and memory, etcd's write counters, percentiles.

Not a benchmark itself. Every process started here is a child of the benchmark
(``theseus.cluster.supervise``), signalled only by its own PID, run without proxy settings
(every request of a benchmark goes to loopback) and also asked by the kernel to stop when the
benchmark dies (``PR_SET_PDEATHSIG``), so that a benchmark killed by a test's timeout leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx

from theseus.cluster.argv import EtcdMember, ServerProcess
from theseus.cluster.ports import free_port, free_port_pair
from theseus.cluster.supervise import (
    Process,
    Processes,
    SpawnOptions,
    environ_without_proxies,
)
from theseus.cluster.waiting import wait_until
from theseus.store.limits import MAX_TXN_OPS

__all__ = [
    "Process",
    "Processes",
    "environ_without_proxies",
    "free_port",
    "free_port_pair",
    "wait_until",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The etcd counters read for "writes": keys put and deleted, write transactions, and the store
# revision (one per committed write request that changed something).
ETCD_COUNTERS = (
    "etcd_mvcc_put_total",
    "etcd_mvcc_delete_total",
    "etcd_mvcc_txn_total",
    "etcd_debugging_mvcc_current_revision",
    "etcd_server_proposals_committed_total",
    "etcd_disk_wal_fsync_duration_seconds_sum",
    "etcd_disk_wal_fsync_duration_seconds_count",
    "etcd_disk_backend_commit_duration_seconds_sum",
    "etcd_disk_backend_commit_duration_seconds_count",
    "etcd_disk_wal_write_bytes_total",
    "etcd_network_client_grpc_sent_bytes_total",
)
START_TIMEOUT = 30.0  # seconds for etcd or the server to answer


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def spread(seconds: list[float]) -> str:
    """When a share of something had happened: p10 / p50 / p90 / last, in seconds."""
    marks = [percentile(seconds, q) for q in (0.1, 0.5, 0.9)] + [max(seconds)]
    return " / ".join(f"{m:.2f}" for m in marks) + " s"


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, its threads and the children it has
    waited for included (a server's reconcile passes run in forked children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime


def children_cpu_seconds(pid: int) -> float:
    """The part of ``cpu_seconds`` spent by the children it has waited for (a server's
    forked reconcile passes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(f) for f in fields[13:15]) / CLOCK_TICKS  # cutime, cstime


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


class Periodic:
    """Calls ``sample`` every ``interval`` seconds in a thread while in a ``with`` block (the
    first call at once). A sampler that asks over HTTP uses ``http``: one client, kept
    alive for the block. A client per request (``httpx.get``) builds an SSL context each time
    (about 30 ms of CPU here, plain HTTP too): at 5,000 × 50,000, etcd sampled 14 times a second
    that way, the benchmark's own process took 0.45 of the two cores it measures (21-27 s of
    CPU during a deploy of 49-58 s; 3-4 s with one client), and its threads' timings, the
    API probes' and etcd's read, waited on that process's GIL."""

    interval: float
    _http: httpx.Client | None = None

    def sample(self) -> None:
        raise NotImplementedError

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=5.0)
        return self._http

    def __enter__(self) -> Self:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._http is not None:
            self._http.close()
            self._http = None

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return


@dataclass
class Sampler(Periodic):
    """Samples a process's RSS every ``interval`` seconds in a thread, keeping the maximum."""

    pid: int
    interval: float = 0.1
    peak_rss: float = 0.0

    def sample(self) -> None:
        with contextlib.suppress(OSError):
            self.peak_rss = max(self.peak_rss, memory_mib(self.pid)[0])


# --- child processes ------------------------------------------------------------------------


def bench_processes(root: Path) -> Processes:
    """The benchmark's children, with their logs in ``root`` (the run's directory, which
    also holds etcd's data and the agents' state)."""
    options = SpawnOptions(env=environ_without_proxies(), die_with_parent=True)
    return Processes(root, options)


def start_etcd(children: Processes, max_txn_ops: int = MAX_TXN_OPS) -> tuple[Process, int]:
    """An etcd member with its data in the run's directory; returns it and its client port."""
    data = children.log_dir / "etcd"
    data.mkdir(mode=0o700, exist_ok=True)  # etcd refuses a data dir readable by others
    member = EtcdMember(
        "bench", data, free_port(), free_port(), max_txn_ops=max_txn_ops, extensive_metrics=True
    )
    child = children.start("etcd", member.argv(), role="etcd")
    child.wait_healthy(lambda: answers(member.health_url), START_TIMEOUT, "etcd to answer")
    return child, member.client_port


def start_server(
    children: Processes,
    etcd_port: int,
    liveness_timeout: int = 4,
    log_level: str = "info",
    name: str = "server",
) -> tuple[Process, str]:
    """One ``theseus server`` process (its own PID: CPU and RSS are read from /proc)."""
    server = ServerProcess(
        port=free_port(),
        etcd=(f"127.0.0.1:{etcd_port}",),
        liveness_timeout=liveness_timeout,
        log_level=log_level,
    )
    child = children.start(name, server.argv(), role="server")
    child.wait_healthy(lambda: answers(server.health_url), START_TIMEOUT, "the server to answer")
    return child, server.url


@contextlib.contextmanager
def children_in_temp_dir(prefix: str, keep: bool = False) -> Iterator[Processes]:
    """The benchmark's children, with their logs and data in a temporary directory of their
    own: stopped at the end (also on SIGTERM), and the directory removed unless ``keep``."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    children = bench_processes(root)
    with stopped_on_sigterm():
        try:
            yield children
        finally:
            children.stop_all()
            if not keep:
                shutil.rmtree(root, ignore_errors=True)


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


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listening socket's backlog was
    full (``TcpExt: ListenOverflows``, machine-wide, since boot)."""
    names: list[str] | None = None
    for line in Path("/proc/net/netstat").read_text().splitlines():
        if not line.startswith("TcpExt:"):
            continue
        if names is None:
            names = line.split()
        else:
            return int(dict(zip(names, line.split(), strict=True)).get("ListenOverflows", 0))
    return 0


def etcd_counters(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ETCD_COUNTERS:
            values[name] = float(value)
    return values
