"""cgroup v1 and v2 files → one ``Reading`` of a container (pure: contents in, figures out).

Called by ``theseus.agent.stats.reader``, which finds a container's cgroup directories from
``/proc/<pid>/cgroup`` (``cgroup_dirs``), reads the files named by ``V1_FILES`` or
``V2_FILES`` and hands their contents here. A file that is missing or unreadable is absent
from the mapping, and every figure that depends on it is ``None`` ("not measured", never 0).

The figures follow cAdvisor (``lib/container/libcontainer/handler.go``): the working set is
usage minus inactive file pages, clamped at 0; RSS is ``total_rss`` (v1) or ``anon`` (v2);
cache is ``total_cache`` (v1) or ``file`` (v2).
"""

from __future__ import annotations

from collections.abc import Mapping

from theseus.agent.stats.samples import Reading

# The cgroup v1 files read, each with the controller whose hierarchy holds it.
V1_FILES: dict[str, str] = {
    "cpuacct.usage": "cpuacct",
    "cpuacct.stat": "cpuacct",
    "cpu.stat": "cpu",
    "memory.usage_in_bytes": "memory",
    "memory.limit_in_bytes": "memory",
    "memory.stat": "memory",
    "memory.oom_control": "memory",
    "pids.current": "pids",
}
# The cgroup v2 files read, all in the container's one directory.
V2_FILES: tuple[str, ...] = (
    "cpu.stat",
    "memory.current",
    "memory.max",
    "memory.stat",
    "memory.events",
    "memory.swap.current",
    "pids.current",
)
# cpuacct.stat counts in USER_HZ ticks, which is 100 on every Linux ABI that matters.
USER_HZ = 100
# v1 writes "no limit" as the largest page-aligned signed 64-bit number (about 2^63).
_V1_UNLIMITED = 1 << 62


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` → controller → path. v1 lines are ``N:cpu,cpuacct:/path``
    (each controller of the list gets the path); the v2 line ``0::/path`` is under ``""``.
    Named hierarchies (``name=systemd``) are kept under their name."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
            continue
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def cgroup_dirs(proc_cgroup: str, v2: bool, root: str = "/sys/fs/cgroup") -> dict[str, str]:
    """Each file to read (``V1_FILES`` or ``V2_FILES``) → the directory that holds it, from
    the process's ``/proc/<pid>/cgroup``. A controller it is not in is left out."""
    paths = parse_proc_cgroup(proc_cgroup)
    if v2:
        path = paths.get("")
        if path is None:
            return {}
        directory = root + path.rstrip("/")
        return {name: directory for name in V2_FILES}
    dirs: dict[str, str] = {}
    for name, controller in V1_FILES.items():
        path = paths.get(controller)
        if path is not None:
            # Co-mounted controllers (``cpu,cpuacct``) each have a symlink by their own
            # name, so the controller's name is always its directory.
            dirs[name] = f"{root}/{controller}{path.rstrip('/')}"
    return dirs


def parse_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (``memory.stat``, ``cpu.stat``, ``memory.events``,
    ``cpuacct.stat``, ``memory.oom_control``) → key → integer; other lines are skipped."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return values


def parse_number(text: str | None) -> int | None:
    """A file holding one integer; ``None`` when absent, empty, ``max`` or not a number."""
    if text is None:
        return None
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return None


def v1_reading(files: Mapping[str, str]) -> Reading:
    """A container's figures from its cgroup v1 files (name → contents)."""
    usage_ns = parse_number(files.get("cpuacct.usage"))
    ticks = parse_keyed(files.get("cpuacct.stat", ""))
    cpu = parse_keyed(files.get("cpu.stat", ""))
    memory = parse_keyed(files.get("memory.stat", ""))
    usage = parse_number(files.get("memory.usage_in_bytes"))
    limit = parse_number(files.get("memory.limit_in_bytes"))
    oom = parse_keyed(files.get("memory.oom_control", ""))
    has_memory_stat = "memory.stat" in files

    def stat(name: str) -> int | None:
        # total_*: the hierarchy's (a container's own processes may sit in sub-cgroups).
        value = memory.get(f"total_{name}", memory.get(name))
        return value if value is not None or not has_memory_stat else 0

    inactive = stat("inactive_file")
    return Reading(
        cpu_seconds=None if usage_ns is None else usage_ns / 1e9,
        cpu_user_seconds=_ticks(ticks.get("user")),
        cpu_system_seconds=_ticks(ticks.get("system")),
        cpu_periods=cpu.get("nr_periods"),
        cpu_throttled_periods=cpu.get("nr_throttled"),
        cpu_throttled_seconds=_scaled(cpu.get("throttled_time"), 1e9),
        memory_usage_bytes=usage,
        memory_working_set_bytes=_working_set(usage, inactive),
        memory_rss_bytes=stat("rss") if has_memory_stat else None,
        memory_cache_bytes=stat("cache") if has_memory_stat else None,
        memory_swap_bytes=memory.get("total_swap", memory.get("swap")),
        memory_limit_bytes=None if limit is None or limit >= _V1_UNLIMITED else limit,
        oom_kills=oom.get("oom_kill"),
        processes=parse_number(files.get("pids.current")),
    )


def v2_reading(files: Mapping[str, str]) -> Reading:
    """A container's figures from its cgroup v2 files (name → contents)."""
    cpu = parse_keyed(files.get("cpu.stat", ""))
    memory = parse_keyed(files.get("memory.stat", ""))
    events = parse_keyed(files.get("memory.events", ""))
    usage = parse_number(files.get("memory.current"))
    has_memory_stat = "memory.stat" in files
    return Reading(
        cpu_seconds=_scaled(cpu.get("usage_usec"), 1e6),
        cpu_user_seconds=_scaled(cpu.get("user_usec"), 1e6),
        cpu_system_seconds=_scaled(cpu.get("system_usec"), 1e6),
        cpu_periods=cpu.get("nr_periods"),
        cpu_throttled_periods=cpu.get("nr_throttled"),
        cpu_throttled_seconds=_scaled(cpu.get("throttled_usec"), 1e6),
        memory_usage_bytes=usage,
        memory_working_set_bytes=_working_set(
            usage, memory.get("inactive_file", 0) if has_memory_stat else None
        ),
        memory_rss_bytes=memory.get("anon", 0) if has_memory_stat else None,
        memory_cache_bytes=memory.get("file", 0) if has_memory_stat else None,
        memory_swap_bytes=parse_number(files.get("memory.swap.current")),
        memory_limit_bytes=parse_number(files.get("memory.max")),  # "max": None
        oom_kills=events.get("oom_kill") if "memory.events" in files else None,
        processes=parse_number(files.get("pids.current")),
    )


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None or inactive_file is None:
        return None
    return max(0, usage - inactive_file)


def _ticks(value: int | None) -> float | None:
    return None if value is None else value / USER_HZ


def _scaled(value: int | None, per_second: float) -> float | None:
    return None if value is None else value / per_second
