"""Start, watch and stop the processes of a cluster (etcd members, servers, agents), each only
ever through the PID it was started with: nothing is looked up or signalled by name.

The one place these processes are started: ``theseus.cluster.local`` (``theseus up``:
detached children that outlive the command), the test kit (``tests/kit/cluster.py``) and the
benchmarks (``bench/procs.py``: children that die with the benchmark and run without proxy
settings). ``theseus down`` stops what an earlier command started: ``theseus.cluster.procs``
proves each recorded PID still runs what was recorded, then stops them with ``stop_together``
as well.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from signal import SIGKILL, SIGTERM
from typing import Literal, Protocol, TypeVar

from theseus.cluster.waiting import WaitTimeout, wait_until

T = TypeVar("T")
Role = Literal["etcd", "server", "agent"]
# First to last: what has no role (a profiler), agents before the servers they report to,
# servers before the etcd they write to.
STOP_ORDER: tuple[Role | None, ...] = (None, "agent", "server", "etcd")
STOP_GRACE = 10.0  # seconds from SIGTERM to SIGKILL
REAP_WAIT = 2.0  # after SIGKILL, so that whoever comes next finds the ports free
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class SpawnOptions:
    cwd: Path | None = None
    env: Mapping[str, str] | None = None  # None: this process's environment
    # Its own session, so that the terminal's Ctrl-C or hang-up does not reach it.
    detached: bool = False
    # The kernel sends it SIGTERM when the *thread* that started it ends (PR_SET_PDEATHSIG), so
    # that a benchmark killed by a test's timeout leaves nothing behind. Only for processes
    # started from a thread that lives as long as they should.
    die_with_parent: bool = False


def environ_without_proxies() -> dict[str, str]:
    """This environment without proxy settings: the children talk to loopback only."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


_libc: ctypes.CDLL | None = None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec, where only the already loaded libc is safe.
    assert _libc is not None
    _libc.prctl(PR_SET_PDEATHSIG, SIGTERM)


def spawn(
    argv: Sequence[str], log: Path, options: SpawnOptions | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv``: stdin closed, stdout and stderr appended to ``log``."""
    global _libc
    options = options or SpawnOptions()
    preexec: Callable[[], None] | None = None
    if options.die_with_parent:
        _libc = _libc or ctypes.CDLL(None, use_errno=True)  # loaded before the fork
        preexec = _die_with_parent
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=options.cwd,
            env=None if options.env is None else dict(options.env),
            start_new_session=options.detached,
            close_fds=True,
            preexec_fn=preexec,
        )


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class Stoppable(Protocol):
    """A process ``stop_together`` can stop: one of ours, or a recorded one proven ours."""

    @property
    def name(self) -> str: ...

    def alive(self) -> bool: ...

    def signal(self, sig: int) -> None: ...


def stop_together(
    processes: Sequence[Stoppable], grace: float = STOP_GRACE, sig: int = SIGTERM
) -> dict[str, str]:
    """``sig`` to every live one at once, up to ``grace`` seconds for all of them to exit, then
    SIGKILL for the survivors. ``name -> outcome``: stopped, killed or not running."""
    outcome: dict[str, str] = {}
    running = []
    for process in processes:
        if process.alive():
            process.signal(sig)
            running.append(process)
        else:
            outcome[process.name] = "not running"

    def survivors() -> list[Stoppable]:
        return [p for p in running if p.alive()]

    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: not survivors(), grace, "the processes to exit")
    killed = survivors()
    for process in running:
        if process in killed:
            process.signal(SIGKILL)
            outcome[process.name] = f"killed (did not stop within {grace:.0f} s)"
        else:
            outcome[process.name] = "stopped"
    if killed:
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: not survivors(), REAP_WAIT, "the killed processes to go")
    return outcome


class ProcessExited(RuntimeError):
    """A process we wait on, or that should run, has exited."""

    def __init__(self, process: Process, what: str | None = None) -> None:
        self.name = process.name
        self.code = process.returncode
        self.log = process.log
        during = f" while waiting for {what}" if what else ""
        super().__init__(
            f"{self.name} exited with code {self.code}{during}; last lines of {self.log}:\n"
            f"{process.tail()}"
        )


@dataclass(eq=False)
class Process:
    """A child process we started, with its command line and its log."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes]
    options: SpawnOptions
    role: Role | None = None
    may_exit: bool = False  # it may end by itself (a profiler with a duration): no failure
    stopped: bool = False  # we stopped it: its exit is no failure either

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        options: SpawnOptions | None = None,
        role: Role | None = None,
        may_exit: bool = False,
    ) -> Process:
        options = options or SpawnOptions()
        popen = spawn(argv, log, options)
        return cls(name, list(argv), log, popen, options, role, may_exit)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None  # also reaps it once it has exited

    def failed(self) -> bool:
        """It exited, and neither because we stopped it nor because it may."""
        return not self.alive() and not (self.stopped or self.may_exit)

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)  # nothing once it has been reaped: its PID may be reused

    def stop(self, sig: int = SIGTERM, grace: float = STOP_GRACE) -> str:
        """``sig`` (SIGTERM: let it clean up; SIGKILL: give it no chance), SIGKILL after
        ``grace`` seconds; how it ended (see ``stop_together``)."""
        self.stopped = True
        return stop_together([self], grace, sig)[self.name]

    def restart(self) -> Process:
        """The same command line again, with the same log and options (it must have exited)."""
        if self.alive():
            raise RuntimeError(f"{self.name} still runs (pid {self.pid})")
        return Process.start(self.name, self.argv, self.log, self.options, self.role, self.may_exit)

    def tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)

    def wait_healthy(
        self, probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
    ) -> T:
        """Until ``probe`` says it is ready; ``ProcessExited`` at once if it exits meanwhile."""

        def ready() -> T | None:
            if not self.alive():
                raise ProcessExited(self, what)
            return probe()

        return wait_until(ready, timeout, what, interval)


class Processes(Mapping[str, Process]):
    """The processes one owner started, by name, all with the same options and their logs in
    one directory; restarted by name, watched and stopped together."""

    def __init__(self, log_dir: Path, options: SpawnOptions | None = None) -> None:
        self.log_dir = log_dir
        self.options = options or SpawnOptions()
        self._by_name: dict[str, Process] = {}

    def __getitem__(self, name: str) -> Process:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        role: Role | None = None,
        may_exit: bool = False,
        extra_env: Mapping[str, str] | None = None,
    ) -> Process:
        """Start a process under ``name`` (again, if one of that name has exited);
        ``extra_env``: added to its environment (secrets that must stay off command lines)."""
        previous = self._by_name.get(name)
        if previous is not None and previous.alive():
            raise RuntimeError(f"{name} still runs (pid {previous.pid})")
        log = self.log_dir / f"{name}.log"
        options = self.options
        if extra_env:
            base = dict(options.env) if options.env is not None else dict(os.environ)
            options = dataclasses.replace(options, env={**base, **extra_env})
        process = Process.start(name, argv, log, options, role, may_exit)
        self._by_name[name] = process
        return process

    def restart(self, name: str) -> Process:
        """Start an exited process again with its own command line (same ports, same data)."""
        process = self._by_name[name].restart()
        self._by_name[name] = process
        return process

    def check_alive(self, what: str | None = None) -> None:
        """``ProcessExited`` for the first process that exited unexpectedly."""
        for process in self._by_name.values():
            if process.failed():
                raise ProcessExited(process, what)

    def wait_until(
        self, check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
    ) -> T:
        """``wait_until`` that fails at once when any of the processes exits meanwhile."""

        def done() -> T | None:
            self.check_alive(what)
            return check()

        return wait_until(done, timeout, what, interval)

    def stop_all(self, grace: float = STOP_GRACE) -> dict[str, str]:
        """Each role in ``STOP_ORDER`` together, the next once the previous has stopped."""
        outcome: dict[str, str] = {}
        for role in STOP_ORDER:
            group = [p for p in reversed(self._by_name.values()) if p.role == role]
            for process in group:
                process.stopped = True
            outcome.update(stop_together(group, grace))
        return outcome

    def logs(self, lines: int = 30) -> str:
        """The last lines of every process's log, for a failure's report."""
        return "\n".join(f"--- {p.name} ---\n{p.tail(lines)}" for p in self._by_name.values())
