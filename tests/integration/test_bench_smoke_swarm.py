"""The side-by-side benchmarks (``bench/converge.py``, ``bench/selfheal.py``) run end to end at
a tiny size: each starts its own 3-node cluster, enters Docker Swarm mode, prints its table and
undoes both. Not timed: figures come from full runs (``BENCHMARKS.md``).

Whatever happens, each test stops the cluster it asked for (``theseus down --purge`` on the
state dir it passed), removes the swarm services and containers labelled with its run id, and
leaves swarm mode if the engine was not in a swarm before.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"
LABEL = "theseus.bench"  # what bench/common.py labels every object of a run with


def swarm_state(engine: docker.DockerClient) -> str:
    return str(engine.info()["Swarm"]["LocalNodeState"])


@pytest.fixture
def bench_env(
    tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str
) -> Iterator[tuple[Path, str]]:
    """A state dir and a run id for one benchmark run; cleans up after it."""
    state_dir = tmp_path / "state"
    run_id = f"smoke{uuid.uuid4().hex[:6]}"
    swarm_before = swarm_state(docker_client)
    try:
        yield state_dir, run_id
    finally:
        subprocess.run(
            [sys.executable, "-m", "theseus", "down", "--state-dir", str(state_dir), "--purge"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        label = f"{LABEL}={run_id}"
        if swarm_state(docker_client) == "active":
            for service in docker_client.services.list(filters={"label": label}):
                with contextlib.suppress(docker.errors.APIError):
                    service.remove()
            if swarm_before == "inactive":
                docker_client.swarm.leave(force=True)
        for container in docker_client.api.containers(all=True, filters={"label": label}):
            with contextlib.suppress(docker.errors.APIError):
                docker_client.api.remove_container(container["Id"], force=True)


def run_bench(script: str, state_dir: Path, run_id: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--state-dir", str(state_dir), "--run-id", run_id]
        + list(args),
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_converge_runs_end_to_end(
    bench_env: tuple[Path, str], docker_client: docker.DockerClient
) -> None:
    state_dir, run_id = bench_env
    swarm_before = swarm_state(docker_client)
    out = run_bench(
        "converge.py", state_dir, run_id, "--sizes", "2", "--scale", "1:2", "--repeat", "1"
    )
    assert "converge N=2" in out and "scale 1 -> 2" in out
    for side in ("theseus dev: POST /deploy", "swarm: service create", "engine: N parallel"):
        assert side in out
    assert "ratio theseus dev / swarm" in out and "ratio theseus dev / engine" in out
    assert swarm_state(docker_client) == swarm_before  # left swarm mode again if it entered
    assert not docker_client.api.containers(all=True, filters={"label": f"{LABEL}={run_id}"})
    assert not state_dir.exists()  # theseus down --purge


def test_selfheal_runs_end_to_end(
    bench_env: tuple[Path, str], docker_client: docker.DockerClient
) -> None:
    state_dir, run_id = bench_env
    swarm_before = swarm_state(docker_client)
    out = run_bench(
        "selfheal.py",
        state_dir,
        run_id,
        "--replicas",
        "2",
        "--heal-repeat",
        "2",
        "--swarm-repeat",
        "1",
        "--min-age",
        "0",
    )
    assert "theseus: kill -> replacement running + registered" in out
    assert "swarm: kill -> replacement task running" in out
    assert "ratio theseus / swarm" in out
    assert swarm_state(docker_client) == swarm_before
    assert not docker_client.api.containers(all=True, filters={"label": f"{LABEL}={run_id}"})
