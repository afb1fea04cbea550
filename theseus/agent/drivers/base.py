"""The contract between the agent's task runner and its drivers (docker, process, sim).

Owns the ``TaskDriver`` protocol and the small value types that cross it. The runner
(``theseus.agent.runner``) is the only caller; drivers stay thin: they translate one operation
into their backend's calls and never decide anything (what to start, stop or report is the
runner's pure ``decide`` module's job).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from theseus.model.logs import LogOptions

# The node's discovery endpoint (``theseus.agent.discovery``): a unix socket in the agent's state
# directory. The docker driver bind-mounts that directory into every container at
# ``DISCOVERY_MOUNT``; process tasks use the host path. Mounting the directory, not the socket
# file, lets running containers see the new socket of a restarted agent.
DISCOVERY_SOCKET = "agent.sock"
DISCOVERY_MOUNT = "/run/theseus"


def discovery_dir(state_dir: Path) -> Path:
    """The directory of the discovery socket in an agent's state directory."""
    return state_dir / "discovery"


class DriverError(RuntimeError):
    """A task could not be started; the message is reported to the server as is."""


@dataclass
class Owner:
    """Who the driver's containers belong to. ``cluster_id`` is known only after registration
    and may change if the server's etcd was wiped, so drivers read it at every call."""

    node: str
    address: str
    cluster_id: str = ""


@dataclass(frozen=True)
class PortBinding:
    name: str
    container_port: int
    host_port: int


@dataclass(frozen=True)
class MemberLaunch:
    """One container of a pod, resolved: its environment already holds the task's variables,
    the group's and its own (``THESEUS_CONTAINER`` names it); its volumes include the group's."""

    name: str
    image: str
    environment: dict[str, str]
    cpus: float
    mem: float  # MiB
    volumes: list[str] = field(default_factory=list)
    command: str | None = None
    args: list[str] | None = None
    pull: str = "if_not_present"  # its own pull policy, else the group's


@dataclass(frozen=True)
class Launch:
    """Everything a driver needs to start one task, already resolved by the runner.

    A pod has ``members`` (one per container, sharing one network namespace and the task's
    ``ports``); its ``image``, ``environment``, ``cpus``, ``mem`` and ``volumes`` are then the
    first member's image, the task-level variables and the pod's totals, for drivers that
    only look (each member carries its own). ``volumes`` are host binds, already resolved from
    the node's named host volumes (``/host/path:/container/path:mode``)."""

    task_id: str
    image: str
    environment: dict[str, str]
    labels: dict[str, str]
    ports: list[PortBinding]
    cpus: float
    mem: float  # MiB
    volumes: list[str] = field(default_factory=list)
    command: str | None = None
    args: list[str] | None = None
    members: list[MemberLaunch] = field(default_factory=list)
    init: bool = True  # Docker's init as PID 1, for every container of the task
    # What the task may do to its host, for every container of the task (the runner has
    # checked them against the node's gates, ``theseus.agent.gates``).
    privileged: bool = False
    host_network: bool = False
    host_pid: bool = False
    cap_add: list[str] = field(default_factory=list)
    # When the image is pulled (``theseus.agent.drivers.pull_rules``): "if_not_present" or
    # "always"; a pod's members carry their own.
    pull: str = "if_not_present"
    # The spec's bound of every container's logs (``theseus.model.logs``); each key left out
    # is the driver's default (the agent's --log-max-size, --log-max-files).
    logs: LogOptions | None = None
    # Told how a pull of the task's images goes (``pulling IMAGE: 12.3 of 40.1 MB``), as
    # often as Docker reports; the runner throttles what it reports to the server.
    on_progress: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    @property
    def is_pod(self) -> bool:
        return bool(self.members)


OOM_MESSAGE = "killed for memory (OOM): it used more than its mem limit"


@dataclass(frozen=True)
class Observed:
    """A task's container (or process) as the driver sees it now."""

    task_id: str
    handle: str  # container id, "pid-<n>" or "sim-<task>": what `running` reports carry
    running: bool
    exit_code: int | None = None
    started_at: float | None = None  # wall clock; where known (health checks' grace period)
    message: str | None = None  # why it is not running, when the driver knows more than a code
    fence_after: str | None = None  # its group's stop_after_server_loss_seconds, if labelled
    oom_killed: bool = False  # the kernel killed it for memory


@dataclass(frozen=True)
class ExitNotice:
    """A hint that a task's container died (the exit code is from the event itself), or, with
    ``started``, that one came to life: a container the runner does not know, started by a
    previous agent that was killed mid-start, is then adopted at once, not at the next
    resync."""

    task_id: str
    handle: str
    exit_code: int | None
    started: bool = False
    message: str | None = None  # e.g. which container of a pod exited
    oom_killed: bool = False  # the kernel killed it for memory (Docker's State.OOMKilled)


ExitCallback = Callable[[ExitNotice], None]


@dataclass(frozen=True)
class StatsTarget:
    """A process whose cgroup the agent measures for a task (``theseus.agent.stats``):
    a container's main process (``member``: the pod member's name, "" for a single
    container), or, with ``tree``, a process-driver task's leader, whose process group is
    measured from ``/proc`` (it has no cgroup of its own). ``network``: read its network
    namespace's counters (once per pod: its members share one)."""

    member: str
    pid: int
    tree: bool = False
    network: bool = True


@runtime_checkable
class StatsSource(Protocol):
    """A driver that can say which processes to measure for a task's handle (the docker and
    process drivers; drivers without it have no metrics)."""

    async def stats_targets(self, handle: str) -> list[StatsTarget]:
        """The running processes of ``handle``; none when it is not running."""
        ...


class TaskDriver(Protocol):
    """One backend that runs tasks. All methods but ``logs`` are coroutines."""

    name: str
    discovery: str | None
    """How this driver's tasks reach the node's discovery endpoint (``THESEUS_DISCOVERY``,
    e.g. ``unix:///run/theseus/agent.sock``); ``None`` when they cannot."""

    async def open(self, owner: Owner, on_exit: ExitCallback) -> None:
        """Connect, and start whatever watches exits (calls ``on_exit`` for each death)."""
        ...

    async def close(self) -> None:
        """Stop watching and release connections. Never stops tasks."""
        ...

    async def list_tasks(self) -> list[Observed]:
        """Every task of this node and cluster that has a container, running or not."""
        ...

    async def start(self, launch: Launch) -> str:
        """Create and start; return the handle. Raise ``DriverError`` with a clear message."""
        ...

    async def stop(self, handle: str, grace: float) -> int | None:
        """SIGTERM, SIGKILL after ``grace`` seconds; return the exit code if known."""
        ...

    async def exec(
        self, handle: str, command: str, timeout: float, container: str | None = None
    ) -> tuple[int, str]:
        """Run ``sh -c command`` inside the task (``container``: one member of a pod) and
        return its exit code and the tail of its output (COMMAND health checks). Raise
        ``DriverError`` when it cannot be run at all; the caller bounds it by ``timeout``
        too, this is the driver's own best effort to end it."""
        ...

    async def remove(self, handle: str) -> None:
        """Remove the (stopped) container and its logs; a missing one is not an error."""
        ...

    def logs(
        self, handle: str, follow: bool, tail: int | None, container: str | None = None
    ) -> AsyncIterator[bytes]:
        """The task's stdout and stderr, interleaved; ``follow`` keeps streaming. A pod's
        logs interleave its members' lines (each prefixed with the member's name), unless
        ``container`` names one member (an unknown name ends the stream with
        ``DriverError``; the runner checks names against the spec first)."""
        ...


def exit_code_of_returncode(returncode: int) -> int:
    """A child killed by signal N reports -N; containers report 128+N: use the latter."""
    return 128 - returncode if returncode < 0 else returncode
