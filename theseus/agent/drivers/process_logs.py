"""A process task's log files: written size-bounded with rotation, read (and followed) across it.

Called by the process driver (``theseus.agent.drivers.process``): the agent pumps each child's
stdout and stderr (one pipe) through a ``RotatingLog``, so the child never holds the file and
nothing is truncated under it. The files are ``<task>.log`` (being written), then
``<task>.log.1`` (the one before) ... ``<task>.log.<N-1>``: at most ``max_files`` of at most
``max_bytes`` each, as Docker's json-file driver keeps them. ``read_log`` gives a tail of them
all and, following, goes on in the new file after a rotation (as ``tail -F`` does: it tells
the files apart by inode). Where a chunk is cut, the files' names and where a tail begins are
pure (``split_for_file``, ``file_names``, ``tail_start``); all of it is unit-tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO

from theseus.model.logs import LogLimits

FOLLOW_POLL = 0.1  # seconds between reads of a followed log file
READ_CHUNK = 64 * 1024


def split_for_file(size: int, max_bytes: int, data: bytes) -> tuple[bytes, bytes]:
    """Which part of ``data`` goes into the current file, which holds ``size`` bytes already,
    and which after a rotation (pure). Whole lines where they fit; a file that has something
    already is rotated rather than given a line's head; a line longer than a whole file is
    cut. An empty head means: rotate first."""
    room = max_bytes - size
    if len(data) <= room:
        return data, b""
    if room <= 0:
        return b"", data
    cut = data.rfind(b"\n", 0, room) + 1  # after the last newline that fits; 0: none
    if cut == 0:
        cut = 0 if size > 0 else room  # a fresh file takes the head of an overlong line
    return data[:cut], data[cut:]


def file_names(path: Path, max_files: int) -> list[Path]:
    """The log files of one task, newest (being written) first (pure)."""
    return [path] + [path.with_name(f"{path.name}.{n}") for n in range(1, max_files)]


class RotatingLog:
    """One task's log, written by the agent: at most ``limits.max_files`` files of at most
    ``limits.max_bytes``. Unbuffered: a follower sees each chunk as soon as it is written."""

    def __init__(self, path: Path, limits: LogLimits) -> None:
        self.path = path
        self.limits = limits
        self._file: BinaryIO = path.open("ab", buffering=0)
        self.size = self._file.tell()
        self.rotations = 0

    def write(self, data: bytes) -> None:
        while data:
            head, data = split_for_file(self.size, self.limits.max_bytes, data)
            if not head:
                self.rotate()
                continue
            self._file.write(head)
            self.size += len(head)

    def rotate(self) -> None:
        """``.log`` becomes ``.log.1``, ``.log.1`` becomes ``.log.2``..., the oldest goes;
        then a new, empty ``.log``. Renamed files keep their inodes: a reader holding one
        reads it to its end (``read_log``)."""
        self._file.close()
        names = file_names(self.path, self.limits.max_files)
        names[-1].unlink(missing_ok=True)
        for older, newer in zip(reversed(names[1:]), reversed(names[:-1]), strict=True):
            with contextlib.suppress(FileNotFoundError):
                newer.rename(older)
        self._file = self.path.open("ab", buffering=0)
        self.size = 0
        self.rotations += 1

    def close(self) -> None:
        self._file.close()


def remove_log(path: Path, max_files: int) -> None:
    """Every file of a task's log."""
    for name in file_names(path, max_files):
        name.unlink(missing_ok=True)


def _open_chain(path: Path, max_files: int) -> list[BinaryIO]:
    """The task's files, opened newest first (a rotation meanwhile shows the same inode under
    two names: kept once) and returned oldest first."""
    opened: list[BinaryIO] = []
    seen: set[int] = set()
    for name in file_names(path, max_files):
        try:
            handle = name.open("rb")
        except FileNotFoundError:
            continue
        inode = os.fstat(handle.fileno()).st_ino
        if inode in seen:
            handle.close()
            continue
        seen.add(inode)
        opened.append(handle)
    opened.reverse()
    return opened


def _read_block(files: list[BinaryIO], index: int, start: int, length: int) -> bytes:
    files[index].seek(start)
    return files[index].read(length)


def _inode(name: Path) -> int | None:
    try:
        return name.stat().st_ino
    except FileNotFoundError:
        return None


def next_file(path: Path, max_files: int, current: BinaryIO) -> BinaryIO | None:
    """The file written after ``current``, if ``current`` was rotated away (``None``: it is
    still the one being written). It is the one just newer than wherever ``current`` went;
    when ``current`` was dropped already (the reader fell a whole set of files behind), the
    oldest there is."""
    names = file_names(path, max_files)
    inode = os.fstat(current.fileno()).st_ino
    inodes = [_inode(name) for name in names]
    if inodes[0] == inode or inodes[0] is None:
        return None
    if inode in inodes:
        candidates = names[: inodes.index(inode)][::-1]  # oldest first, newer than current
    else:
        candidates = [n for n, i in zip(names, inodes, strict=True) if i is not None][::-1]
    for name in candidates:
        with contextlib.suppress(FileNotFoundError):
            return name.open("rb")
    return None


def tail_start(
    sizes: list[int], read_back: Callable[[int, int, int], bytes], lines: int
) -> tuple[int, int]:
    """Where the last ``lines`` lines of a set of files begin (their ``sizes``, oldest
    first, read as one stream): the file's index and the offset in it. ``read_back(file,
    start, length)`` reads a block; the files are read from their end a block at a time, so a
    short tail costs a block or two however large the bound. A last line without its newline
    is a line too (``bytes.splitlines``'s rule)."""
    if lines <= 0:
        return len(sizes), 0
    found = 0
    last_byte = True  # the stream's final newline ends its last line: it starts none
    for index in range(len(sizes) - 1, -1, -1):
        end = sizes[index]
        while end > 0:
            start = max(0, end - READ_CHUNK)
            block = read_back(index, start, end - start)
            if last_byte:
                last_byte = False
                block = block.removesuffix(b"\n")
            position = len(block)
            while (position := block.rfind(b"\n", 0, position)) >= 0:
                found += 1
                if found == lines:
                    return index, start + position + 1
            end = start
    return 0, 0


async def read_log(
    path: Path,
    max_files: int,
    follow: bool,
    tail: int | None,
    finished: Callable[[], bool],
    poll: float = FOLLOW_POLL,
) -> AsyncIterator[bytes]:
    """A task's output across its files: the last ``tail`` lines (all: ``None``), then,
    with ``follow``, what is written next, in the new file after each rotation, until
    ``finished()`` (nothing more will be written) and everything has been read."""
    files = _open_chain(path, max_files)
    try:
        first, offset = 0, 0
        if tail is not None:
            sizes = [os.fstat(handle.fileno()).st_size for handle in files]
            first, offset = tail_start(sizes, partial(_read_block, files), tail)
            if files and first == len(files):  # nothing to show: follow from here
                files[-1].seek(sizes[-1])
        for index in range(first, len(files)):
            files[index].seek(offset if index == first else 0)
            while chunk := files[index].read(READ_CHUNK):
                yield chunk
        if not follow or not files:
            return
        current = files.pop()
        for handle in files:
            handle.close()
        files = [current]
        while True:
            chunk = current.read(READ_CHUNK)
            if chunk:
                yield chunk
                continue
            done = finished()  # asked before the last look: nothing is written after it
            successor = next_file(path, max_files, current)
            if successor is not None:
                # Rotated away: what was written to it before the rotation is there now.
                while rest := current.read(READ_CHUNK):
                    yield rest
                current.close()
                current = successor
                files = [current]
                continue
            if done:
                while rest := current.read(READ_CHUNK):
                    yield rest
                return
            await asyncio.sleep(poll)
    finally:
        for handle in files:
            handle.close()
