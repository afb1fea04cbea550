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

``--modes dev,secure`` measures Theseus both as ``theseus up`` (development mode) and as
``theseus up --secure`` (the API over TLS with the admin token, agents on mutual TLS, etcd
with client certificates) in one run: ``theseus up`` gives each node a fixed loopback address,
so the two clusters cannot run at once; each repetition runs one cluster of each mode in turn
(the order alternating), from ``up`` to ``down``, with one untimed 3-task deploy first, and
measures every size on it, the engine and Swarm sides interleaved as above. Adds the ratio
Theseus secure / Theseus dev. ``--modes secure`` alone: the secure cluster only.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

from common import (
    Bench,
    EngineRun,
    common_arguments,
    cores,
    engine_parallel_start,
    engine_run,
    new_run_id,
    theseus_side,
)
from common import print_table as table

MODES = ("dev", "secure")
SWARM = "swarm: service create -> N tasks running"
ENGINE = "engine: N parallel create+start"
SWARM_SCALE = "swarm: service scale -> all tasks running"


def theseus_label(mode: str) -> str:
    return f"theseus {mode}: POST /deploy -> N running + registered"


def theseus_scale_label(mode: str) -> str:
    return f"theseus {mode}: scale -> all running + registered"


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


Times = dict[str, list[float]]


def one_round(times: Times, round_: int, sides: list[tuple[str, Callable[[int], float]]]) -> None:
    """Every side once; round i starts with side i mod len(sides)."""
    shift = round_ % len(sides)
    for label, run in sides[shift:] + sides[:shift]:
        times.setdefault(label, []).append(run(round_))


def measure(
    bench: Bench,
    mode: str,
    round_: int,
    sizes: list[int],
    scale: tuple[int, ...] | None,
    times: dict[str, Times],
) -> None:
    """One repetition of every size (and the scale) on ``bench``'s cluster of ``mode``."""
    run_id = f"{bench.run_id}{mode[0]}"

    def deploy(n: int) -> Callable[[int], float]:
        return lambda r: theseus_deploy(bench, f"{run_id}-t{n}-{r}", n)

    def engine(n: int) -> Callable[[int], float]:
        return lambda r: engine_parallel_start(bench, n)

    def create(n: int) -> Callable[[int], float]:
        return lambda r: swarm_create(bench, f"{run_id}-s{n}-{r}", n)

    for count in sizes:
        sides = [(theseus_label(mode), deploy(count)), (ENGINE, engine(count))]
        if bench.swarm is not None:
            sides.insert(1, (SWARM, create(count)))
        one_round(times.setdefault(f"N={count}", {}), round_, sides)
    if scale is not None:
        start, end = scale
        scale_sides: list[tuple[str, Callable[[int], float]]] = [
            (
                theseus_scale_label(mode),
                lambda r: theseus_scale(bench, f"{run_id}-ts-{r}", start, end),
            )
        ]
        if bench.swarm is not None:
            scale_sides.append(
                (SWARM_SCALE, lambda r: swarm_scale(bench, f"{run_id}-ss-{r}", start, end))
            )
        one_round(times.setdefault("scale", {}), round_, scale_sides)


@contextlib.contextmanager
def cluster(base: EngineRun, args: argparse.Namespace, mode: str) -> Iterator[Bench]:
    """A Theseus cluster of ``mode`` for ``base``'s run, warmed up by one untimed deploy."""
    with theseus_side(args.server, args.state_dir, secure=mode == "secure") as side:
        bench = Bench(base.engine, base.run_id, base.mount_source, base.swarm, side)
        theseus_deploy(bench, f"{base.run_id}{mode[0]}-warm", 3)
        yield bench


def report(
    times: dict[str, Times], modes: list[str], sizes: list[int], scale: tuple[int, ...] | None
) -> None:
    for count in sizes:
        labels = [theseus_label(m) for m in modes]
        ratios = [
            (f"theseus {m} / {o}", theseus_label(m), s)
            for m in modes
            for o, s in (("swarm", SWARM), ("engine", ENGINE))
        ]
        if len(modes) > 1:
            ratios.append(("theseus secure / theseus dev", labels[1], labels[0]))
        block = times.get(f"N={count}", {})
        table(
            f"converge N={count}",
            [(label, block.get(label, [])) for label in (*labels, SWARM, ENGINE)],
            ratios,
        )
    if scale is not None:
        labels = [theseus_scale_label(m) for m in modes]
        ratios = [(f"theseus {m} / swarm", theseus_scale_label(m), SWARM_SCALE) for m in modes]
        if len(modes) > 1:
            ratios.append(("theseus secure / theseus dev", labels[1], labels[0]))
        block = times.get("scale", {})
        table(
            f"scale {scale[0]} -> {scale[1]}",
            [(label, block.get(label, [])) for label in (*labels, SWARM_SCALE)],
            ratios,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    parser.add_argument("--sizes", default="20,60", help="comma-separated replica counts")
    parser.add_argument("--scale", default="20:60", help="FROM:TO, or '' to skip the scale")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--modes", default="dev", help="dev, secure, or dev,secure (both, interleaved)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    scale = tuple(int(s) for s in args.scale.split(":")) if args.scale else None
    modes = [m for m in MODES if m in args.modes.split(",")]
    if not modes or (args.server and modes != ["dev"]):
        parser.error("--modes: dev, secure or dev,secure (--server: dev only)")
    run_id = args.run_id or new_run_id()
    biggest = max([*sizes, *(scale or ())])
    times: dict[str, Times] = {}
    with engine_run(run_id, not args.no_swarm, biggest) as base:
        what = " and ".join(f"theseus up{' --secure' if m == 'secure' else ''}" for m in modes)
        print(
            f"converge, run {run_id}, {cores()} cores, {args.repeat} repetitions (seconds), "
            f"{what}\n",
            flush=True,
        )
        if len(modes) == 1:  # one cluster for every repetition
            with cluster(base, args, modes[0]) as bench:
                for round_ in range(args.repeat):
                    measure(bench, modes[0], round_, sizes, scale, times)
        else:  # a cluster per mode and repetition, the modes' order alternating
            for round_ in range(args.repeat):
                for mode in modes if round_ % 2 == 0 else modes[::-1]:
                    with cluster(base, args, mode) as bench:
                        measure(bench, mode, round_, sizes, scale, times)
                    print(f"repetition {round_ + 1}/{args.repeat}: {mode} done", flush=True)
    report(times, modes, sizes, scale)


if __name__ == "__main__":
    main()
