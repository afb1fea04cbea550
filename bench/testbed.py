"""Real machines, measured on the test bed (``scripts/testbed``): hosts that are network
namespaces, each with its own Docker Engine and sshd, set up by ``theseus cluster bootstrap``
over SSH, their images pulled from the bed's private registry.

In one run:

1. ``up``: the bed of 3 + ``--losses`` hosts (its own figures: namespaces, engines, sshd,
   registry, push);
2. bootstrap of 3 fresh hosts (h1: etcd, server and agent; h2, h3: agents) with a wheelhouse
   built for the run (nothing cached), then of each further host, one at a time, into the
   running cluster;
3. converge, ``--repeat`` rounds on h1-h3 alone (the further hosts are made ineligible), the
   order of the sides alternating: Theseus (``POST /deploy`` of ``--tasks`` busybox tasks from
   the registry, until all run *and* are in the service registry) against the same number of
   containers created and started in parallel straight on the 3 engines (a thread each, the
   same image, limits and read-only bind mount, no orchestrator). Also the server's and the
   agents' CPU seconds per task on the Theseus side (from /proc);
4. host loss, once per further host: a group of 2 tasks per node, then a host killed whole
   (every process of its namespace, engine and containers included); the time until its tasks
   run on other hosts and the registry holds none of them, and until the node is ``lost``.

Usage (as root; the bed must be down: it is brought up and always taken down at the end)::

    .venv/bin/python bench/testbed.py --repeat 5 --tasks 60 --losses 2

Prints one table per part; targets (issue 13): converge within 1.15x of the engines' own
parallel start, a lost host's tasks replaced within 5 s, bootstrap of 3 fresh hosts under
5 minutes and of one more under 60 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from statistics import median
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo: tests.testbed

from tests.kit.wait import wait_until
from tests.testbed import down, engines, state, up
from tests.testbed.cli import workdir
from tests.testbed.faults import kill_host
from tests.testbed.fixture import Testbed
from tests.testbed.plan import HostPlan, TestbedPlan, make_plan
from theseus.api.client import ServerClient
from theseus.cli import contexts
from theseus.provision.layout import Layout
from theseus.security.tls import client_context

FIRST = 3  # hosts bootstrapped fresh; the converge runs on them
CPUS, MEM_MB = 0.05, 16
LABEL = "theseus.bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


# --- the cluster -------------------------------------------------------------------------


def bootstrap(plan: TestbedPlan, count: int, wheelhouse: Path) -> float:
    """Seconds of ``theseus cluster bootstrap`` of the bed's first ``count`` hosts (the
    registry's login stored after it included)."""
    names = [h.name for h in plan.hosts[:count]]
    return Testbed(plan).bootstrap(
        Testbed(plan).hosts_file(names), ["--wheelhouse-dir", str(wheelhouse)]
    )


def client() -> ServerClient:
    context = contexts.resolve(None)
    assert context is not None and context.ca is not None
    tls = client_context(ca_pem=context.ca.encode())
    return ServerClient(context.servers, tls=tls, token=context.token, timeout=60)


def spec(image: str, instances: int) -> dict[str, Any]:
    return {"image": image, "instances": instances, "cpus": CPUS, "mem": MEM_MB}


def running(api: ServerClient, service: str) -> list[Any]:
    return [t for t in api.tasks(service).tasks if t.state == "running" and t.desired == "run"]


def registered(api: ServerClient, service: str) -> dict[str, str]:
    groups = api.registry(service).groups
    return {c.instance_name: c.instance_host for g in groups for c in g.containers}


def remove(api: ServerClient, service: str, bed_engines: list[docker.DockerClient]) -> None:
    api.remove(service)
    wait_until(
        lambda: (
            not any(
                e.api.containers(all=True, filters={"label": f"theseus.service={service}"})
                for e in bed_engines
            )
        ),
        120,
        f"{service}'s containers removed",
    )


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLOCK_TICKS


def child_pid(host: HostPlan, service: str) -> int:
    layout = Layout(PurePosixPath(host.paths.prefix), "testbed")
    return int(Path(str(layout.child_pidfile(service))).read_text())


# --- converge ----------------------------------------------------------------------------


def theseus_converge(api: ServerClient, image: str, count: int, name: str) -> float:
    started = time.monotonic()
    api.deploy(json.dumps({"deploy": {name: spec(image, count)}}), "application/json")
    wait_until(
        lambda: len(registered(api, name)) == count and len(running(api, name)) == count,
        300,
        f"{name}: {count} running and registered",
        interval=0.05,
    )
    return time.monotonic() - started


def engines_parallel_start(
    bed_engines: list[docker.DockerClient], image: str, count: int, mount: str
) -> float:
    """``count`` containers spread evenly over the engines, created and started in parallel
    (a thread each), as the orchestrated ones are: same image, limits, read-only bind mount."""
    run_id = uuid.uuid4().hex[:8]

    def run_one(index: int) -> tuple[docker.DockerClient, str]:
        engine = bed_engines[index % len(bed_engines)]
        host_config = engine.api.create_host_config(
            nano_cpus=int(CPUS * 1e9),
            mem_limit=MEM_MB * 1024 * 1024,
            binds=[f"{mount}:/run/theseus:ro"],
        )
        created = engine.api.create_container(
            image,
            name=f"bench-raw-{run_id}-{index}",
            labels={LABEL: run_id},
            host_config=host_config,
        )
        engine.api.start(created["Id"])
        return engine, str(created["Id"])

    with ThreadPoolExecutor(max_workers=count) as pool:
        started = time.monotonic()
        made = list(pool.map(run_one, range(count)))
        elapsed = time.monotonic() - started
        list(pool.map(lambda m: m[0].api.remove_container(m[1], force=True), made))
    return elapsed


def converge(
    plan: TestbedPlan, image: str, count: int, repeat: int
) -> tuple[list[float], list[float], float, float]:
    hosts = plan.hosts[:FIRST]
    bed_engines = [engines.client(h, timeout=300) for h in hosts]
    for engine in bed_engines:  # the registry's image on every engine, for both sides
        engine.images.pull(
            image.rpartition(":")[0], tag=image.rpartition(":")[2], auth_config=_auth(plan)
        )
    server = [child_pid(hosts[0], "server")]
    agents = [child_pid(h, "agent") for h in hosts]
    mount = tempfile.mkdtemp(prefix="theseus-bench-mount-")
    os.chmod(mount, 0o755)
    ours: list[float] = []
    raw: list[float] = []
    server_cpu = agents_cpu = 0.0
    try:
        with client() as api:
            for extra in plan.hosts[FIRST:]:
                api.drain_node(extra.name)  # the converge is on the first three
            theseus_converge(api, image, FIRST, "bench-warm")  # untimed: caches, connections
            remove(api, "bench-warm", bed_engines)
            for round_ in range(repeat):
                sides: list[Callable[[], None]] = []

                def ours_side(r: int = round_) -> None:
                    nonlocal server_cpu, agents_cpu
                    before = cpu_seconds(server), cpu_seconds(agents)
                    ours.append(theseus_converge(api, image, count, f"bench-{r}"))
                    server_cpu += cpu_seconds(server) - before[0]
                    agents_cpu += cpu_seconds(agents) - before[1]
                    remove(api, f"bench-{r}", bed_engines)

                def raw_side() -> None:
                    raw.append(engines_parallel_start(bed_engines, image, count, mount))

                sides = [ours_side, raw_side] if round_ % 2 == 0 else [raw_side, ours_side]
                for side in sides:
                    side()
                print(f"  round {round_ + 1}: theseus {ours[-1]:.2f} s, engines {raw[-1]:.2f} s")
            for extra in plan.hosts[FIRST:]:
                api.drain_node(extra.name, enable=False)
    finally:
        os.rmdir(mount)
        for engine in bed_engines:
            engine.close()
    tasks = count * repeat
    return ours, raw, server_cpu / tasks * 1000, agents_cpu / tasks * 1000


def _auth(plan: TestbedPlan) -> dict[str, str]:
    from tests.testbed.registry import credentials

    return credentials(plan.registry).auth_config


# --- host loss ---------------------------------------------------------------------------


def host_loss(plan: TestbedPlan, image: str, victim: HostPlan, nodes: int) -> tuple[float, float]:
    """Seconds from the kill until the victim's tasks run elsewhere, registered, none of them
    left in the registry; and until the node is declared lost."""
    name = f"loss-{victim.name}"
    with client() as api:
        api.deploy(json.dumps({"deploy": {name: spec(image, 2 * nodes)}}), "application/json")
        wait_until(lambda: len(registered(api, name)) == 2 * nodes, 120, f"{name} registered")
        doomed = {t.id for t in running(api, name) if t.node == victim.name}
        if not doomed:
            raise RuntimeError(f"no task of {name} on {victim.name}: nothing to measure")
        killed_at = time.monotonic()
        kill_host(victim)
        lost_after: list[float] = []

        def replaced() -> bool:
            if not lost_after and any(
                n.name == victim.name and n.status == "lost" for n in api.nodes().nodes
            ):
                lost_after.append(time.monotonic() - killed_at)
            tasks = running(api, name)
            addresses = registered(api, name)
            return (
                len(tasks) == 2 * nodes
                and all(t.node != victim.name for t in tasks)
                and len(addresses) == 2 * nodes
                and not doomed & set(addresses)
            )

        wait_until(replaced, 120, f"{victim.name}'s tasks replaced", interval=0.05)
        took = time.monotonic() - killed_at
        api.remove(name)
    return took, lost_after[0] if lost_after else took


# --- main --------------------------------------------------------------------------------


@contextlib.contextmanager
def bed(hosts: int) -> Iterator[TestbedPlan]:
    plan = make_plan(workdir(), hosts)
    if state.load(plan.state_file) is not None:
        raise SystemExit("a test bed is up: scripts/testbed down first (this run makes its own)")
    try:
        up.up(plan, bootstrap=False, say=lambda _: None)
        yield plan
    finally:
        down.down(plan.workdir, say=lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--losses", type=int, default=2, help="hosts killed, one per round")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the test bed needs root")
    print(f"test bed benchmark: {os.cpu_count()} cores, {args.tasks} tasks, {args.repeat} rounds")
    with bed(FIRST + args.losses) as plan:
        timings = state.load(plan.state_file)
        assert timings is not None
        table("test bed up", [(k, seconds(v)) for k, v in timings.timings.items()])
        image = f"{plan.registry.host}/theseus/busybox:latest"
        with tempfile.TemporaryDirectory(prefix="theseus-wheelhouse-") as wheelhouse:
            fresh = bootstrap(plan, FIRST, Path(wheelhouse))
            added = [
                bootstrap(plan, FIRST + k, Path(wheelhouse)) for k in range(1, args.losses + 1)
            ]
            rerun = bootstrap(plan, FIRST + args.losses, Path(wheelhouse))
        table(
            "bootstrap over SSH (target: 3 fresh hosts < 300 s, one more < 60 s)",
            [
                (f"{FIRST} fresh hosts, wheelhouse built", seconds(fresh)),
                *((f"one more host (h{FIRST + k + 1})", seconds(t)) for k, t in enumerate(added)),
                ("again, nothing to change", seconds(rerun)),
            ],
        )
        ours, raw, server_ms, agents_ms = converge(plan, image, args.tasks, args.repeat)
        ratios = [o / r for o, r in zip(ours, raw, strict=True)]
        table(
            f"converge: {args.tasks} tasks over {FIRST} hosts and engines (target ratio <= 1.15)",
            [
                (
                    "theseus: deploy -> all running + registered",
                    f"median {median(ours):.2f} s (min {min(ours):.2f}, max {max(ours):.2f})",
                ),
                (
                    "engines: parallel create + start",
                    f"median {median(raw):.2f} s (min {min(raw):.2f}, max {max(raw):.2f})",
                ),
                (
                    "ratio theseus / engines, per round",
                    f"median {median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})",
                ),
                ("server CPU per task", f"{server_ms:.1f} ms"),
                ("agents' CPU per task", f"{agents_ms:.1f} ms"),
            ],
        )
        rows = []
        for k in range(args.losses):
            victim = plan.hosts[-1 - k]
            nodes = len(plan.hosts) - k
            replaced, lost = host_loss(plan, image, victim, nodes)
            rows.append(
                (
                    f"{victim.name} killed ({nodes} nodes)",
                    f"tasks replaced + registry clean {replaced:.2f} s; node lost {lost:.2f} s",
                )
            )
        table("host loss, default settings (target: replaced within 5 s)", rows)


if __name__ == "__main__":
    main()
