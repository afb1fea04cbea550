"""A process task's log files (``theseus.agent.drivers.process_logs``): where a chunk is cut
(pure), the rotation on disk (never more than the bound), and a reader that tails every file
and follows across rotations without losing or repeating a line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.kit.wait import wait_until_async
from theseus.agent.drivers.base import ExitNotice, Launch, Owner
from theseus.agent.drivers.process import ProcessDriver
from theseus.agent.drivers.process_logs import (
    RotatingLog,
    file_names,
    read_log,
    remove_log,
    split_for_file,
    tail_start,
)
from theseus.model.logs import LogLimits, LogOptions


@pytest.mark.parametrize(
    ("size", "data", "expected"),
    [
        (0, b"a\nb\n", (b"a\nb\n", b"")),  # it fits
        (6, b"a\nb\n", (b"a\nb\n", b"")),  # exactly
        (7, b"a\nb\n", (b"a\n", b"b\n")),  # whole lines that fit, the rest after a rotation
        (8, b"a\nb\n", (b"a\n", b"b\n")),  # a line fits exactly
        (9, b"a\nb\n", (b"", b"a\nb\n")),  # no line fits: rotate first
        (10, b"a\n", (b"", b"a\n")),  # full
        (5, b"abcdefgh\n", (b"", b"abcdefgh\n")),  # a started file gets no line's head
        (0, b"abcdefghijklm", (b"abcdefghij", b"klm")),  # a line longer than a file is cut
    ],
)
def test_where_a_chunk_is_cut(size: int, data: bytes, expected: tuple[bytes, bytes]) -> None:
    assert split_for_file(size, 10, data) == expected


def test_file_names_newest_first() -> None:
    names = [p.name for p in file_names(Path("logs/t1.log"), 3)]
    assert names == ["t1.log", "t1.log.1", "t1.log.2"]


def _sizes(path: Path, max_files: int) -> list[int]:
    return [p.stat().st_size for p in file_names(path, max_files) if p.exists()]


def test_the_files_never_hold_more_than_the_bound_and_keep_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "t1.log"
    log = RotatingLog(path, LogLimits(1024, 3))
    for n in range(2000):  # ~28 kB through 3 kB of files
        log.write(f"line {n:05d} xxxx\n".encode())
    log.close()
    sizes = _sizes(path, 3)
    assert len(sizes) == 3 and all(size <= 1024 for size in sizes)
    assert not path.with_name("t1.log.3").exists()
    kept = b"".join(p.read_bytes() for p in reversed(file_names(path, 3)))
    numbers = [int(line.split()[1]) for line in kept.splitlines()]
    assert numbers == list(range(numbers[0], 2000))  # the newest, whole lines, in order
    assert log.rotations > 20
    remove_log(path, 3)
    assert not list(tmp_path.iterdir())


def test_one_file_only_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "t1.log"
    log = RotatingLog(path, LogLimits(1024, 1))
    for n in range(500):
        log.write(f"{n}\n".encode())
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["t1.log"]
    assert path.stat().st_size <= 1024 and path.read_bytes().endswith(b"499\n")


def test_a_reopened_log_goes_on_from_its_size(tmp_path: Path) -> None:
    path = tmp_path / "t1.log"
    path.write_bytes(b"x" * 1000 + b"\n")
    log = RotatingLog(path, LogLimits(1024, 2))
    log.write(b"too long for what is left\n")
    log.close()
    assert path.read_bytes() == b"too long for what is left\n"
    assert path.with_name("t1.log.1").stat().st_size == 1001


async def _collect(path: Path, max_files: int, tail: int | None) -> bytes:
    return b"".join([c async for c in read_log(path, max_files, False, tail, lambda: True)])


async def test_a_tail_spans_the_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "t1.log"
    log = RotatingLog(path, LogLimits(1024, 3))
    for n in range(300):
        log.write(f"line {n}\n".encode())
    log.close()
    assert log.rotations >= 2
    everything = await _collect(path, 3, None)
    assert everything.splitlines()[-1] == b"line 299" and len(everything) > 2048
    last = (await _collect(path, 3, 200)).splitlines()
    assert last == [f"line {n}".encode() for n in range(100, 300)]
    assert await _collect(path, 3, 0) == b""
    assert await _collect(tmp_path / "none.log", 3, None) == b""


async def test_a_follower_goes_on_in_the_new_file_after_each_rotation(tmp_path: Path) -> None:
    path = tmp_path / "t1.log"
    log = RotatingLog(path, LogLimits(1024, 2))
    done = False
    received: list[bytes] = []

    async def follow() -> None:
        async for chunk in read_log(path, 2, True, 0, lambda: done, poll=0.005):
            received.append(chunk)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.02)
    for n in range(3000):  # ~40 rotations, the reader a poll behind or not
        log.write(f"line {n:05d}\n".encode())
        if n % 50 == 0:
            await asyncio.sleep(0.01)  # the follower reads now and then, as an HTTP one does
    log.close()
    done = True
    await asyncio.wait_for(follower, 10)
    numbers = [int(line.split()[1]) for line in b"".join(received).splitlines()]
    assert log.rotations > 30
    assert numbers == list(range(3000)), "every line once, in order, across every rotation"


async def test_a_follower_ends_when_the_output_does(tmp_path: Path) -> None:
    path = tmp_path / "t1.log"
    log = RotatingLog(path, LogLimits(1024, 2))
    log.write(b"first\n")
    done = False
    chunks: list[bytes] = []

    async def follow() -> None:
        async for chunk in read_log(path, 2, True, None, lambda: done, poll=0.005):
            chunks.append(chunk)

    follower = asyncio.create_task(follow())
    await wait_until_async(lambda: chunks == [b"first\n"], 5, "the backlog")
    log.write(b"last\n")
    log.close()
    done = True
    await asyncio.wait_for(follower, 5)
    assert b"".join(chunks) == b"first\nlast\n"


async def test_the_process_driver_pumps_its_childs_output_through_the_bound(
    tmp_path: Path,
) -> None:
    """A real child: its output bounded on disk, complete when its exit is heard, readable
    after the exit, gone with the task; a previous run's files go when the driver opens."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "old.1.log").write_bytes(b"a previous run's\n")
    driver = ProcessDriver(tmp_path, LogLimits(1024, 2))
    exits: list[ExitNotice] = []
    await driver.open(Owner("n1", "127.0.0.1"), exits.append)
    assert not (tmp_path / "logs" / "old.1.log").exists()
    command = 'i=0; while [ $i -lt 500 ]; do echo "line $i"; i=$((i+1)); done; exit 4'
    launch = Launch("t1", "img", {}, {}, [], 0.1, 16, command=command, logs=LogOptions())
    handle = await driver.start(launch)
    try:
        await wait_until_async(lambda: exits, 10, "the exit notice")
        assert exits[0].exit_code == 4
        files = sorted(p.name for p in (tmp_path / "logs").iterdir())
        assert files == ["t1.log", "t1.log.1"]
        assert all(p.stat().st_size <= 1024 for p in (tmp_path / "logs").iterdir())
        lines = b"".join([c async for c in driver.logs(handle, True, None)]).splitlines()
        assert lines[-1] == b"line 499"  # the last line was written before the exit was told
        numbers = [int(line.split()[1]) for line in lines]
        assert numbers == list(range(numbers[0], 500)) and numbers[0] > 0
    finally:
        await driver.remove(handle)
        await driver.close()
    assert not list((tmp_path / "logs").iterdir())


@pytest.mark.parametrize(
    "files",
    [
        [b"a\nb\n", b"c\nd\n", b"e\n"],
        [b"a\nb\n", b"c\nd\n", b"e"],  # the last line unterminated
        [b"a\nb", b"c\nd\n", b""],  # a line cut across files; the current one empty
        [b"", b"", b""],
        [b"only\n"],
        [b"x" * 70_000 + b"\n" + b"y\n" * 40_000, b"z\n"],  # several blocks
    ],
)
def test_a_tail_starts_where_splitlines_says(files: list[bytes]) -> None:
    stream = b"".join(files)

    def read_back(index: int, start: int, length: int) -> bytes:
        return files[index][start : start + length]

    for lines in (0, 1, 2, 3, 5, 40_001, 10**6):
        index, offset = tail_start([len(f) for f in files], read_back, lines)
        shown = files[index][offset:] + b"".join(files[index + 1 :]) if index < len(files) else b""
        expected = b"".join(stream.splitlines(keepends=True)[-lines:]) if lines else b""
        assert shown == expected, (lines, index, offset)


async def test_a_follower_with_no_tail_sees_only_what_comes_next(tmp_path: Path) -> None:
    path = tmp_path / "t1.log"
    log = RotatingLog(path, LogLimits(1024, 2))
    for n in range(100):
        log.write(f"old {n}\n".encode())
    done = False
    chunks: list[bytes] = []

    async def follow(tail: int) -> None:
        async for chunk in read_log(path, 2, True, tail, lambda: done, poll=0.005):
            chunks.append(chunk)

    followers = [asyncio.create_task(follow(0))]
    await asyncio.sleep(0.02)
    log.write(b"new\n")
    log.close()
    done = True
    await asyncio.wait_for(followers[0], 5)
    assert b"".join(chunks) == b"new\n"
    chunks.clear()
    await asyncio.wait_for(follow(2), 5)
    assert b"".join(chunks) == b"old 99\nnew\n"
