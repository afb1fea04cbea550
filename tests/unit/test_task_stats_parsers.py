"""The pure parsers of the task metrics: cgroup v1 and v2 files, /proc/<pid>/cgroup,
/proc/<pid>/net/dev and a process group's /proc files, on contents as the kernel writes them
(the v1 ones copied from a Docker container on cgroupfs; the v2 ones in the kernel's
format, cgroup-v2.rst)."""

from __future__ import annotations

import pytest

from theseus.agent.stats.cgroups import (
    V1_FILES,
    V2_FILES,
    cgroup_dirs,
    parse_keyed,
    parse_number,
    parse_proc_cgroup,
    v1_reading,
    v2_reading,
)
from theseus.agent.stats.procfs import (
    parse_net_dev,
    parse_proc_stat,
    parse_status_rss,
    tree_reading,
)

CID = "093e53641b351b61e674e33887ba25b7bc68d76f23342a1b67501904e053c5dc"

PROC_CGROUP_V1 = f"""\
12:hugetlb:/docker/{CID}
9:name=systemd:/docker/{CID}
8:pids:/docker/{CID}
4:memory:/docker/{CID}
2:cpu,cpuacct:/docker/{CID}
0::/docker/{CID}
"""

PROC_CGROUP_V2 = f"0::/system.slice/docker-{CID}.scope\n"

V1_MEMORY_STAT = """\
cache 1982464
rss 52428800
rss_huge 0
shmem 0
mapped_file 1548288
swap 0
inactive_anon 53248
active_anon 4096
inactive_file 1982464
active_file 0
hierarchical_memory_limit 67108864
hierarchical_memsw_limit 134217728
total_cache 1982464
total_rss 52428800
total_swap 4096
total_inactive_file 1982464
total_active_file 0
"""

V1_FILES_OF_A_CONTAINER = {
    "cpuacct.usage": "82507822000\n",
    "cpuacct.stat": "user 7000\nsystem 1250\n",
    "cpu.stat": (
        "nr_periods 1200\nnr_throttled 600\nthrottled_time 31000000000\nnr_bursts 0\nburst_time 0\n"
    ),
    "memory.usage_in_bytes": "56623104\n",
    "memory.limit_in_bytes": "67108864\n",
    "memory.stat": V1_MEMORY_STAT,
    "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    "pids.current": "3\n",
}

V2_FILES_OF_A_CONTAINER = {
    "cpu.stat": (
        "usage_usec 5250000\nuser_usec 4000000\nsystem_usec 1250000\n"
        "core_sched.force_idle_usec 0\nnr_periods 100\nnr_throttled 40\n"
        "throttled_usec 2500000\nnr_bursts 0\nburst_usec 0\n"
    ),
    "memory.current": "104857600\n",
    "memory.max": "max\n",
    "memory.stat": (
        "anon 83886080\nfile 20971520\nkernel 1048576\nshmem 0\n"
        "active_anon 83886080\ninactive_anon 0\nactive_file 4194304\ninactive_file 16777216\n"
    ),
    "memory.events": "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
    "memory.swap.current": "0\n",
    "pids.current": "7\n",
}

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:  123456     321    0    0    0     0          0         0    65432     123    0    0    0     0       0          0
"""  # noqa: E501


def test_proc_cgroup_v1_lists_each_controller() -> None:
    paths = parse_proc_cgroup(PROC_CGROUP_V1)
    assert paths["cpu"] == paths["cpuacct"] == paths["memory"] == f"/docker/{CID}"
    assert paths["name=systemd"] == f"/docker/{CID}"
    assert paths[""] == f"/docker/{CID}"


def test_cgroup_dirs_v1_per_controller() -> None:
    dirs = cgroup_dirs(PROC_CGROUP_V1, v2=False, root="/sys/fs/cgroup")
    assert set(dirs) == set(V1_FILES)
    assert dirs["cpuacct.usage"] == f"/sys/fs/cgroup/cpuacct/docker/{CID}"
    assert dirs["cpu.stat"] == f"/sys/fs/cgroup/cpu/docker/{CID}"
    assert dirs["memory.stat"] == f"/sys/fs/cgroup/memory/docker/{CID}"
    assert dirs["pids.current"] == f"/sys/fs/cgroup/pids/docker/{CID}"


def test_cgroup_dirs_v2_one_directory() -> None:
    dirs = cgroup_dirs(PROC_CGROUP_V2, v2=True, root="/sys/fs/cgroup")
    assert set(dirs) == set(V2_FILES)
    assert set(dirs.values()) == {f"/sys/fs/cgroup/system.slice/docker-{CID}.scope"}


def test_cgroup_dirs_without_the_hierarchy() -> None:
    assert cgroup_dirs("garbage\n", v2=True) == {}
    assert cgroup_dirs("8:pids:/x\n", v2=False) == {"pids.current": "/sys/fs/cgroup/pids/x"}


def test_keyed_and_numbers() -> None:
    assert parse_keyed("a 1\nb two\nc 3 4\n\nd 5") == {"a": 1, "d": 5}
    assert parse_number("42\n") == 42
    assert parse_number("max\n") is None
    assert parse_number(None) is None
    assert parse_number("") is None


def test_v1_reading() -> None:
    reading = v1_reading(V1_FILES_OF_A_CONTAINER)
    assert reading.cpu_seconds == pytest.approx(82.507822)
    assert reading.cpu_user_seconds == pytest.approx(70.0)
    assert reading.cpu_system_seconds == pytest.approx(12.5)
    assert (reading.cpu_periods, reading.cpu_throttled_periods) == (1200, 600)
    assert reading.cpu_throttled_seconds == pytest.approx(31.0)
    assert reading.memory_usage_bytes == 56623104
    assert reading.memory_working_set_bytes == 56623104 - 1982464
    assert reading.memory_rss_bytes == 52428800
    assert reading.memory_cache_bytes == 1982464
    assert reading.memory_swap_bytes == 4096
    assert reading.memory_limit_bytes == 67108864
    assert reading.oom_kills == 2
    assert reading.processes == 3
    assert reading.network_rx_bytes is None  # not from cgroups


def test_v1_without_limit_and_missing_files() -> None:
    files = dict(V1_FILES_OF_A_CONTAINER)
    files["memory.limit_in_bytes"] = "9223372036854771712\n"  # v1's "no limit"
    del files["memory.oom_control"]  # kernels before 4.13 have no oom_kill line
    del files["pids.current"]
    reading = v1_reading(files)
    assert reading.memory_limit_bytes is None
    assert reading.oom_kills is None
    assert reading.processes is None
    assert v1_reading({}).memory_rss_bytes is None  # nothing read: nothing measured


def test_v1_working_set_is_clamped() -> None:
    files = dict(V1_FILES_OF_A_CONTAINER, **{"memory.usage_in_bytes": "1000\n"})
    assert v1_reading(files).memory_working_set_bytes == 0


def test_v2_reading() -> None:
    reading = v2_reading(V2_FILES_OF_A_CONTAINER)
    assert reading.cpu_seconds == pytest.approx(5.25)
    assert reading.cpu_user_seconds == pytest.approx(4.0)
    assert reading.cpu_system_seconds == pytest.approx(1.25)
    assert (reading.cpu_periods, reading.cpu_throttled_periods) == (100, 40)
    assert reading.cpu_throttled_seconds == pytest.approx(2.5)
    assert reading.memory_usage_bytes == 104857600
    assert reading.memory_working_set_bytes == 104857600 - 16777216
    assert reading.memory_rss_bytes == 83886080
    assert reading.memory_cache_bytes == 20971520
    assert reading.memory_swap_bytes == 0
    assert reading.memory_limit_bytes is None  # "max"
    assert reading.oom_kills == 1
    assert reading.processes == 7


def test_v2_with_limit_and_without_memory_controller() -> None:
    reading = v2_reading(dict(V2_FILES_OF_A_CONTAINER, **{"memory.max": "268435456\n"}))
    assert reading.memory_limit_bytes == 268435456
    cpu_only = v2_reading({"cpu.stat": V2_FILES_OF_A_CONTAINER["cpu.stat"]})
    assert cpu_only.cpu_seconds == pytest.approx(5.25)
    assert cpu_only.memory_usage_bytes is None
    assert cpu_only.memory_working_set_bytes is None
    assert cpu_only.oom_kills is None


def test_net_dev_sums_all_but_loopback() -> None:
    counters = parse_net_dev(NET_DEV)
    assert counters is not None
    assert (counters.rx_bytes, counters.rx_packets) == (123456, 321)
    assert (counters.tx_bytes, counters.tx_packets) == (65432, 123)
    assert parse_net_dev("") is None
    only_lo = "\n".join(NET_DEV.splitlines()[:3])
    assert parse_net_dev(only_lo) == (type(counters))(0, 0, 0, 0)


def test_proc_stat_with_a_strange_command() -> None:
    text = (
        "4644 (sh (x) y) R 4630 4644 4644 0 -1 4194560 260 0 0 0 "
        "1500 250 30 20 20 0 1 0 123456 1589248 216 18446744073709551615"
    )
    stat = parse_proc_stat(text)
    assert stat is not None
    assert (stat.pid, stat.pgrp) == (4644, 4644)
    assert stat.user_seconds == pytest.approx(15.3)
    assert stat.system_seconds == pytest.approx(2.7)
    assert parse_proc_stat("nonsense") is None


def test_status_rss_and_tree() -> None:
    status = "Name:\tpython3\nVmPeak:\t  20000 kB\nVmRSS:\t   10240 kB\nThreads:\t1\n"
    assert parse_status_rss(status) == 10240 * 1024
    assert parse_status_rss("Name:\tkthreadd\n") is None
    stats = [parse_proc_stat(f"{p} (sh) S 1 100 100 0 -1 0 0 0 0 0 100 50 0 0") for p in (100, 101)]
    reading = tree_reading([s for s in stats if s is not None], [1024, 2048])
    assert reading.cpu_seconds == pytest.approx(3.0)
    assert reading.memory_rss_bytes == 3072
    assert reading.processes == 2
    assert reading.memory_limit_bytes is None
