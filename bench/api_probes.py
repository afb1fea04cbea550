"""The side clients of ``bench/scale.py``: during a big deploy, each sends one request at a
time to the server and times it (``TaskProbe``: one task's read; ``DeployProbe``: a small
deploy), as a user of the API would while the cluster is busy; and the reads by which the
benchmarks follow the cluster (nodes ready, tasks running)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import orjson
from procs import percentile, wait_until

from theseus.api.schemas import INDEX_HEADER

PROBE_SERVICE = "bench-probe"
READ_SERVICE = "bench-read"  # one task, read by the TaskProbe during the run


@dataclass
class Probe:
    """A side client: one request at a time until stopped, latencies in seconds."""

    name: str
    interval: float
    # Send the highest ``X-Theseus-Index`` seen, as ``ServerClient`` (the CLI) does: writes
    # are answered once etcd has them, and each call reads at least what the last one saw.
    by_index: bool = True
    latencies: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # monotonic, one per latency
    errors: Counter[str] = field(default_factory=Counter)
    messages: dict[str, str] = field(default_factory=dict)  # the first answer of each error
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def request(self, http: httpx.Client, round_: int) -> None:
        raise NotImplementedError

    def start(self, url: str) -> None:
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self, url: str) -> None:
        index = 0

        def keep_index(response: httpx.Response) -> None:
            nonlocal index
            index = max(index, int(response.headers.get(INDEX_HEADER, 0)))
            http.headers[INDEX_HEADER] = str(index)

        hooks = {"response": [keep_index]} if self.by_index else {}
        with httpx.Client(base_url=url, timeout=60.0, event_hooks=hooks) as http:
            if self.by_index:
                http.headers[INDEX_HEADER] = "0"
            round_ = 0
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    self.request(http, round_)
                except httpx.HTTPStatusError as exc:
                    kind = f"HTTP {exc.response.status_code}"
                    self.errors[kind] += 1
                    self.messages.setdefault(kind, exc.response.text[:300])
                except httpx.HTTPError as exc:
                    self.errors[exc.__class__.__name__] += 1
                else:
                    self.latencies.append(time.perf_counter() - started)
                    self.sent_at.append(time.monotonic() - self.latencies[-1])
                round_ += 1
                self._stop.wait(self.interval)


@dataclass
class TaskProbe(Probe):
    task_id: str = ""

    def request(self, http: httpx.Client, round_: int) -> None:
        http.get(f"/v1/tasks/{self.task_id}").raise_for_status()


@dataclass
class DeployProbe(Probe):
    service: str = PROBE_SERVICE

    def request(self, http: httpx.Client, round_: int) -> None:
        spec = {"image": "sim", "instances": 1 + round_ % 2, "cpus": 0.01, "mem": 1}
        body = json.dumps({"deploy": {self.service: spec}})
        headers = {"Content-Type": "application/json"}
        http.post("/deploy", content=body, headers=headers).raise_for_status()


def deploy_read_task(http: httpx.Client, timeout: float) -> str:
    """Deploy READ_SERVICE (one task) and the id of its task, once it runs."""
    spec = {"image": "sim", "instances": 1, "cpus": 0.01, "mem": 1}
    http.post("/deploy", json={"deploy": {READ_SERVICE: spec}}).raise_for_status()

    def running_task() -> str | None:
        response = http.get("/v1/tasks", params={"service": READ_SERVICE})
        if response.status_code != 200:
            return None
        tasks = [t for t in response.json()["tasks"] if t["state"] == "running"]
        return str(tasks[0]["id"]) if tasks else None

    wait_until(lambda: running_task() is not None, timeout, f"{READ_SERVICE} running")
    task_id = running_task()
    assert task_id is not None
    return task_id


def slowest(probe: Probe, since: float, count: int = 3) -> str:
    """The probe's ``count`` slowest answers, each with when it was sent (seconds after
    ``since``, a monotonic time): ``462 ms at 5.2 s, ...``."""
    timed = sorted(zip(probe.latencies, probe.sent_at, strict=True), reverse=True)[:count]
    return ", ".join(f"{1000 * took:,.0f} ms at {at - since:.1f} s" for took, at in timed)


def fmt_ms(values: list[float]) -> str:
    if not values:
        return "no answer"
    ms = [1000 * v for v in values]
    return (
        f"p50 {percentile(ms, 0.5):,.0f} ms, p99 {percentile(ms, 0.99):,.0f} ms "
        f"(max {max(ms):,.0f}, n={len(ms)})"
    )


def ready_nodes(http: httpx.Client) -> int:
    """Nodes ready; 0 while the server refuses to say (a 503 on a loaded machine: it cannot
    show that it follows etcd), so the wait asks again rather than the bench crashing."""
    response = http.get("/v1/nodes")
    if response.status_code != 200:
        return 0
    return sum(1 for n in orjson.loads(response.content)["nodes"] if n["status"] == "ready")


def running_count(http: httpx.Client, services: set[str]) -> int | None:
    """The services' running tasks; None when the server refused to say (a 503 while it
    cannot show that it follows etcd: counted and reported, the poll goes on)."""
    return running_count_and_view(http, services)[0]


def running_count_and_view(http: httpx.Client, services: set[str]) -> tuple[int | None, int]:
    """``running_count``, and the revision of the server's view that counted them (0 with
    no count)."""
    response = http.get("/v1/groups")
    if response.status_code != 200:
        return None, 0
    # orjson: at 500 groups the answer is parsed twice a second, in the process that times
    # the probes.
    groups = orjson.loads(response.content)["groups"]
    view = int(response.headers.get(INDEX_HEADER, 0))
    return int(sum(g["running_current"] for g in groups if g["service"] in services)), view
