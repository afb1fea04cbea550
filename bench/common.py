"""Shared pieces of the side-by-side benchmarks (``bench/converge.py``, ``bench/selfheal.py``):
a Theseus cluster started for the run (``theseus up``, or ``theseus up --secure``: TLS with the
cluster's CA and the admin token then reach every call of the Theseus side), Docker Swarm mode
entered for the run, the three sides (Theseus, Swarm, the raw engine) and the result tables.

Not a benchmark itself. Every object a benchmark creates on the Docker Engine carries the label
``theseus.bench=<run id>`` (swarm services and their containers, raw-engine containers), so
that ``cleanup(run_id)`` removes exactly those, also from a test after a failed run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import docker
import httpx
from docker.models.services import Service
from docker.types import Mount, Resources

from theseus.cluster.ports import free_port, free_port_pair
from theseus.cluster.secure import ClientAccess, local_access
from theseus.cluster.waiting import wait_until

IMAGE = "theseus/busybox:latest"
LABEL = "theseus.bench"
CPUS = 0.05  # per replica, reserved and as a limit (Theseus sets both); see below
# Not 0.01: a 1 % CFS quota throttles runc's own setup inside the container's cgroup, and every
# `docker start` then takes about 1 s on any side (measured: 1.07 s at 0.01, 0.27 s at 0.05,
# 0.27 s unlimited). 60 replicas x 0.05 = 3 CPUs fit Theseus's 3 nodes (2 CPUs each).
# Swarm schedules on its one node, this machine (2 CPUs): 60 x 0.05 CPU would not fit, so its
# services reserve less. The containers' limit (NanoCpus) is CPUS on every side.
SWARM_CPU_RESERVATION = 0.01
MEM_MB = 16
MOUNT_TARGET = "/run/theseus"  # Theseus binds its node's discovery dir here; the peers do too
# Seconds from the stop signal to SIGKILL, on both orchestrators (default 10): only removals
# wait for it, none of the timed work. A container stopped in its first instants, before its
# entry script installs its SIGTERM trap, would otherwise hold each removal for 10 s.
STOP_GRACE = 1
POLL = 0.02  # seconds between two looks where no watch serves (Swarm's tasks)


def new_run_id() -> str:
    return f"b{uuid.uuid4().hex[:8]}"


def cores() -> int:
    return os.cpu_count() or 1


def engine_started_at(engine: docker.DockerClient, container_id: str) -> float:
    """The container's ``State.StartedAt`` as a Unix time (RFC 3339 with nanoseconds)."""
    stamp = engine.api.inspect_container(container_id)["State"]["StartedAt"]
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00").timestamp()


# --- results -------------------------------------------------------------------------------


def summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def print_table(
    title: str,
    rows: list[tuple[str, list[float]]],
    ratios: list[tuple[str, str, str]],
    unit: str = "s",
) -> None:
    """One block: per side median, min, max and the count; then each ratio of medians
    (label, numerator row, denominator row)."""
    scale = 1000.0 if unit == "ms" else 1.0
    width = max(len(label) for label, _ in rows) + 2
    print(title)
    print(f"{'side':<{width}}{'median':>9}{'min':>9}{'max':>9}{'n':>4}  ({unit})")
    medians: dict[str, float] = {}
    for label, values in rows:
        if not values:
            print(f"{label:<{width}}{'-':>9}{'-':>9}{'-':>9}{0:>4}")
            continue
        med, low, high = summary(values)
        medians[label] = med
        figures = "".join(f"{v * scale:9.2f}" for v in (med, low, high))
        print(f"{label:<{width}}{figures}{len(values):4d}")
    for label, top, bottom in ratios:
        if top in medians and bottom in medians:
            print(f"ratio {label} (medians): {medians[top] / medians[bottom]:.2f}")
    print()


# --- the Theseus cluster ---------------------------------------------------------------------


def theseus_cli(
    *args: str, timeout: float = 120.0, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``theseus ARGS``; with ``config``, its CLI contexts go there (``THESEUS_CONFIG``), not to
    the user's file (``theseus up --secure`` writes one)."""
    env = dict(os.environ)
    if config is not None:
        env["THESEUS_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "theseus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


PLAIN = ClientAccess()  # a development cluster: no TLS, no token


class Target(NamedTuple):
    """A cluster to measure: its server URL, and how to call it (CA and token if secure)."""

    url: str
    access: ClientAccess = PLAIN


@contextlib.contextmanager
def theseus_cluster(
    server: str | None, state_dir: Path | None, nodes: int = 3, secure: bool = False
) -> Iterator[Target]:
    """Yield a cluster: ``server`` as given (plain access), or one ``theseus up --nodes N
    [--secure]`` starts on free ports with its own state dir (a temp dir unless
    ``state_dir``) and CLI config file (a temp one), stopped with ``theseus down --purge``
    at the end. A secure one is called with its CA and the admin token ``up`` kept in the
    state dir (``theseus.cluster.secure.local_access``)."""
    if server is not None:
        yield Target(server)
        return
    temp = tempfile.mkdtemp(prefix="theseus-bench-")
    if state_dir is None:
        state_dir = Path(temp) / "state"
    config = Path(temp) / "config.json"
    api = free_port()
    etcd = free_port_pair()  # its peer port is the next one
    argv = ["up", "--nodes", str(nodes), "--port", str(api), "--etcd-port", str(etcd)]
    argv += ["--state-dir", str(state_dir), *(["--secure"] if secure else [])]
    up = theseus_cli(*argv, config=config)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"theseus up failed:\n{up.stdout}\n{up.stderr}")
        scheme = "https" if secure else "http"
        access = local_access(state_dir / "pki") if secure else PLAIN
        if secure and (access.tls is None or access.token is None):
            raise RuntimeError(f"theseus up --secure left no CA or admin token in {state_dir}")
        yield Target(f"{scheme}://127.0.0.1:{api}", access)
    finally:
        down = theseus_cli("down", "--state-dir", str(state_dir), "--purge", config=config)
        if down.returncode != 0:
            print(f"theseus down failed:\n{down.stdout}\n{down.stderr}", file=sys.stderr)
        shutil.rmtree(temp, ignore_errors=True)


# --- the three sides -------------------------------------------------------------------------


class TheseusSide:
    """Deploys, scales and removes one group per service through the server's HTTP API.

    "Converged" means: every wanted task is running *and* in the service registry (what
    guestutils and watchers see). It waits on the registry's long-poll
    (``GET /v1/registry/watch``), so it puts no polling load on the server, then confirms the
    task states once.
    """

    def __init__(self, url: str, access: ClientAccess = PLAIN) -> None:
        self.url = url
        self.secure = access.tls is not None
        # Both clients trust the cluster's CA and send the token (a secure cluster's).
        self.client = access.client(url, timeout=30.0)
        headers = {"Authorization": f"Bearer {access.token}"} if access.token else {}
        verify = access.tls if access.tls is not None else True
        self.http = httpx.Client(base_url=url, timeout=40.0, verify=verify, headers=headers)

    def close(self) -> None:
        self.client.close()
        self.http.close()

    def deploy(self, service: str, count: int) -> None:
        spec = {
            "image": IMAGE,
            "instances": count,
            "cpus": CPUS,
            "mem": MEM_MB,
            "task_kill_grace_period_seconds": STOP_GRACE,
        }
        self.client.deploy(json.dumps({"deploy": {service: spec}}), "application/json")

    def scale(self, service: str, count: int) -> None:
        self.client.scale(service, count)

    def running(self, service: str) -> dict[str, str]:
        """Task id → container id of the service's running tasks."""
        return {
            t.id: t.container_id or ""
            for t in self.client.tasks(service).tasks
            if t.state == "running" and t.desired == "run"
        }

    def wait_converged(
        self, service: str, count: int, gone: frozenset[str] = frozenset(), timeout: float = 300
    ) -> None:
        """Until ``count`` instances are registered, none of them in ``gone``, all running."""
        deadline = time.monotonic() + timeout
        index = 0
        # Not a poll (``wait_until``): each request is a long-poll that the registry answers
        # as soon as it changes.
        while time.monotonic() < deadline:
            wait = max(0.0, min(5.0, deadline - time.monotonic()))
            response = self.http.get(
                "/v1/registry/watch",
                params={"services": service, "index": str(index), "wait": str(wait)},
            )
            response.raise_for_status()
            body = response.json()
            index = int(body["index"])
            names = set(body["services"].get(service, []))
            if len(names) == count and not names & gone and names <= set(self.running(service)):
                return
        raise TimeoutError(f"theseus: {service} did not converge to {count} in {timeout:.0f} s")

    def remove(self, service: str, timeout: float = 120) -> None:
        self.client.remove(service)
        wait_until(
            lambda: not self.client.tasks(service, include_stopped=True).tasks,
            timeout,
            f"theseus: {service} removed",
            interval=0.1,
        )


class SwarmSide:
    """Docker Swarm mode on the same dockerd, through the Docker API (docker SDK).

    The service's image is the local image's *ID*: a tag would make every task try a pull from
    Docker Hub first (the engine only skips that for image IDs and present digests), which
    needs the network and would slow Swarm down for nothing. Default restart policy (condition
    any, delay 5 s), default update settings. Reservation: ``SWARM_CPU_RESERVATION`` CPU and
    ``MEM_MB``; limits as on the other sides.
    """

    def __init__(self, engine: docker.DockerClient, run_id: str, mount_source: str) -> None:
        self.engine = engine
        self.run_id = run_id
        self.image_id = str(engine.images.get(IMAGE).id)
        self.mount_source = mount_source

    def create(self, name: str, count: int) -> Service:
        labels = {LABEL: self.run_id}
        return self.engine.services.create(
            self.image_id,
            name=name,
            labels=labels,
            container_labels=labels,
            mode=docker.types.ServiceMode("replicated", replicas=count),
            resources=Resources(
                cpu_limit=int(CPUS * 1e9),
                mem_limit=MEM_MB * 1024 * 1024,
                cpu_reservation=int(SWARM_CPU_RESERVATION * 1e9),
                mem_reservation=MEM_MB * 1024 * 1024,
            ),
            mounts=[Mount(MOUNT_TARGET, self.mount_source, type="bind", read_only=True)],
            stop_grace_period=STOP_GRACE * 1_000_000_000,
        )

    def scale(self, service: Service, count: int) -> None:
        """What ``docker service scale`` does: the current spec, only the replica count changed.
        (The SDK's ``Service.scale`` rebuilds the task template, which Swarm takes for a change
        and answers with a rolling update of every running task.)"""
        api = self.engine.api
        current = api.inspect_service(service.id)
        spec = current["Spec"]
        spec["Mode"]["Replicated"]["Replicas"] = count
        response = api._post_json(
            api._url("/services/{0}/update", service.id),
            data=spec,
            params={"version": current["Version"]["Index"]},
        )
        api._raise_for_status(response)

    def running(self, service: Service) -> dict[str, str]:
        """Task id → container id of the service's tasks desired running and running."""
        tasks = service.tasks(filters={"desired-state": "running"})
        return {
            t["ID"]: (t["Status"].get("ContainerStatus") or {}).get("ContainerID", "")
            for t in tasks
            if t["Status"]["State"] == "running"
        }

    def wait_converged(
        self, service: Service, count: int, gone: frozenset[str] = frozenset(), timeout: float = 300
    ) -> None:
        def done() -> bool:
            running = set(self.running(service))
            return len(running) == count and not running & gone

        wait_until(done, timeout, f"swarm: {service.name} at {count} running", interval=POLL)

    def remove(self, service: Service, timeout: float = 120) -> None:
        service_id = service.id
        service.remove()
        wait_until(
            lambda: (
                not self.engine.api.containers(
                    all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"}
                )
            ),
            timeout,
            f"swarm: containers of {service.name} removed",
            interval=0.1,
        )


def engine_parallel_start(bench: EngineRun, count: int) -> float:
    """Seconds to create and start ``count`` containers in parallel through the Docker API
    (one thread each: what ``count`` parallel ``docker run -d`` do), with the same image,
    limits and bind mount as the orchestrated ones, no orchestrator. Removes them after."""
    engine, run_id, mount_source = bench.engine, bench.run_id, bench.mount_source
    host_config = engine.api.create_host_config(
        nano_cpus=int(CPUS * 1e9),
        mem_limit=MEM_MB * 1024 * 1024,
        binds=[f"{mount_source}:{MOUNT_TARGET}:ro"],
    )

    def run_one(index: int) -> str:
        created = engine.api.create_container(
            IMAGE,
            name=f"bench-raw-{run_id}-{uuid.uuid4().hex[:6]}-{index}",
            labels={LABEL: run_id},
            host_config=host_config,
        )
        engine.api.start(created["Id"])
        return str(created["Id"])

    with ThreadPoolExecutor(max_workers=count) as pool:
        started = time.monotonic()
        ids = list(pool.map(run_one, range(count)))
        elapsed = time.monotonic() - started
        list(pool.map(lambda cid: engine.api.remove_container(cid, force=True), ids))
    return elapsed


# --- swarm mode and cleanup ----------------------------------------------------------------


def swarm_state(engine: docker.DockerClient) -> str:
    return str(engine.info()["Swarm"]["LocalNodeState"])


@contextlib.contextmanager
def swarm_mode(engine: docker.DockerClient) -> Iterator[None]:
    """Swarm mode for the duration: ``docker swarm init --advertise-addr 127.0.0.1`` (listening
    on 127.0.0.1 only) if the engine is not in a swarm, and ``docker swarm leave --force``
    at the end if it entered it here. An existing swarm is used as it is, and left alone."""
    state = swarm_state(engine)
    entered = False
    if state == "inactive":
        engine.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        entered = True
    elif state != "active" or not engine.info()["Swarm"].get("ControlAvailable"):
        raise RuntimeError(f"the engine is in swarm state {state!r} and not a manager")
    try:
        yield
    finally:
        if entered:
            engine.swarm.leave(force=True)


def cleanup(engine: docker.DockerClient, run_id: str) -> None:
    """Remove the swarm services and containers labelled ``theseus.bench=<run_id>``."""
    label = f"{LABEL}={run_id}"
    if swarm_state(engine) == "active":
        with contextlib.suppress(docker.errors.APIError):
            for service in engine.services.list(filters={"label": label}):
                service.remove()
    for container in engine.api.containers(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.APIError):  # gone, or being removed already
            engine.api.remove_container(container["Id"], force=True)


@dataclass
class EngineRun:
    """What a benchmark run holds besides Theseus: the engine, the run id, a directory to bind
    into every container and (unless disabled) the Swarm side."""

    engine: docker.DockerClient
    run_id: str
    mount_source: str
    swarm: SwarmSide | None


@dataclass
class Bench(EngineRun):
    """An ``EngineRun`` and the Theseus side."""

    theseus: TheseusSide


@contextlib.contextmanager
def engine_run(run_id: str, with_swarm: bool, pool_size: int) -> Iterator[EngineRun]:
    """Swarm mode (if wanted) and cleanup of everything labelled with ``run_id`` at the end,
    whatever happens."""
    engine = docker.from_env(max_pool_size=max(pool_size, 10), timeout=120)
    mount_source = tempfile.mkdtemp(prefix="theseus-bench-mount-")
    os.chmod(mount_source, 0o755)
    try:
        with contextlib.ExitStack() as stack:
            swarm = None
            if with_swarm:
                stack.enter_context(swarm_mode(engine))
                stack.callback(cleanup, engine, run_id)  # before leaving swarm mode
                swarm = SwarmSide(engine, run_id, mount_source)
            yield EngineRun(engine, run_id, mount_source, swarm)
    finally:
        cleanup(engine, run_id)
        shutil.rmtree(mount_source, ignore_errors=True)
        engine.close()


@contextlib.contextmanager
def theseus_side(
    server: str | None, state_dir: Path | None, secure: bool = False
) -> Iterator[TheseusSide]:
    """The Theseus side on its cluster (``theseus_cluster``)."""
    with theseus_cluster(server, state_dir, secure=secure) as target:
        side = TheseusSide(target.url, target.access)
        try:
            yield side
        finally:
            side.close()


@contextlib.contextmanager
def bench_run(
    server: str | None,
    state_dir: Path | None,
    run_id: str,
    with_swarm: bool,
    pool_size: int,
    secure: bool = False,
) -> Iterator[Bench]:
    """The Theseus cluster, and the engine run (``engine_run``)."""
    with (
        theseus_side(server, state_dir, secure) as side,
        engine_run(run_id, with_swarm, pool_size) as run,
    ):
        yield Bench(run.engine, run.run_id, run.mount_source, run.swarm, side)


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", help="use this running server instead of starting `theseus up --nodes 3`"
    )
    parser.add_argument("--state-dir", type=Path, help="state dir of the cluster started here")
    parser.add_argument("--no-swarm", action="store_true", help="skip the Swarm side")
    parser.add_argument("--run-id", default=None, help="label value for this run's objects")
