"""What bounded logs cost the agent: a process task's output pumped through its rotating writer.

The process driver (``theseus.agent.drivers.process``) reads each child's output and writes it
through ``process_logs.RotatingLog``; before, the child wrote its file itself and the agent
spent nothing. This runs a real child that prints MB of 100-byte lines as fast as it can
(``yes | head -c``) through a real ``ProcessDriver`` in this process (the agent's side), and
prints the agent's CPU per MB, the throughput, and what is left on disk (never over the
bound); then the same child writing its file directly, for the ratio of wall time.

    .venv/bin/python bench/process_logs.py [--mb 64] [--max-size 10m] [--max-files 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from theseus.agent.drivers.base import ExitNotice, Launch, Owner
from theseus.agent.drivers.process import ProcessDriver
from theseus.agent.drivers.process_logs import file_names
from theseus.model.logs import LogLimits, format_size

LINE = "x" * 99  # with its newline, 100 bytes


def command(mb: int) -> str:
    return f"yes {LINE} | head -c {mb * 1024 * 1024}"


def one_write_a_line(lines: int) -> str:
    """A shell loop: one write(2) per line, the agent woken for nearly each one."""
    return f'i=0; while [ $i -lt {lines} ]; do echo "{LINE[:90]} $i"; i=$((i+1)); done'


async def through_the_agent(
    root: Path, mb: int, limits: LogLimits, shell: str | None = None
) -> dict[str, float]:
    driver = ProcessDriver(root, limits)
    exited = asyncio.Event()

    def on_exit(notice: ExitNotice) -> None:
        exited.set()

    await driver.open(Owner("bench", "127.0.0.1"), on_exit)
    launch = Launch("bench.1", "unused", {}, {}, [], 0.1, 32, command=shell or command(mb))
    cpu, wall = time.process_time(), time.monotonic()
    await driver.start(launch)
    await exited.wait()  # the exit notice waits for the last output to be written
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    sizes = [p.stat().st_size for p in file_names(root / "logs" / "bench.1.log", 99) if p.exists()]
    await driver.close()
    return {
        "cpu": cpu,
        "wall": wall,
        "files": len(sizes),
        "largest": max(sizes),
        "kept": sum(sizes),
    }


def straight_to_a_file(root: Path, mb: int) -> float:
    wall = time.monotonic()
    with (root / "direct.log").open("wb") as out:
        subprocess.run(["/bin/sh", "-c", command(mb)], stdout=out, check=True)
    return time.monotonic() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--max-size", default="10m")
    parser.add_argument("--max-files", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args()
    limits = LogLimits.of(args.max_size, args.max_files)
    print(f"{args.mb} MB of 100-byte lines, bound {limits.describe()}, {os.cpu_count()} CPUs")
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            piped = asyncio.run(through_the_agent(Path(tmp), args.mb, limits))
            direct = straight_to_a_file(Path(tmp), args.mb)
        print(
            f"round {round_}: agent CPU {piped['cpu'] * 1000 / args.mb:.2f} ms/MB "
            f"({piped['cpu']:.2f} s), {args.mb / piped['wall']:.0f} MB/s through the agent; "
            f"{args.mb / direct:.0f} MB/s straight to a file (wall {piped['wall'] / direct:.2f}x); "
            f"left on disk {piped['files']:.0f} files, largest {piped['largest'] / 1024:.0f} KiB "
            f"(bound {format_size(limits.max_bytes)}), {piped['kept'] / 1024 / 1024:.1f} MiB kept"
        )
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            shell = one_write_a_line(args.lines)
            piped = asyncio.run(through_the_agent(Path(tmp), 0, limits, shell))
        print(
            f"round {round_}, {args.lines} lines one write each: agent CPU "
            f"{piped['cpu'] * 1e6 / args.lines:.1f} µs/line ({piped['cpu']:.2f} s), "
            f"{args.lines / piped['wall']:.0f} lines/s"
        )


if __name__ == "__main__":
    main()
