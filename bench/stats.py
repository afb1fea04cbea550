"""Task metrics: what the agent's stats collection costs with many containers.

Usage (needs Docker and the local busybox image, `theseus images build`):

    .venv/bin/python bench/stats.py --containers 100 --passes 30

Starts ``--containers`` sleeping busybox containers (label ``theseus.bench=<run id>``), then
runs the agent's own collector (``theseus.agent.stats.collector.StatsCollector`` over the
docker driver's ``stats_targets``) on them: one first pass, which asks Docker once per
container for its process (inspect) and resolves its cgroup directories, then ``--passes``
steady passes that only read cgroup files. Prints the CPU time per pass and per container,
and the share of one core that collection takes at a 10 s interval (the agent's default);
for comparison, the wall time of Docker's stats API on a few of the same containers
(``stream=false``, one-shot). Also the memory a full hour of samples takes for that many
tasks (the rings filled with synthetic samples, measured with tracemalloc). Removes its
containers at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc
import uuid
from collections.abc import Collection

import docker

from theseus.agent.drivers.base import Owner
from theseus.agent.drivers.docker import DockerDriver
from theseus.agent.stats.collector import DEFAULT_RETENTION, Running, StatsCollector
from theseus.agent.stats.samples import Reading, SampleStore, TaskMeta, TaskSample, Usage

IMAGE = "theseus/busybox:latest"
LABEL = "theseus.bench"


def start_containers(engine: docker.DockerClient, run_id: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        container = engine.containers.run(
            IMAGE,
            ["sleep", "3600"],
            detach=True,
            name=f"stats-bench-{run_id}-{n}",
            labels={LABEL: run_id},
            nano_cpus=50_000_000,
            mem_limit="16m",
        )
        ids.append(container.id)
    return ids


def remove_containers(engine: docker.DockerClient, run_id: str) -> None:
    for container in engine.containers.list(all=True, filters={"label": f"{LABEL}={run_id}"}):
        container.remove(force=True)


async def measure(ids: list[str], passes: int) -> dict[str, float]:
    driver = DockerDriver()
    await driver.open(Owner("bench", "127.0.0.1"), lambda notice: None)
    running = [Running(TaskMeta(f"bench.{n}", "bench", "bench:"), cid) for n, cid in enumerate(ids)]

    def tasks() -> tuple[list[Running], Collection[str]]:
        return running, [r.meta.task_id for r in running]

    collector = StatsCollector(driver, tasks, interval=10.0)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        await collector.collect_once()  # resolves every container: one inspect each
        first_cpu, first_wall = time.process_time() - cpu, time.perf_counter() - wall
        measured = sum(1 for _ in collector.store.latest())
        own_before = collector.cost_seconds
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(passes):
            await collector.collect_once()
        steady_cpu, steady_wall = time.process_time() - cpu, time.perf_counter() - wall
        own = collector.cost_seconds - own_before
    finally:
        await driver.close()
    return {
        "measured": measured,
        "first_cpu": first_cpu,
        "first_wall": first_wall,
        "pass_cpu": steady_cpu / passes,
        "pass_wall": steady_wall / passes,
        "pass_own": own / passes,
    }


def docker_stats_wall(engine: docker.DockerClient, ids: list[str], calls: int) -> float:
    """Mean seconds of one ``GET /containers/{id}/stats?stream=false&one-shot=true``."""
    took = []
    for cid in ids[:calls]:
        started = time.perf_counter()
        engine.api.stats(cid, stream=False, one_shot=True)
        took.append(time.perf_counter() - started)
    return sum(took) / len(took)


def ring_memory(tasks: int, interval: float) -> float:
    """MiB that a full hour of samples of ``tasks`` tasks takes (every figure measured)."""
    capacity = int(DEFAULT_RETENTION / interval)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = SampleStore(capacity)
    for task in range(tasks):
        meta = TaskMeta(f"t.{task}", "svc", "svc:")
        for n in range(capacity):
            values = {name: float(n + task) + 0.5 for name in Reading.__dataclass_fields__}
            store.record(meta, TaskSample(float(n), Usage(0.5 + n, Reading(**values))))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del store
    return used / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--passes", type=int, default=30)
    parser.add_argument("--docker-stats-calls", type=int, default=3)
    args = parser.parse_args()
    engine = docker.from_env()
    run_id = uuid.uuid4().hex[:8]
    try:
        started = time.perf_counter()
        ids = start_containers(engine, run_id, args.containers)
        print(f"{len(ids)} sleeping containers started in {time.perf_counter() - started:.1f}s")
        figures = asyncio.run(measure(ids, args.passes))
        docker_wall = (
            docker_stats_wall(engine, ids, args.docker_stats_calls)
            if args.docker_stats_calls
            else float("nan")
        )
    finally:
        remove_containers(engine, run_id)
    n = args.containers
    per_container = figures["pass_cpu"] / n
    print(f"containers measured:          {figures['measured']:.0f} of {n}")
    print(
        f"first pass (inspect + cgroup paths): {figures['first_cpu'] * 1000:.1f} ms CPU, "
        f"{figures['first_wall'] * 1000:.1f} ms wall"
    )
    print(
        f"steady pass ({args.passes} passes):  {figures['pass_cpu'] * 1000:.2f} ms CPU "
        f"(collector's own count {figures['pass_own'] * 1000:.2f} ms), "
        f"{figures['pass_wall'] * 1000:.2f} ms wall"
    )
    print(f"per container per pass:       {per_container * 1e6:.0f} µs CPU")
    share = figures["pass_cpu"] / 10.0
    print(f"share of one core at a 10 s interval: {share * 100:.3f} % (budget 1 %)")
    if args.docker_stats_calls:
        print(
            f"Docker stats API (one-shot), per container: {docker_wall * 1000:.0f} ms wall "
            f"= {docker_wall / max(per_container, 1e-9):.0f}x a cgroup read's CPU"
        )
    print(f"a full hour of samples (360 per task) for {n} tasks: {ring_memory(n, 10.0):.1f} MiB")


if __name__ == "__main__":
    main()
