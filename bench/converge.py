"""Converge benchmark: time from ``POST /deploy`` of N instances until all N run, against the
engine's own limit (N containers created and started in parallel through the Docker API, the
equivalent of N parallel ``docker run -d``), on the same machine in the same run.

Usage (against a running cluster, e.g. ``theseus up --nodes 3``):

    .venv/bin/python bench/converge.py --server http://127.0.0.1:5000 -n 20 --repeat 5

Prints one table: median, min and max seconds per side and the ratio Theseus / engine.
Cleans up every group and container it created.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import docker

from theseus.api.client import ServerClient

IMAGE = "theseus/busybox:latest"


def wait_for(check: Callable[[], bool], timeout: float = 120.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError("condition not reached")


def theseus_once(client: ServerClient, count: int) -> float:
    service = f"bench-{uuid.uuid4().hex[:6]}"
    spec = {"image": IMAGE, "instances": count, "cpus": 0.01, "mem": 16, "ports": {"http": 5000}}
    started = time.monotonic()
    client.deploy(json.dumps({"deploy": {service: spec}}), "application/json")

    def all_running() -> bool:
        groups = client.groups(service).groups
        return bool(groups) and groups[0].running_current == count

    wait_for(all_running)
    elapsed = time.monotonic() - started
    client.remove(service)
    wait_for(lambda: not client.tasks(service, include_stopped=True).tasks, interval=0.1)
    return elapsed


def engine_once(engine: docker.DockerClient, count: int) -> float:
    run_id = uuid.uuid4().hex[:8]

    def run_one(index: int) -> str:
        container = engine.containers.run(
            IMAGE,
            detach=True,
            name=f"bench-raw-{run_id}-{index}",
            labels={"theseus.bench": run_id},
            nano_cpus=10_000_000,
            mem_limit="16m",
            ports={"5000/tcp": ("127.0.0.2", None)},
        )
        return str(container.id)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        ids = list(pool.map(run_one, range(count)))
    elapsed = time.monotonic() - started
    for container_id in ids:
        engine.api.remove_container(container_id, force=True)
    return elapsed


def summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:5000")
    parser.add_argument("-n", "--count", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    engine = docker.from_env(max_pool_size=args.count)
    theseus_times, engine_times = [], []
    with ServerClient(args.server) as client:
        for _ in range(args.repeat):  # interleaved, so both sides see the same machine state
            theseus_times.append(theseus_once(client, args.count))
            engine_times.append(engine_once(engine, args.count))
    t_med, t_min, t_max = summary(theseus_times)
    e_med, e_min, e_max = summary(engine_times)
    print(f"converge N={args.count}, {args.repeat} repetitions (seconds)")
    print(f"{'side':<34}{'median':>8}{'min':>8}{'max':>8}")
    print(f"{'theseus: POST /deploy -> all running':<34}{t_med:8.2f}{t_min:8.2f}{t_max:8.2f}")
    print(f"{'engine: N parallel create+start':<34}{e_med:8.2f}{e_min:8.2f}{e_max:8.2f}")
    print(f"ratio theseus / engine (medians): {t_med / e_med:.2f}")


if __name__ == "__main__":
    main()
