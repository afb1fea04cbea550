"""The agent's cgroup v2 reader against the kernel's own files, on whatever this host has.

On a cgroup v2 host (the hierarchy at ``/sys/fs/cgroup``) this reads Docker's containers as
the agent does there. On a hybrid host (v1 controllers, and a v2 hierarchy at
``/sys/fs/cgroup/unified`` without them, as this project's development machine is) Docker
still makes each container a v2 cgroup, whose ``cpu.stat`` counts the CPU its processes
use; the reader is pointed there. Either way a real container is measured through
``ContainerReader(..., v2=True)``: a burner limited to half a core (by the v1 ``cpu``
controller on a hybrid host, by v2's on a v2 host) must show about half a core, and the v1
reader of the same container at the same moments must agree. A controller the hierarchy
does not have gives ``None`` figures, never zeros.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import docker
import pytest
from docker.models.containers import Container

from theseus.agent.drivers.base import StatsTarget
from theseus.agent.stats.reader import CGROUP_ROOT, ContainerReader, is_cgroup_v2
from theseus.agent.stats.samples import Reading

pytestmark = pytest.mark.integration

UNIFIED = os.path.join(CGROUP_ROOT, "unified")
V2_ROOT = CGROUP_ROOT if is_cgroup_v2() else UNIFIED


@pytest.fixture
def burner(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[Container]:
    if not os.path.exists(os.path.join(V2_ROOT, "cgroup.procs")):
        pytest.skip("this host mounts no cgroup v2 hierarchy")
    container = docker_client.containers.run(
        busybox_image,
        ["sh", "-c", "while :; do :; done"],
        detach=True,
        nano_cpus=500_000_000,
        labels={"theseus.test": "cgroup-v2"},
    )
    try:
        yield container
    finally:
        container.remove(force=True)


def _cores(readers: list[ContainerReader], seconds: float) -> list[tuple[Reading, float]]:
    """Each reader's reading at the end, and the cores it saw used over the same ``seconds``
    of wall time."""
    first = [reader.read() for reader in readers]
    t0 = time.monotonic()
    time.sleep(seconds)  # the measuring window itself, not a wait for a condition
    last = [reader.read() for reader in readers]
    elapsed = time.monotonic() - t0
    found: list[tuple[Reading, float]] = []
    for before, after in zip(first, last, strict=True):
        assert before is not None and after is not None
        assert before.cpu_seconds is not None and after.cpu_seconds is not None
        found.append((after, (after.cpu_seconds - before.cpu_seconds) / elapsed))
    return found


def test_the_v2_reader_measures_a_real_container(burner: Container) -> None:
    burner.reload()
    pid = int(burner.attrs["State"]["Pid"])
    v2 = ContainerReader(StatsTarget("", pid), v2=True, root=V2_ROOT)
    hybrid = V2_ROOT == UNIFIED  # then the same container is read through v1 too
    readers = [v2, ContainerReader(StatsTarget("", pid), v2=False)] if hybrid else [v2]

    (reading, v2_cores), *v1 = _cores(readers, 3.0)
    assert 0.4 <= v2_cores <= 0.6, f"the v2 reader saw {v2_cores:.2f} cores of a 0.5 quota"
    assert reading.cpu_user_seconds is not None and reading.cpu_system_seconds is not None
    assert reading.network_rx_bytes is not None  # its namespace, through its process
    if hybrid:
        [(_, v1_cores)] = v1
        assert abs(v1_cores - v2_cores) <= 0.05, (v1_cores, v2_cores)
        # No memory or pids controller on the v2 side: unknown, not zero.
        assert reading.memory_usage_bytes is None and reading.memory_limit_bytes is None
        assert reading.processes is None and reading.oom_kills is None
    else:
        assert reading.memory_usage_bytes is not None and reading.memory_usage_bytes > 0
        assert reading.processes is not None and reading.processes >= 1
        assert reading.cpu_throttled_periods is not None and reading.cpu_throttled_periods > 0
