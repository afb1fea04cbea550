"""A short chaos run in the suite (``scripts/chaos`` runs the long one): faults and workload
for a few rounds on real processes and containers, then every invariant must hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.cluster import chaos_cluster
from tests.chaos.run import Chaos

pytestmark = pytest.mark.integration


def test_a_short_chaos_run_keeps_every_invariant(
    tmp_path: Path, busybox_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int.from_bytes(os.urandom(4))
    print(f"chaos seed {seed} (python -m tests.chaos --seed {seed} replays the choices)")
    with chaos_cluster(tmp_path, servers=2, etcd_members=3) as (cluster, agents):
        chaos = Chaos(cluster, agents, seed, round_seconds=8.0, settle_seconds=60.0)
        try:
            report = chaos.run(duration=20.0)
        finally:
            chaos.close()
    summary = report.summary()
    print(summary)
    assert summary["faults_total"] >= 5, summary
    assert report.violations == [], report.violations
