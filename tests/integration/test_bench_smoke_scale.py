"""The scale, footprint and node-loss benchmarks (docker nodes, hollow nodes) run end to end
at a tiny size.

Not timed: each benchmark is run as users run it (``python bench/<name>.py``) and must exit 0
and print its table. Each runs in its own session so that a timeout can stop it and every
process it started (they are its children; ``theseus up``'s detached ones are stopped by
``theseus down``, also when the benchmark failed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"

pytestmark = pytest.mark.integration


def run_bench(script: str, *args: str, timeout: float = 60.0) -> str:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    process = subprocess.Popen(
        [sys.executable, str(BENCH / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # the benchmark cleans up on SIGTERM
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"{script} did not finish within {timeout:.0f} s:\n{output}")
    assert process.returncode == 0, f"{script} exited with {process.returncode}:\n{output}"
    return output


def test_scale_tiny() -> None:
    output = run_bench(
        "scale.py",
        *("--nodes", "20", "--tasks", "200", "--services", "4", "--workers", "2"),
        *("--timeout", "30", "--idle-window", "1", "--rest-window", "1"),
    )
    assert "control plane at scale: 20 hollow nodes" in output
    assert "all 200 reported running" in output
    assert "etcd keys written" in output
    assert "the same, no index: the server waits for its view" in output
    assert "all running, at rest: server CPU (1 s)" in output


def test_footprint() -> None:
    output = run_bench("footprint.py", "--settle", "1")
    assert "footprint (MiB)" in output
    assert "server: 3 sim nodes, 100 running tasks" in output
    assert "agent (sim driver): registered, idle" in output


def test_node_loss_once(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    try:
        output = run_bench("node_loss.py", "--repeat", "1", "--state-dir", str(state_dir))
    finally:
        if (state_dir / "cluster.json").exists():  # the benchmark could not tear it down
            subprocess.run(
                [sys.executable, "-m", "theseus", "down", "--purge", "--state-dir", str(state_dir)],
                check=False,
                timeout=60,
            )
    assert "node loss: 3 docker nodes, 6 busybox tasks, 1 repetitions" in output
    assert "both (the figure)" in output


def test_hollow_node_loss_tiny() -> None:
    output = run_bench(
        "hollow_loss.py",
        *("--nodes", "8", "--tasks", "40", "--services", "2", "--workers", "2"),
        *("--timeout", "30"),
    )
    assert "8 hollow nodes, 40 tasks running" in output
    assert "killing 4 nodes" in output
    assert "every task running again" in output and "not within" not in output
