"""Self-heal benchmark: ``docker kill`` one container of a running service and time until a
replacement runs, Theseus against Docker Swarm mode on the same dockerd, in one run.

One service of R replicas (default 5) on each side, ``theseus/busybox``, 0.05 CPU and 16 MB,
no published port. Each repetition kills the container that has been running longest, once it
has run at least ``--min-age`` seconds (default 10: Theseus counts a death within 10 s of the
start as a quick failure, and its crash-loop backoff starts from the second consecutive one;
the benchmark measures healing a healthy service, not a crash loop). The clock starts just
before the kill call and stops when:

- Theseus: R tasks run and are in the service registry again, the killed task not among them
  (waited for on ``GET /v1/registry/watch``);
- Swarm: R tasks are in state running again, the killed task not among them (its tasks are
  polled every 20 ms). Swarm's default restart policy applies: condition any, delay 5 s.

Repetitions alternate between the sides. Usage (starts ``theseus up --nodes 3`` on free ports
with a temp state dir, enters swarm mode if the engine is not in a swarm; undoes both):

    .venv/bin/python bench/selfheal.py --heal-repeat 10 --swarm-repeat 5
    .venv/bin/python bench/selfheal.py --replicas 2 --heal-repeat 2 --quick --min-age 0

``--quick`` runs the Swarm side twice only (each of its repetitions takes over 5 s);
``--no-swarm`` skips it; ``--server URL`` uses a running cluster. Prints p50 (median), min
and max per side and the ratio Theseus / Swarm (target: Theseus p50 under 0.5 s).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import docker
from common import (
    Bench,
    bench_run,
    common_arguments,
    cores,
    engine_started_at,
    new_run_id,
    print_table,
)

THESEUS = "theseus: kill -> replacement running + registered"
SWARM = "swarm: kill -> replacement task running"


def oldest(engine: docker.DockerClient, running: dict[str, str], min_age: float) -> str:
    """The task (of task id -> container id) whose container has run longest, after waiting
    until that container is ``min_age`` seconds old (the wait is not timed)."""
    started = {task: engine_started_at(engine, cid) for task, cid in running.items()}
    task = min(started, key=lambda t: started[t])
    time.sleep(max(0.0, started[task] + min_age - time.time()))
    return task


def heal_theseus(bench: Bench, service: str, replicas: int, min_age: float) -> float:
    side = bench.theseus
    running = side.running(service)
    task = oldest(bench.engine, running, min_age)
    started = time.monotonic()
    bench.engine.api.kill(running[task])
    side.wait_converged(service, replicas, gone=frozenset({task}))
    return time.monotonic() - started


def heal_swarm(bench: Bench, service_name: str, replicas: int, min_age: float) -> float:
    assert bench.swarm is not None
    service = bench.engine.services.get(service_name)
    running = bench.swarm.running(service)
    task = oldest(bench.engine, running, min_age)
    started = time.monotonic()
    bench.engine.api.kill(running[task])
    bench.swarm.wait_converged(service, replicas, gone=frozenset({task}))
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--heal-repeat", type=int, default=10, help="Theseus repetitions")
    parser.add_argument("--swarm-repeat", type=int, default=5, help="Swarm repetitions")
    parser.add_argument("--quick", action="store_true", help="Swarm side: 2 repetitions")
    parser.add_argument(
        "--min-age", type=float, default=10.0, help="seconds the killed container has run"
    )
    args = parser.parse_args()
    run_id = args.run_id or new_run_id()
    with_swarm = not args.no_swarm
    swarm_repeat = 0 if not with_swarm else 2 if args.quick else args.swarm_repeat
    replicas = args.replicas
    theseus_name, swarm_name = f"{run_id}-heal-t", f"{run_id}-heal-s"
    with bench_run(args.server, args.state_dir, run_id, with_swarm, replicas) as bench:
        bench.theseus.deploy(theseus_name, replicas)
        if bench.swarm is not None:
            bench.swarm.create(swarm_name, replicas)
        try:
            bench.theseus.wait_converged(theseus_name, replicas)
            if bench.swarm is not None:
                bench.swarm.wait_converged(bench.engine.services.get(swarm_name), replicas)
            sides: list[tuple[str, int, Callable[[], float]]] = [
                (
                    THESEUS,
                    args.heal_repeat,
                    lambda: heal_theseus(bench, theseus_name, replicas, args.min_age),
                ),
                (
                    SWARM,
                    swarm_repeat,
                    lambda: heal_swarm(bench, swarm_name, replicas, args.min_age),
                ),
            ]
            times: dict[str, list[float]] = {THESEUS: [], SWARM: []}
            for round_ in range(max(args.heal_repeat, swarm_repeat)):
                for label, repeat, heal in sides:
                    if round_ < repeat:
                        times[label].append(heal())
        finally:
            bench.theseus.remove(theseus_name)
            if bench.swarm is not None:
                bench.swarm.remove(bench.engine.services.get(swarm_name))
    print(
        f"self-heal, run {run_id}, {cores()} cores, {replicas} replicas, "
        f"killed containers ran >= {args.min_age:g} s (seconds)\n"
    )
    print_table(
        "kill one container -> a replacement runs (median = p50)",
        [(THESEUS, times[THESEUS]), (SWARM, times[SWARM])],
        [("theseus / swarm", THESEUS, SWARM)],
    )


if __name__ == "__main__":
    main()
