"""Partition recovery, measured on the test bed (``scripts/testbed``) over several cuts.

A cluster of three server hosts (etcd, a server and an agent on each: two keep etcd's quorum
when the third is cut). For each cut, a group of 2 tasks per host with
``stop_after_server_loss_seconds: --fence``, then one host's link taken down (its agent,
engine and containers run on, reaching nothing), the hosts in turn, so the leader's host is
cut too; after ``--cut-seconds`` the link comes back. Measured from the cut:

* replaced: the cut host's tasks run on the other hosts and the registry holds none of them
  (target: within 10 s);
* fenced: the cut host's own containers stopped by its agent (target: within the setting + 5 s);
* over instances: how long the group ran more containers than its instances, from the engines'
  own lists (sampled every 0.1 s);
* after the heal: how long until the group, its containers and the registry agree again, the
  node ready; and, 10 s after the heal, duplicates (containers beyond the group's tasks, a task
  in two containers) and lost tasks (fewer running than instances), both targets 0.

Usage (as root; a bed already up is used, its cluster made afresh if it has another shape)::

    .venv/bin/python bench/partitions.py --cuts 6 --fence 8

The chaos run with partitions and host deaths is ``scripts/chaos --testbed``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any, TypeVar

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo: tests.testbed

from tests.kit.wait import wait_until
from tests.testbed.faults import cut_host, heal_host
from tests.testbed.fixture import Testbed, TestbedSession, testbed_plan
from tests.testbed.plan import HostPlan
from theseus.api.client import ApiError, ServerClient, ServerUnreachable
from theseus.cli import contexts
from theseus.security.tls import client_context

SERVERS = ("h1", "h2", "h3")
T = TypeVar("T")
PER_HOST = 2


@dataclass
class Cut:
    host: str
    leader: bool
    replaced: float
    fenced: float
    over: float
    converged: float  # after the heal
    duplicates: int  # 10 s after the heal
    lost: int
    unanswered: float  # the longest the majority's servers gave no answer but 503s


def client(without: str | None = None) -> ServerClient:
    """A client of the servers, ``without`` the one on that host: the observer of a cut is
    on the majority's side (a request to the cut server would wait for its timeout)."""
    context = contexts.resolve(None)
    assert context is not None and context.ca is not None
    tls = client_context(ca_pem=context.ca.encode())
    servers = [url for url in context.servers if without is None or _host_of(url) != without]
    return ServerClient(servers, tls=tls, token=context.token, timeout=30)


def _host_of(url: str) -> str:
    """The bed's addresses end in 10 + the host's number."""
    return f"h{int(url.split('//')[1].split(':')[0].rsplit('.', 1)[1]) - 10}"


def running(api: ServerClient, service: str) -> list[Any]:
    return [t for t in api.tasks(service).tasks if t.state == "running" and t.desired == "run"]


def registered(api: ServerClient, service: str) -> set[str]:
    return {c.instance_name for g in api.registry(service).groups for c in g.containers}


def containers(engine: docker.DockerClient, service: str) -> list[str]:
    found = engine.api.containers(filters={"label": f"theseus.service={service}"})
    return [c["Labels"].get("theseus.task", "") for c in found]


def leading_host() -> str | None:
    """The host whose server leads."""
    context = contexts.resolve(None)
    assert context is not None and context.ca is not None
    tls = client_context(ca_pem=context.ca.encode())
    for url in context.servers:
        with (
            contextlib.suppress(Exception),
            ServerClient([url], tls=tls, token=context.token, timeout=5) as one,
        ):
            if one.health().leader:
                return _host_of(url)
    return None


class Outages:
    """The observer's calls through the majority's servers: a 503 (no server could vouch
    for its view of etcd) or no answer is a moment without an API, timed."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._since: float | None = None

    def call(self, fn: Callable[[], T]) -> T | None:
        try:
            result = fn()
        except (ApiError, ServerUnreachable) as exc:
            if isinstance(exc, ApiError) and exc.status != 503:
                raise
            if self._since is None:
                self._since = time.monotonic()
            return None
        self.finish()
        return result

    def finish(self) -> float:
        if self._since is not None:
            self.longest = max(self.longest, time.monotonic() - self._since)
            self._since = None
        return self.longest


class Sampler:
    """Every 0.1 s, the containers of ``service`` on every engine: the windows in which they
    were more than ``instances`` (a sampler, not a wait)."""

    def __init__(
        self,
        engines: list[docker.DockerClient],
        victim: docker.DockerClient,
        service: str,
        instances: int,
    ) -> None:
        self.engines, self.service, self.instances = engines, service, instances
        self.victim = victim
        self.victim_empty_at: float | None = None  # when the cut host ran none of them
        self.over = 0.0
        self._since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(docker.errors.DockerException):
                count = sum(len(containers(e, self.service)) for e in self.engines)
                now = time.monotonic()
                if self.victim_empty_at is None and not containers(self.victim, self.service):
                    self.victim_empty_at = now
                if count > self.instances and self._since is None:
                    self._since = now
                elif count <= self.instances and self._since is not None:
                    self.over += now - self._since
                    self._since = None

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(10)
        if self._since is not None:
            self.over += time.monotonic() - self._since
        return self.over


def one_cut(bed: Testbed, victim: HostPlan, n: int, fence: int, cut_s: float) -> Cut:
    service = f"part-{n}"
    instances = PER_HOST * len(bed.hosts)
    spec = {
        "image": bed.image(),
        "command": "exec sleep 3600",
        "instances": instances,
        "cpus": 0.05,
        "mem": 16,
        "stop_after_server_loss_seconds": fence,
    }
    engines = [bed.engine(h) for h in bed.hosts]
    victim_engine = bed.engine(victim)
    with client(without=victim.name) as api:
        return _measure(api, engines, victim_engine, victim, service, spec, fence, cut_s)


def _measure(
    api: ServerClient,
    engines: list[docker.DockerClient],
    victim_engine: docker.DockerClient,
    victim: HostPlan,
    service: str,
    spec: dict[str, Any],
    fence: int,
    cut_s: float,
) -> Cut:
    instances = int(spec["instances"])
    api.deploy(json.dumps({"deploy": {service: spec}}), "application/json")
    wait_until(lambda: len(registered(api, service)) == instances, 120, f"{service} registered")
    wait_until(lambda: len({t.node for t in running(api, service)}) == len(engines), 30, "spread")
    doomed = {t.id for t in running(api, service) if t.node == victim.name}
    leader = leading_host() == victim.name
    sampler = Sampler(engines, victim_engine, service, instances)
    outages = Outages()
    cut_at = time.monotonic()
    cut_host(victim)
    replaced = fenced = 0.0
    try:

        def moved_now() -> bool:
            tasks = running(api, service)
            return (
                len(tasks) == instances
                and all(t.node != victim.name for t in tasks)
                and not doomed & registered(api, service)
            )

        def moved() -> bool:
            return bool(outages.call(moved_now))

        wait_until(moved, 60, "the cut host's tasks replaced", interval=0.1)
        replaced = time.monotonic() - cut_at
        wait_until(lambda: sampler.victim_empty_at, fence + 30, "fenced", 0.1)
        fenced = (sampler.victim_empty_at or 0.0) - cut_at
        wait_until(lambda: time.monotonic() - cut_at >= cut_s, cut_s + 1, "the cut's length")
    finally:
        heal_host(victim)
    healed_at = time.monotonic()

    def agreed_now() -> bool:
        tasks = running(api, service)
        ids = {t.id for t in tasks}
        seen = [t for e in engines for t in containers(e, service)]
        return (
            len(tasks) == instances
            and registered(api, service) == ids
            and sorted(seen) == sorted(ids)
            and any(n.name == victim.name and n.status == "ready" for n in api.nodes().nodes)
        )

    def agreed() -> bool:
        return bool(outages.call(agreed_now))

    wait_until(agreed, 60, "the group, its containers and the registry to agree", interval=0.1)
    converged = time.monotonic() - healed_at
    wait_until(lambda: time.monotonic() - healed_at >= 10, 11, "10 s after the heal")
    seen = [t for e in engines for t in containers(e, service)]
    tasks = running(api, service)
    duplicates = len(seen) - len(set(seen)) + len(set(seen) - {t.id for t in tasks})
    lost = max(0, instances - len(tasks))
    over = sampler.stop()
    api.remove(service)
    unanswered = outages.finish()
    return Cut(victim.name, leader, replaced, fenced, over, converged, duplicates, lost, unanswered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", type=int, default=6)
    parser.add_argument("--fence", type=int, default=8, help="stop_after_server_loss_seconds")
    parser.add_argument("--cut-seconds", type=float, default=20.0, help="how long a cut lasts")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the test bed needs root")
    session = TestbedSession(testbed_plan())
    cuts: list[Cut] = []
    try:
        bed = session.with_cluster(SERVERS)
        for n in range(args.cuts):
            victim = bed.hosts[n % len(bed.hosts)]
            cut = one_cut(bed, victim, n, args.fence, args.cut_seconds)
            cuts.append(cut)
            print(
                f"  cut {n + 1}: {cut.host}{' (leader)' if cut.leader else ''}: replaced"
                f" {cut.replaced:.2f} s, fenced {cut.fenced:.2f} s, over instances"
                f" {cut.over:.2f} s; after the heal converged {cut.converged:.2f} s,"
                f" duplicates {cut.duplicates}, lost {cut.lost}; the API answered only 503"
                f" for {cut.unanswered:.2f} s at most"
            )
    finally:
        session.close()

    def stat(values: list[float]) -> str:
        return f"median {median(values):.2f} s, max {max(values):.2f} s"

    rows = [
        ("replaced elsewhere (target <= 10 s)", stat([c.replaced for c in cuts])),
        (f"own containers stopped (target <= {args.fence + 5} s)", stat([c.fenced for c in cuts])),
        ("group over instances", stat([c.over for c in cuts])),
        ("converged after the heal", stat([c.converged for c in cuts])),
        ("the majority's servers answered only 503", stat([c.unanswered for c in cuts])),
        (
            "duplicates / lost 10 s after the heal (target 0)",
            f"{sum(c.duplicates for c in cuts)} / {sum(c.lost for c in cuts)}",
        ),
    ]
    print(f"\npartition recovery: {len(cuts)} cuts of {args.cut_seconds:g} s, fence {args.fence} s")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
