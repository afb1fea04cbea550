"""py-spy on the benchmark's server (``bench/scale.py --py-spy`` / ``--py-spy-timeline``):
starting and stopping the recorder, and a summary of its raw output."""

from __future__ import annotations

import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

from procs import Process, Processes


def start_profiler(
    children: Processes, pid: int, out: Path, seconds: float, timeline: bool = False
) -> Process | None:
    """py-spy recording the server (raw collapsed stacks; with ``timeline``, Chrome's trace
    format, every sample with its time and thread: what held the GIL during a stall the
    server logged), or None without py-spy.

    ``--gil``: only the thread holding the GIL is sampled, so the profile says where the
    server's CPU goes; without it, a thread waiting for the GIL (the loop, while the pass
    thread plans) is counted at whatever line it waits on."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        print("--py-spy: py-spy not found (pip install -e '.[bench]'); not profiling")
        return None
    form = "chrometrace" if timeline else "raw"
    argv = [py_spy, "record", "--pid", str(pid), "--format", form, "--rate", "100", "--gil"]
    argv += ["--output", str(out), "--nonblocking"]
    if seconds > 0:
        argv += ["--duration", str(max(1, round(seconds)))]
    return children.start("py-spy", argv, may_exit=True)  # it may end by itself (--duration)


def stop_profiler(profiler: Process) -> None:
    profiler.stop(signal.SIGINT, grace=30)  # py-spy writes its output on SIGINT


def profile_summary(raw: Path, top: int = 25) -> str:
    """The functions the server spent its samples in: inclusive (its own code, the first
    frame in theseus/ of each stack and below) and self time, from py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            if "theseus/" in frame and not ("theseus/cli/" in frame or "__main__" in frame):
                inclusive[frame] += count
        own[frames[-1]] += count
    if not total:
        return "py-spy: no samples"
    lines = [f"py-spy: {total} samples of the server; inclusive, theseus functions:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    lines += ["self time, any function:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    return "\n".join(lines)
