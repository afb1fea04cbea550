"""The task metrics' samples: CPU rates, pod totals, the bounded ring, the store, the node's
totals and the wire form; and the collector's passes over fake files (a cgroup v2 tree and a
/proc in a temporary directory)."""

from __future__ import annotations

import typing
from collections.abc import Collection
from pathlib import Path

import pytest

from theseus.agent.drivers.base import StatsTarget
from theseus.agent.stats.collector import Running, StatsCollector
from theseus.agent.stats.reader import ContainerReader
from theseus.agent.stats.samples import (
    Reading,
    Ring,
    SampleStore,
    TaskMeta,
    TaskSample,
    Usage,
    cpu_cores,
    node_totals,
    sample_json,
    task_json,
    total,
)
from theseus.api.schemas import ContainerUsage, TaskStats


def sample(at: float, cores: float = 0.5, memory: int = 100) -> TaskSample:
    return TaskSample(at, Usage(cores, Reading(memory_working_set_bytes=memory)))


def test_cpu_cores_from_two_readings() -> None:
    before, after = Reading(cpu_seconds=10.0), Reading(cpu_seconds=15.0)
    assert cpu_cores(before, 100.0, after, 110.0) == pytest.approx(0.5)
    assert cpu_cores(None, None, after, 110.0) is None
    assert cpu_cores(after, 100.0, before, 110.0) is None  # went back: a new container
    assert cpu_cores(before, 110.0, after, 110.0) is None
    assert cpu_cores(Reading(), 100.0, after, 110.0) is None


def test_pod_total_sums_members_and_counts_the_network_once() -> None:
    web = Usage(
        0.25,
        Reading(memory_usage_bytes=100, memory_limit_bytes=1000, network_rx_bytes=7, processes=2),
    )
    side = Usage(0.5, Reading(memory_usage_bytes=50, memory_limit_bytes=None, processes=1))
    pod = total([web, side])
    assert pod.cpu_cores == pytest.approx(0.75)
    assert pod.reading.memory_usage_bytes == 150
    assert pod.reading.memory_limit_bytes is None  # one member has none
    assert pod.reading.network_rx_bytes == 7
    assert pod.reading.processes == 3
    assert pod.reading.oom_kills is None  # nobody measured it
    assert total([web]) is web


def test_ring_is_bounded_and_filters_by_time() -> None:
    ring = Ring(3)
    for at in range(5):
        ring.append(sample(float(at)))
    assert [s.time for s in ring.since()] == [2.0, 3.0, 4.0]
    assert [s.time for s in ring.since(2.5)] == [3.0, 4.0]
    assert [s.time for s in ring.since(limit=1)] == [4.0]
    latest = ring.latest()
    assert latest is not None and latest.time == 4.0
    assert len(ring) == 3 and Ring(3).latest() is None


def test_store_keeps_known_tasks_only() -> None:
    store = SampleStore(capacity=10)
    a, b = TaskMeta("a", "web", "web:prod", ("prod",)), TaskMeta("b", "db", "db:")
    store.record(a, sample(1.0))
    store.record(b, sample(1.0))
    store.record(a, sample(2.0))
    found = store.get("a")
    assert found is not None and len(found[1]) == 2
    store.keep_only(["a"])
    assert store.get("b") is None and len(store) == 1
    assert [(meta.task_id, s.time) for meta, s in store.latest()] == [("a", 2.0)]


def test_node_totals() -> None:
    totals = node_totals(5.0, [sample(1.0, 0.5, 100), sample(1.0, 0.25, 50)])
    assert (totals.cpu_cores, totals.memory_bytes, totals.tasks) == (0.75, 150, 2)
    first = TaskSample(1.0, Usage(None, Reading()))
    assert node_totals(5.0, [first]).cpu_cores == 0.0


def test_wire_form_validates() -> None:
    pod = TaskSample(
        3.0,
        Usage(0.5, Reading(memory_usage_bytes=10)),
        {"web": Usage(0.5, Reading(memory_usage_bytes=10))},
    )
    body = task_json(TaskMeta("t1", "web", "web:", ()), "node-1", 10.0, [pod])
    parsed = TaskStats.model_validate(body)
    assert parsed.samples[0].members["web"].memory_usage_bytes == 10
    assert parsed.samples[0].cpu_cores == 0.5
    assert sample_json(sample(1.0))["members"] == {}


def test_the_wire_has_every_figure_of_a_reading() -> None:
    """The agent's ``Reading`` and the wire's ``ContainerUsage`` spell the same figures twice
    (``samples.py`` says why): one added to either alone would be dropped where the server
    re-reads an agent's samples (``GET /v1/stats``), or fail the agent's answer there."""
    wire = {name: field.annotation for name, field in ContainerUsage.model_fields.items()}
    assert wire.pop("cpu_cores") == float | None
    assert wire == typing.get_type_hints(Reading)


def _fake_container(tmp: Path, pid: int, usage_usec: int, memory: int) -> None:
    """A cgroup v2 directory and a /proc entry pointing at it."""
    cgroup = tmp / "cgroup" / "docker" / str(pid)
    cgroup.mkdir(parents=True, exist_ok=True)
    (cgroup / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 0\nsystem_usec 0\n")
    (cgroup / "memory.current").write_text(f"{memory}\n")
    (cgroup / "memory.stat").write_text("anon 0\nfile 0\ninactive_file 0\n")
    proc = tmp / "proc" / str(pid)
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "cgroup").write_text(f"0::/docker/{pid}\n")


def test_container_reader_on_fake_files(tmp_path: Path) -> None:
    _fake_container(tmp_path, 42, 2_000_000, 4096)
    reader = ContainerReader(
        StatsTarget("", 42), v2=True, proc=str(tmp_path / "proc"), root=str(tmp_path / "cgroup")
    )
    reading = reader.read()
    assert reading is not None
    assert reading.cpu_seconds == pytest.approx(2.0)
    assert reading.memory_usage_bytes == 4096
    assert reading.network_rx_bytes is None  # no net/dev there
    gone = ContainerReader(StatsTarget("", 43), v2=True, proc=str(tmp_path / "proc"))
    assert gone.read() is None


class _Source:
    def __init__(self, targets: dict[str, list[StatsTarget]]) -> None:
        self.targets = targets
        self.asked: list[str] = []

    async def stats_targets(self, handle: str) -> list[StatsTarget]:
        self.asked.append(handle)
        return self.targets.get(handle, [])


async def test_collector_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two passes over a fake cgroup tree: the driver is asked once per task, the second
    pass has a CPU rate, a pod has members and a total, a forgotten task's samples go."""
    import theseus.agent.stats.reader as reader

    real = reader.ContainerReader.__init__

    def rooted(self: ContainerReader, target: StatsTarget, v2: bool, *_: object) -> None:
        real(self, target, v2, str(tmp_path / "proc"), str(tmp_path / "cgroup"))

    monkeypatch.setattr(reader.ContainerReader, "__init__", rooted)
    for pid in (1, 2, 3):
        _fake_container(tmp_path, pid, 1_000_000, 1000)
    source = _Source(
        {
            "c1": [StatsTarget("", 1)],
            "pod": [StatsTarget("app", 2), StatsTarget("side", 3, network=False)],
        }
    )
    known: list[str] = ["t1", "t2"]
    running = [
        Running(TaskMeta("t1", "web", "web:"), "c1"),
        Running(TaskMeta("t2", "pod", "pod:"), "pod", members=2),
    ]

    def tasks() -> tuple[list[Running], Collection[str]]:
        return running, known

    collector = StatsCollector(source, tasks, interval=1.0, retention=60.0, v2=True)
    assert collector.store.capacity == 60
    assert collector.usage() is None  # no pass yet: the heartbeat carries nothing
    await collector.collect_once()
    _fake_container(tmp_path, 1, 3_000_000, 2000)  # 2 s of CPU more
    await collector.collect_once()
    assert source.asked == ["c1", "pod"]
    found = collector.store.get("t1")
    assert found is not None
    first, second = found[1].since()
    assert first.usage.cpu_cores is None
    assert second.usage.cpu_cores is not None and second.usage.cpu_cores > 0
    assert second.usage.reading.memory_usage_bytes == 2000
    pod = collector.store.get("t2")
    assert pod is not None
    latest = pod[1].latest()
    assert latest is not None and set(latest.members) == {"app", "side"}
    assert latest.usage.reading.memory_usage_bytes == 2000
    totals = collector.store.totals
    assert totals is not None and totals.tasks == 2 and totals.memory_bytes == 4000
    usage = collector.usage()  # what the heartbeat carries
    assert usage is not None and (usage.tasks, usage.memory_bytes) == (2, 4000)
    assert usage.cpu_cores == pytest.approx(totals.cpu_cores)
    assert collector.passes == 2 and collector.cost_seconds > 0
    running.pop()
    known.remove("t2")
    assert collector.store.current == {"t1", "t2"}
    await collector.collect_once()
    assert collector.store.get("t2") is None
    assert collector.store.current == {"t1"}


def test_ring_keeps_samples_exactly() -> None:
    """Samples are stored packed (arrays of doubles): what comes out is what went in, ints
    as ints, "not measured" as None, a pod's members included."""
    full = Reading(
        cpu_seconds=12.345678901,
        cpu_user_seconds=10.5,
        cpu_periods=123456,
        memory_usage_bytes=(1 << 40) + 1,
        memory_limit_bytes=None,
        oom_kills=0,
        network_tx_packets=7,
    )
    pod = TaskSample(
        5.25, Usage(0.125, full), {"app": Usage(None, full), "side": Usage(0.5, Reading())}
    )
    ring = Ring(2)
    ring.append(pod)
    out = ring.latest()
    assert out == pod
    assert out is not None and isinstance(out.usage.reading.memory_usage_bytes, int)
    assert ring.since() == [pod] and ring.since(5.25) == []
