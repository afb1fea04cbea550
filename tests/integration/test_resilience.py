"""Resilience on a real 3-node cluster with real containers (issue: Resilience).

Drain (replacement first, no new work after), a node lost and coming back (its replaced
containers stopped, schedulable again), an agent SIGKILLed and restarted (containers
re-adopted untouched, strays removed), graceful stops timed from Docker's own events,
restart backoff growth, and sticky restarts.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.kit.cluster import Cluster, start_cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import deploy, running, wait_running
from theseus.api.client import ServerClient
from theseus.api.schemas import TaskInfo

pytestmark = pytest.mark.integration

NODES = {"r-1": "127.0.0.11", "r-2": "127.0.0.12", "r-3": "127.0.0.13"}
LIVENESS_TIMEOUT = 4
BASE: dict[str, Any] = {"image": "theseus/busybox:latest", "cpus": 0.1, "mem": 64}
LOOP = "while true; do sleep 0.1; done"


@pytest.fixture(scope="module")
def resilient(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Cluster]:
    agents = {name: {"address": address} for name, address in NODES.items()}
    cluster = start_cluster(
        Path(tmp_path_factory.mktemp("resilient")), agents, liveness_timeout=LIVENESS_TIMEOUT
    )
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def clean_slate(resilient: Cluster, docker_client: docker.DockerClient) -> Iterator[ServerClient]:
    """Each test starts and ends with every node eligible and no group or container left."""
    with resilient.client() as client:
        yield client
        for name in NODES:
            client.set_eligibility(name, True)
        for group in client.groups().groups:
            client.remove(group.service, group.labels)
        cluster_id = client.health().cluster_id
        wait_until(
            lambda: (
                not docker_client.api.containers(
                    all=True, filters={"label": f"theseus.cluster={cluster_id}"}
                )
            ),
            60,
            "every container of the test removed",
        )


def containers_on(
    docker_client: docker.DockerClient, node: str, service: str
) -> list[dict[str, Any]]:
    filters = {"label": [f"theseus.node={node}", f"theseus.service={service}"]}
    return list(docker_client.api.containers(filters=filters))


def by_node(tasks: list[TaskInfo]) -> dict[str, list[TaskInfo]]:
    nodes: dict[str, list[TaskInfo]] = {}
    for task in tasks:
        nodes.setdefault(task.node or "-", []).append(task)
    return nodes


class RunningFloor:
    """Samples a service's running tasks (whatever their desired state) in a thread and keeps
    the lowest count seen: a drain must never dip below ``instances``."""

    def __init__(self, url: str, service: str) -> None:
        self.lowest: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(url, service), daemon=True)
        self._thread.start()

    def _sample(self, url: str, service: str) -> None:
        with ServerClient(url) as client:
            while not self._stop.wait(0.05):
                count = sum(t.state == "running" for t in client.tasks(service).tasks)
                self.lowest = count if self.lowest is None else min(self.lowest, count)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        assert self.lowest is not None
        return self.lowest


def theseus_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "theseus", "--server", cluster.server_url, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_drain_moves_tasks_replacement_first_and_keeps_new_work_off(
    resilient: Cluster, clean_slate: ServerClient, docker_client: docker.DockerClient
) -> None:
    client = clean_slate
    deploy(client, drained={**BASE, "instances": 3})
    tasks = wait_running(client, "drained", 3)
    assert set(by_node(tasks)) == set(NODES), "spread one per node"

    floor = RunningFloor(resilient.server_url, "drained")
    done = theseus_cli(resilient, "nodes", "drain", "r-1", "--wait", "--timeout", "60")
    lowest = floor.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "r-1: draining, 0 tasks" in done.stdout
    assert lowest >= 3, "the drain stopped a task before its replacement ran"

    moved = wait_running(client, "drained", 3)
    assert "r-1" not in by_node(moved)
    assert not containers_on(docker_client, "r-1", "drained")
    stopped = {t.id for t in tasks if t.node == "r-1"}
    assert not stopped & {t.id for t in moved}

    # Draining also means ineligible: new work goes elsewhere until it is eligible again.
    deploy(client, fresh={**BASE, "instances": 4})
    assert "r-1" not in by_node(wait_running(client, "fresh", 4))
    listing = theseus_cli(resilient, "nodes")
    assert "draining" in listing.stdout
    assert client.set_eligibility("r-1", True).eligibility == "eligible"
    client.scale("fresh", 6)
    assert len(by_node(wait_running(client, "fresh", 6)).get("r-1", [])) == 2


def test_a_lost_node_that_returns_stops_its_replaced_containers(
    resilient: Cluster, clean_slate: ServerClient, docker_client: docker.DockerClient
) -> None:
    client = clean_slate
    # Sticky as well: a lost node is the one case where a sticky task moves.
    deploy(client, wanderer={**BASE, "instances": 3, "sticky": True})
    before = wait_running(client, "wanderer", 3)
    stranded = {t.id for t in before if t.node == "r-3"}
    assert len(stranded) == 1
    agent = resilient.processes["r-3"]
    agent.signal(signal.SIGSTOP)  # the machine stops answering; its containers run on
    try:
        lost_at = time.monotonic()

        def replaced() -> bool:
            tasks = running(client, "wanderer")
            entries = client.registry("wanderer").groups
            registered = {c.instance_name for g in entries for c in g.containers}
            return (
                len(tasks) == 3
                and "r-3" not in by_node(tasks)
                and not stranded & registered
                and len(registered) == 3
            )

        wait_until(replaced, 30, "the lost node's task replaced and unregistered")
        moved_after = time.monotonic() - lost_at
        assert client.node("r-3").status == "lost"
        assert containers_on(docker_client, "r-3", "wanderer"), "nothing stops it while away"
    finally:
        agent.signal(signal.SIGCONT)
    wait_until(
        lambda: not containers_on(docker_client, "r-3", "wanderer"),
        30,
        "the returning node stops the container whose task was replaced",
    )
    wait_until(lambda: client.node("r-3").status == "ready", 30, "r-3 ready again")
    print(f"lost node's task replaced and unregistered {moved_after:.2f}s after it froze")
    client.scale("wanderer", 4)
    tasks = wait_running(client, "wanderer", 4)
    assert len(by_node(tasks).get("r-3", [])) == 1, "schedulable again"
    assert {t.id for t in tasks} >= {t.id for t in before if t.node != "r-3"}


def test_a_restarted_agent_re_adopts_its_containers_and_removes_strays(
    resilient: Cluster, clean_slate: ServerClient, docker_client: docker.DockerClient
) -> None:
    client = clean_slate
    deploy(client, steady={**BASE, "instances": 3}, leaving={**BASE, "instances": 3})
    steady = {t.id: t.container_id for t in wait_running(client, "steady", 3) if t.node == "r-2"}
    wait_running(client, "leaving", 3)
    assert len(steady) == 1
    (steady_container,) = steady.values()
    assert steady_container
    started = docker_client.api.inspect_container(steady_container)["State"]["StartedAt"]
    cluster_id = client.health().cluster_id

    resilient.processes["r-2"].stop(signal.SIGKILL)
    killed_at = time.monotonic()
    client.remove("leaving")  # decided while the agent is away
    stray = docker_client.containers.create(
        "theseus/busybox:latest",
        labels={
            "theseus.task": "steady.not-a-task",
            "theseus.service": "steady",
            "theseus.node": "r-2",
            "theseus.cluster": cluster_id or "",
        },
    )
    stray.start()
    resilient.start_agent("r-2", NODES["r-2"])
    wait_until(
        lambda: not containers_on(docker_client, "r-2", "leaving"), 30, "removed group stopped"
    )
    wait_until(
        lambda: stray.id not in {c["Id"] for c in containers_on(docker_client, "r-2", "steady")},
        30,
        "the stray Theseus-labelled container removed",
    )
    assert time.monotonic() - killed_at < 30
    after = wait_running(client, "steady", 3)
    on_r2 = {t.id: t.container_id for t in after if t.node == "r-2"}
    assert on_r2 == steady, "same task, same container: re-adopted, not replaced"
    assert docker_client.api.inspect_container(steady_container)["State"]["StartedAt"] == started
    assert all(t.attempt == 0 for t in after)


def stop_events(docker_client: docker.DockerClient, service: str, since: float) -> list[Any]:
    events = docker_client.events(
        since=since,
        until=time.time(),
        decode=True,
        filters={"label": f"theseus.service={service}", "event": ["kill", "die"]},
    )
    return sorted(events, key=lambda e: int(e["timeNano"]))


def scale_to_zero_and_time_the_stops(
    client: ServerClient, docker_client: docker.DockerClient, services: tuple[str, ...]
) -> dict[str, tuple[list[str], float, str]]:
    """Scale each (running) service to 0 and wait until its container is gone; per service,
    from Docker's events: the signals sent, the seconds from the first to the death, and
    the exit code."""
    since = time.time() - 1
    for service in services:
        client.scale(service, 0)
    for service in services:
        wait_until(
            lambda s=service: (
                not docker_client.api.containers(
                    all=True, filters={"label": f"theseus.service={s}"}
                )
            ),
            30,
            f"{service} stopped and removed",
        )
        # Stopped because we asked: a clean stop, not a death kept in the history. The
        # record goes once the leader has seen the stop, which may be just after the
        # container went: a death would stay.
        wait_until(
            lambda s=service: not client.tasks(s, include_stopped=True).tasks,
            10,
            f"{service}'s stopped task forgotten",
        )
    timelines = {}
    for service in services:
        events = stop_events(docker_client, service, since)
        kills = [e for e in events if e["Action"] == "kill"]
        die = next(e for e in events if e["Action"] == "die")
        timelines[service] = (
            [e["Actor"]["Attributes"].get("signal", "") for e in kills],
            (int(die["timeNano"]) - int(kills[0]["timeNano"])) / 1e9,
            die["Actor"]["Attributes"]["exitCode"],
        )
    return timelines


def test_graceful_stop_gives_the_grace_period_then_kills(
    resilient: Cluster, clean_slate: ServerClient, docker_client: docker.DockerClient
) -> None:
    client = clean_slate
    polite = f"trap 'echo bye; exit 0' TERM; echo trapped; {LOOP}"
    stubborn = f"trap '' TERM; echo trapped; {LOOP}"
    deploy(
        client,
        polite={**BASE, "command": polite, "task_kill_grace_period_seconds": 10},
        stubborn={**BASE, "command": stubborn, "task_kill_grace_period_seconds": 2},
    )
    wait_running(client, "polite", 1)
    wait_running(client, "stubborn", 1)
    # Running is the container's start; its shell sets the trap just after. A SIGTERM in
    # between (a loaded machine) would end the stubborn one as if it had no trap.
    for service in ("polite", "stubborn"):
        wait_until(
            lambda s=service: all(
                b"trapped" in c.logs()
                for c in docker_client.containers.list(filters={"label": f"theseus.service={s}"})
            ),
            30,
            f"{service}'s trap set",
        )
    stops = scale_to_zero_and_time_the_stops(client, docker_client, ("polite", "stubborn"))

    signals, took, code = stops["polite"]
    assert signals == ["15"] and code == "0" and took < 1.5, (signals, took, code)
    signals, took, code = stops["stubborn"]
    assert signals == ["15", "9"] and code == "137", (signals, code)
    assert 1.8 <= took <= 4.0, f"SIGKILL {took:.2f}s after SIGTERM, grace period 2s"


def test_a_command_stops_at_sigterm_thanks_to_init_unless_init_is_off(
    resilient: Cluster, clean_slate: ServerClient, docker_client: docker.DockerClient
) -> None:
    """``sh -c 'sleep 600'`` as PID 1 would ignore SIGTERM (no handler: PID 1 is immune)
    and wait out the whole grace period; with Docker's init as PID 1 it dies at once. The
    chaos run found the same wait for a SIGTERM that came before the image's trap was set."""
    client = clean_slate
    deploy(
        client,
        plain={**BASE, "command": "sleep 600", "task_kill_grace_period_seconds": 10},
        pid1={**BASE, "command": "sleep 600", "task_kill_grace_period_seconds": 2, "init": False},
    )
    wait_running(client, "plain", 1)
    wait_running(client, "pid1", 1)
    stops = scale_to_zero_and_time_the_stops(client, docker_client, ("plain", "pid1"))

    signals, took, _ = stops["plain"]
    assert signals == ["15"] and took < 1.5, (signals, took)
    signals, took, _ = stops["pid1"]
    assert signals == ["15", "9"] and 1.8 <= took <= 4.0, (signals, took)


def test_a_crash_loop_backs_off_exponentially_without_starving_others(
    resilient: Cluster, clean_slate: ServerClient
) -> None:
    client = clean_slate
    crashy = {**BASE, "command": "exit 3", "backoff_seconds": 0.5, "backoff_factor": 2.0}
    deploy(client, crashy={**crashy, "max_launch_delay_seconds": 60})

    def attempts() -> dict[int, TaskInfo] | None:
        tasks = client.tasks("crashy", include_stopped=True).tasks
        seen = {t.attempt: t for t in tasks}
        return seen if {2, 3, 4} <= set(seen) else None

    seen = wait_until(attempts, 40, "the crash loop reaching its fourth attempt")
    assert [seen[a].backoff_delay for a in (2, 3, 4)] == [0.5, 1.0, 2.0]
    # The delays were honoured: each attempt started no sooner than its delay after the last.
    for attempt in (3, 4):
        previous, current = seen[attempt - 1], seen[attempt]
        assert previous.finished_at is not None and current.not_before is not None
        assert current.not_before - previous.finished_at == pytest.approx(
            current.backoff_delay, abs=0.01
        )
        assert current.started_at is None or current.started_at >= current.not_before - 0.05
    deploy(client, healthy={**BASE, "instances": 3})
    wait_running(client, "healthy", 3, timeout=20)
    ps = theseus_cli(resilient, "ps")
    assert "crashy" in ps.stdout and "attempt" in ps.stdout


def test_a_sticky_task_restarts_on_its_own_node(
    resilient: Cluster, clean_slate: ServerClient, docker_client: docker.DockerClient
) -> None:
    client = clean_slate
    deploy(client, homebody={**BASE, "instances": 2, "sticky": True})
    before = wait_running(client, "homebody", 2)
    for victim in before:
        assert victim.container_id
        docker_client.api.kill(victim.container_id)

        def replaced(v: TaskInfo = victim) -> TaskInfo | None:
            fresh = [t for t in running(client, "homebody") if t.id not in {x.id for x in before}]
            return next((t for t in fresh if t.node == v.node), None) if fresh else None

        replacement = wait_until(replaced, 30, f"{victim.id} restarted on {victim.node}")
        assert replacement.node == victim.node
