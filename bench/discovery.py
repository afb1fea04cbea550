"""Discovery propagation: from a container starting to run (the Docker Engine's StartedAt)
until ``service_change`` fires in another container that watches its service.

Usage (against a running cluster, e.g. ``theseus up --nodes 3`` plus ``theseus images build``):

    .venv/bin/python bench/discovery.py --server http://127.0.0.1:5000 --changes 100

One watching container (theseus/example, ``WATCHES=<target>``) and a target service of
busybox tasks. Each round scales the target up by one (measured) and back down (not
measured). The watcher prints ``service_change('<target>', 1) at <unix time>``; the engine
and the watcher share this machine's clock. Prints p50, p99 and max; cleans up after itself.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import uuid
from datetime import datetime

import docker

from theseus.api.client import ServerClient
from theseus.cluster.waiting import wait_until

POLL = 0.01  # seconds between two looks: the figures are in milliseconds
TIMEOUT = 60.0


def started_at(engine: docker.DockerClient, container_id: str) -> float:
    stamp = engine.api.inspect_container(container_id)["State"]["StartedAt"]
    # RFC 3339 with nanoseconds: keep microseconds for datetime.
    head, _, fraction = stamp.rstrip("Z").partition(".")
    parsed = datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00")
    return parsed.timestamp()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:5000")
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    engine = docker.from_env()
    target = f"bench-target-{uuid.uuid4().hex[:6]}"
    watcher_service = f"bench-watcher-{uuid.uuid4().hex[:6]}"
    pattern = re.compile(rf"service_change\('{re.escape(target)}', (-?\d+)\) at ([0-9.]+)")
    small = {"cpus": 0.01, "mem": 16}
    with ServerClient(args.server) as client:

        def deploy(service: str, spec: dict[str, object]) -> None:
            client.deploy(json.dumps({"deploy": {service: spec}}), "application/json")

        def running(service: str) -> list[str]:
            return [
                t.container_id or ""
                for t in client.tasks(service).tasks
                if t.state == "running" and t.desired == "run"
            ]

        try:
            deploy(target, {"image": "theseus/busybox:latest", "instances": 1, **small})
            deploy(
                watcher_service,
                {
                    "image": "theseus/example:latest",
                    "instances": 1,
                    "environment": {"WATCHES": target},
                    **small,
                    "mem": 64,
                },
            )
            wait_until(
                lambda: len(running(target)) == 1 and len(running(watcher_service)) == 1,
                TIMEOUT,
                "the target and the watcher running",
                POLL,
            )
            (watcher_id,) = running(watcher_service)
            logs = lambda: engine.api.logs(watcher_id).decode(errors="replace")  # noqa: E731
            wait_until(lambda: "baseline" in logs(), TIMEOUT, "the watcher's baseline", POLL)
            latencies: list[float] = []
            from_agent: list[float] = []  # from the agent seeing it run (its reported time)
            for _ in range(args.changes):
                heard_before = len(pattern.findall(logs()))
                before = set(running(target))
                client.scale(target, 2)
                new = wait_until(
                    lambda before=before: set(running(target)) - before,
                    TIMEOUT,
                    "the new task",
                    POLL,
                )
                (container_id,) = new
                heard = wait_until(
                    lambda seen=heard_before: pattern.findall(logs())[seen:],
                    TIMEOUT,
                    "the +1 heard",
                    POLL,
                )
                delta, at = heard[0]
                assert int(delta) == 1, heard
                latencies.append(float(at) - started_at(engine, container_id))
                (task,) = [t for t in client.tasks(target).tasks if t.container_id == container_id]
                from_agent.append(float(at) - (task.started_at or float(at)))
                heard_now = len(pattern.findall(logs()))
                client.scale(target, 1)
                wait_until(
                    lambda seen=heard_now: len(pattern.findall(logs())) > seen,
                    TIMEOUT,
                    "the -1 heard",
                    POLL,
                )
        finally:
            for service in (target, watcher_service):
                client.remove(service)
    print(f"discovery propagation over {len(latencies)} changes (ms)")
    print(f"{'from':<58}{'p50':>8}{'p99':>8}{'max':>8}{'mean':>8}")
    for label, values in (
        ("container running (engine StartedAt)", latencies),
        ("agent saw it running (task started_at)", from_agent),
    ):
        ms = [1000 * v for v in values]
        print(
            f"{label + ' -> service_change':<58}{percentile(ms, 0.5):8.1f}"
            f"{percentile(ms, 0.99):8.1f}{max(ms):8.1f}{statistics.mean(ms):8.1f}"
        )


if __name__ == "__main__":
    main()
