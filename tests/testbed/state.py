"""``.testbed/state.json``: everything ``up`` made, so that ``down`` undoes exactly that, also
after a crash half-way through ``up``.

Owns the file's schema and its atomic rewrite. ``tests.testbed.up`` records each thing the
moment it exists (before the next one is made), ``tests.testbed.down`` removes each and its
record, and ``tests.testbed.cli`` (``status``) reads it. Mode 0600: it may hold a CLI context
named ``testbed`` that was there before ``up`` (with its token), to be put back by ``down``;
the registry's password is never here (``registry/credentials.json``, 0600 too).
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from theseus.security.files import write_private

ProcessKind = Literal["dockerd", "sshd", "registry"]


class ProcessEntry(BaseModel):
    name: str  # dockerd-h1, sshd-h1, registry
    kind: ProcessKind
    pid: int
    # /proc/<pid>/stat's start time (clock ticks since boot): the pid is only ever signalled
    # while it still has this one, so a reused pid is never a stranger killed. Not the
    # cmdline: sshd rewrites its own.
    start_time: int
    command: list[str]
    log: str
    netns: str | None = None


class ContextBefore(BaseModel):
    """The CLI's contexts before ``up``: ``down`` makes them so again."""

    path: str  # the contexts file up saw ($THESEUS_CONFIG then)
    current: str | None = None
    testbed: str | None = None  # the JSON of a context named ``testbed`` that was there before


class TestbedState(BaseModel):
    __test__ = False

    version: Literal[1] = 1
    hosts: int
    started_at: float = Field(default_factory=time.time)
    up_complete: bool = False
    bridge: str | None = None  # made by us
    netns_mount: bool = False  # /run/netns became a mount point by our first `ip netns add`
    netns: list[str] = Field(default_factory=list)
    links: list[str] = Field(default_factory=list)  # root-namespace ends of the veths
    iptables: list[list[str]] = Field(default_factory=list)  # rules as given to -I (chain, ...)
    processes: list[ProcessEntry] = Field(default_factory=list)
    cgroups: list[str] = Field(default_factory=list)  # the engines' --cgroup-parent
    engine_roots: list[str] = Field(default_factory=list)  # data and exec roots: their mounts
    remove_paths: list[str] = Field(default_factory=list)  # certs.d directories
    context: ContextBefore | None = None
    bootstrap_started: bool = False  # down then runs `theseus cluster teardown`
    bootstrap_done: bool = False  # it succeeded, and the registry's login is stored
    # The server hosts of the cluster bootstrapped: the bed's hosts file has h1 alone; a test
    # that bootstraps another shape (``TestbedSession.with_cluster``) records it.
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["h1"])
    registry_host: str | None = None
    root_tags: list[str] = Field(default_factory=list)  # the root engine's <registry>/... tags
    timings: dict[str, float] = Field(default_factory=dict)

    def process(self, name: str) -> ProcessEntry | None:
        return next((p for p in self.processes if p.name == name), None)


class StateError(RuntimeError):
    pass


LOCK_TIMEOUT = 300.0  # another up or down (a bootstrap: about a minute) holds the bed


@contextmanager
def locked(workdir: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One ``up`` or ``down`` at a time on a work directory (``.testbed/.lock``, flock): two at
    once, from a terminal and a test session, would each make or remove the other's things."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".lock", "w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StateError(
                        f"another scripts/testbed up or down holds {workdir} (waited {timeout:g} s)"
                    ) from None
                time.sleep(0.2)  # polling a lock: flock has no timeout of its own
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load(path: Path) -> TestbedState | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return TestbedState.model_validate_json(text)
    except (ValueError, ValidationError) as exc:
        raise StateError(f"{path} is not a test bed state file: {exc}") from None


def save(path: Path, state: TestbedState) -> None:
    """Atomically (a temp file renamed over it): a crash never leaves half a record."""
    write_private(path, (state.model_dump_json(indent=2) + "\n").encode())


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)


class Recorder:
    """The state of one ``up`` or ``down``, saved after every change."""

    def __init__(self, path: Path, state: TestbedState) -> None:
        self.path = path
        self.state = state

    def save(self) -> None:
        save(self.path, self.state)
