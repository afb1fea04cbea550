"""Converge benchmark: Theseus against Docker Swarm mode on the same dockerd, and against the
engine's own limit, in one run on this machine.

For each size N (default 20 and 60), interleaved repetitions (the order of the sides rotates):

- Theseus: ``POST /deploy`` of one group of N ``theseus/busybox`` tasks, until all N run *and*
  are in the service registry (waited for on ``GET /v1/registry/watch``);
- Swarm: ``docker service create --replicas N`` (docker SDK, detached), until N tasks are in
  state running;
- engine: N containers created and started in parallel through the Docker API (a thread
  each), no orchestrator: the limit the daemon sets.

Then scale a running service from 20 to 60 on both orchestrators (``POST
/v1/groups/{service}/scale``; ``docker service scale``), until 60 run.

Every container gets the same image, the same limits (0.05 CPU, 16 MB), one read-only bind
mount (Theseus binds its node's discovery directory) and no published port, on every side.
Theseus reserves 0.05 CPU per task (its 3 nodes offer 2 CPUs each), Swarm 0.01 (its one node,
this machine, has 2): capacity is never the limit. Swarm's service names the local image by
ID so that no task tries a registry pull.

Usage (starts its own cluster with ``theseus up --nodes 3`` on free ports and a temp state
dir, enters swarm mode if the engine is not in a swarm, and undoes both at the end):

    .venv/bin/python bench/converge.py --sizes 20,60 --scale 20:60 --repeat 5
    .venv/bin/python bench/converge.py --sizes 3 --scale 2:3 --repeat 1      # a tiny run

``--server URL`` uses a running cluster instead; ``--no-swarm`` skips the Swarm side.
Prints one table per size and one for the scale: median, min, max per side and the ratios
Theseus / Swarm and Theseus / engine (targets: at most 0.40, i.e. 2.5x faster than Swarm, and
at most 1.25). Removes every group, service and container it created.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from common import Bench, bench_run, common_arguments, cores, engine_parallel_start, new_run_id
from common import print_table as table

THESEUS = "theseus: POST /deploy -> N running + registered"
SWARM = "swarm: service create -> N tasks running"
ENGINE = "engine: N parallel create+start"
THESEUS_SCALE = "theseus: scale -> all running + registered"
SWARM_SCALE = "swarm: service scale -> all tasks running"


def theseus_deploy(bench: Bench, name: str, count: int) -> float:
    side = bench.theseus
    started = time.monotonic()
    side.deploy(name, count)
    side.wait_converged(name, count)
    elapsed = time.monotonic() - started
    side.remove(name)
    return elapsed


def swarm_create(bench: Bench, name: str, count: int) -> float:
    assert bench.swarm is not None
    started = time.monotonic()
    service = bench.swarm.create(name, count)
    bench.swarm.wait_converged(service, count)
    elapsed = time.monotonic() - started
    bench.swarm.remove(service)
    return elapsed


def theseus_scale(bench: Bench, name: str, start: int, end: int) -> float:
    side = bench.theseus
    side.deploy(name, start)
    side.wait_converged(name, start)
    started = time.monotonic()
    side.scale(name, end)
    side.wait_converged(name, end)
    elapsed = time.monotonic() - started
    side.remove(name)
    return elapsed


def swarm_scale(bench: Bench, name: str, start: int, end: int) -> float:
    assert bench.swarm is not None
    service = bench.swarm.create(name, start)
    bench.swarm.wait_converged(service, start)
    started = time.monotonic()
    bench.swarm.scale(service, end)
    bench.swarm.wait_converged(service, end)
    elapsed = time.monotonic() - started
    bench.swarm.remove(service)
    return elapsed


def interleaved(
    repeat: int, sides: list[tuple[str, Callable[[int], float]]]
) -> dict[str, list[float]]:
    """``repeat`` rounds of every side; round i starts with side i mod len(sides)."""
    times: dict[str, list[float]] = {label: [] for label, _ in sides}
    for round_ in range(repeat):
        shift = round_ % len(sides)
        for label, run in sides[shift:] + sides[:shift]:
            times[label].append(run(round_))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    parser.add_argument("--sizes", default="20,60", help="comma-separated replica counts")
    parser.add_argument("--scale", default="20:60", help="FROM:TO, or '' to skip the scale")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    scale = tuple(int(s) for s in args.scale.split(":")) if args.scale else None
    run_id = args.run_id or new_run_id()
    with_swarm = not args.no_swarm
    biggest = max([*sizes, *(scale or ())])
    with bench_run(args.server, args.state_dir, run_id, with_swarm, biggest) as bench:
        print(f"converge, run {run_id}, {cores()} cores, {args.repeat} repetitions (seconds)\n")
        for count in sizes:
            sides: list[tuple[str, Callable[[int], float]]] = [
                (THESEUS, lambda r, n=count: theseus_deploy(bench, f"{run_id}-t{n}-{r}", n)),
                (ENGINE, lambda r, n=count: engine_parallel_start(bench, n)),
            ]
            if with_swarm:
                sides.insert(
                    1, (SWARM, lambda r, n=count: swarm_create(bench, f"{run_id}-s{n}-{r}", n))
                )
            times = interleaved(args.repeat, sides)
            table(
                f"converge N={count}",
                [(label, times.get(label, [])) for label in (THESEUS, SWARM, ENGINE)],
                [("theseus / swarm", THESEUS, SWARM), ("theseus / engine", THESEUS, ENGINE)],
            )
        if scale is not None:
            start, end = scale
            sides = [
                (THESEUS_SCALE, lambda r: theseus_scale(bench, f"{run_id}-ts-{r}", start, end))
            ]
            if with_swarm:
                sides.append(
                    (SWARM_SCALE, lambda r: swarm_scale(bench, f"{run_id}-ss-{r}", start, end))
                )
            times = interleaved(args.repeat, sides)
            table(
                f"scale {start} -> {end}",
                [(label, times.get(label, [])) for label in (THESEUS_SCALE, SWARM_SCALE)],
                [("theseus / swarm", THESEUS_SCALE, SWARM_SCALE)],
            )


if __name__ == "__main__":
    main()
