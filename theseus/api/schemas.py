"""Wire types of the ``/v1`` API, shared by the server (which produces them), the agent and
the CLI (which consume them).

The deploy document itself (``theseus.model.spec``) is also a wire format and is reused as is.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from theseus.model.hostgates import NodeGates, cap_problem, protected_reason
from theseus.model.spec import GroupSpec

# The revision a client has seen, sent and answered as a header (``theseus.server.client_index``).
INDEX_HEADER = "X-Theseus-Index"

ChangeAction = Literal[
    "created", "scaled", "updated", "restarted", "configured", "unchanged", "removed", "absent"
]
GroupStatus = Literal["converged", "deploying", "pending", "failing", "removing"]
TaskStateName = Literal[
    "pending", "assigned", "starting", "running", "exited", "failed", "stopped", "lost"
]


class FieldChange(BaseModel):
    field: str  # dotted: ``environment.APP_NAME``, ``upgrade_strategy.maximum_over_capacity``
    old: object = None
    new: object = None


class GroupPlan(BaseModel):
    """``dry_run`` only: what the first reconcile pass after the deploy would do."""

    placed: dict[str, int] = {}  # node -> new tasks that would start there
    pending: dict[str, int] = {}  # reason -> new tasks that would wait
    stopping: int = 0  # running tasks that would be stopped in this first step
    diff: list[FieldChange] = []  # the fields an update changes
    # The group's ``stop_after_server_loss_seconds`` (seconds or "never"; None: removed): how
    # long a node cut off from every server keeps its tasks (``theseus.agent.fencing``).
    stop_after_server_loss: float | Literal["never"] | None = None
    # How much of each container's output is kept (the group's ``logs``, in words; None:
    # removed).
    logs: str | None = None


class GroupChange(BaseModel):
    service: str
    labels: list[str]
    action: ChangeAction
    instances: int | None = None
    plan: GroupPlan | None = None
    deployment: str | None = None  # the deployment this change started (``/v1/deployments``)


class DeployResult(BaseModel):
    """Answer to ``POST /deploy``; ``result`` keeps the original Theseus's shape."""

    result: dict[str, int] = {"status": 200}
    changes: list[GroupChange]
    dry_run: bool = False  # true: nothing was changed (``POST /deploy?dry_run=true``)


class ErrorDetail(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    message: str
    details: list[ErrorDetail] = []


class PortInfo(BaseModel):
    container_port: int
    host_port: int | None = None


class TaskInfo(BaseModel):
    id: str
    service: str
    labels: list[str]
    group: str
    version: str
    node: str | None
    address: str | None
    ports: dict[str, PortInfo]
    desired: Literal["run", "stop"]
    state: TaskStateName
    exit_code: int | None = None
    oom_killed: bool = False
    message: str | None = None
    pending_reason: str | None = None
    stop_reason: str | None = None
    attempt: int = 0
    not_before: float | None = None
    # The restart delay this task waited (or waits) after its predecessor's quick failure:
    # backoff_seconds * backoff_factor ** (attempt - 2), capped at max_launch_delay_seconds.
    backoff_delay: float = 0.0
    container_id: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    # The agent's last health-check verdict (docs/health.md); None when the spec has no checks.
    health: Literal["healthy", "unhealthy", "unknown"] | None = None
    health_message: str | None = None


class TaskList(BaseModel):
    tasks: list[TaskInfo]
    # With ``limit``: the ``after`` of the next page (None: this was the last one).
    next: str | None = None


class GroupInfo(BaseModel):
    service: str
    labels: list[str]
    group: str
    version: str
    instances: int
    running: int
    running_current: int  # running the group's version (and healthy, if it has checks)
    pending: int
    status: GroupStatus
    message: str | None = None
    spec: GroupSpec
    created_at: float
    updated_at: float


class GroupList(BaseModel):
    groups: list[GroupInfo]


class ScaleRequest(BaseModel):
    instances: int = Field(ge=0, le=100_000)
    labels: list[str] | None = None


class NodeUsage(BaseModel):
    """What a node's tasks used at its agent's last stats pass (carried by its heartbeats;
    kept in the memory of the server that received them, never in etcd). Unknown fields are
    ignored, not refused: a newer agent's heartbeat must never be refused by an older server,
    or its node would be declared lost."""

    time: float = Field(ge=0, allow_inf_nan=False)  # wall clock of the pass
    cpu_cores: float = Field(ge=0, allow_inf_nan=False)
    memory_bytes: int = Field(ge=0)  # the tasks' working sets
    tasks: int = Field(ge=0)


class HeartbeatBody(BaseModel):
    """What an agent's heartbeat may carry (an empty body from older agents)."""

    usage: NodeUsage | None = None


class NodeInfo(BaseModel):
    name: str
    address: str
    agent_port: int
    status: Literal["ready", "lost"]
    # The operator's say: "ineligible" takes no new tasks; "draining" also moves its tasks.
    eligibility: Literal["eligible", "ineligible", "draining"] = "eligible"
    driver: str
    cpus: float
    mem: float
    used_cpus: float
    used_mem: float
    tasks: int
    port_range: tuple[int, int]
    attributes: dict[str, str]
    registered_at: float
    gates: NodeGates = NodeGates()  # its host volumes and what its agent allows
    # Its tasks' use of the machine, as its last heartbeat to this server said (None: none
    # received here yet, or from an agent that does not measure).
    usage: NodeUsage | None = None


class NodeList(BaseModel):
    nodes: list[NodeInfo]


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enable: StrictBool = True


class EligibilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eligible: StrictBool


# --- agent <-> server ---------------------------------------------------------------------


class NodeRegistration(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    address: str
    agent_port: int = Field(ge=1, le=65535)
    cpus: float = Field(gt=0)
    mem: float = Field(gt=0)
    port_range: tuple[int, int] = (31000, 32000)
    attributes: dict[str, str] = {}
    driver: str = "docker"
    gates: NodeGates = NodeGates()  # host volumes and privileges (``theseus agent --host-volume``)

    @field_validator("gates")
    @classmethod
    def _no_protected_volume(cls, gates: NodeGates) -> NodeGates:
        """The agent refuses these declarations itself; a server does not take them either."""
        for volume in gates.host_volumes:
            problem = protected_reason(volume.path)
            if problem is not None:
                raise ValueError(f"host volume {volume.name!r}: {problem}")
        for cap in gates.allow_caps:
            problem = cap_problem(cap)
            if problem is not None:
                raise ValueError(f"allow_caps: {problem}")
        return gates


class RegistrationAnswer(BaseModel):
    cluster_id: str  # label every container with it: `theseus down` removes exactly these
    node: NodeInfo
    heartbeat_interval: float
    liveness_timeout: float  # the node's lease: seconds without a heartbeat before it is lost


class HeartbeatAnswer(BaseModel):
    """The pace to keep from now on: it grows and shrinks with the cluster."""

    ok: bool = True
    # Optional so that an agent also understands a server that only says "ok".
    heartbeat_interval: float | None = None
    liveness_timeout: float | None = None


class Assignment(BaseModel):
    """One task the agent must run (``desired == "run"``) or stop (``"stop"``)."""

    task_id: str
    service: str
    labels: list[str]
    group: str
    version: str
    desired: Literal["run", "stop"]
    spec: GroupSpec
    host_ports: dict[str, int]
    attempt: int = 0
    # The task passed its health checks once (the server's record): an agent that adopts
    # it after a restart must not give it a new grace period for failures.
    was_healthy: bool = False


class AssignmentList(BaseModel):
    """Everything assigned to one node. ``index`` resumes the long-poll."""

    index: int
    tasks: list[Assignment]
    # How often to heartbeat from now on (it grows with the cluster); None from older servers.
    heartbeat_interval: float | None = None
    # How long to ask the next long-poll to be held (a big cluster's agents poll less often);
    # None: the agent's own ``poll_wait`` (a small cluster, or an older server).
    poll_wait: float | None = None


# An exit code as a process's or a container's: its answers' JSON is written by orjson, which
# refuses integers beyond 64 bits (``theseus.server.wire``), so one agent's wild report must
# not make every task list that shows it fail.
ExitCode = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class TaskReport(BaseModel):
    task_id: str
    state: Literal["starting", "running", "exited", "failed", "stopped"]
    exit_code: ExitCode | None = None
    oom_killed: bool = False  # killed for memory (Docker's State.OOMKilled)
    message: str | None = None
    container_id: str | None = None
    # Health checks (``theseus.agent.health``): None until a first verdict, or without checks.
    healthy: bool | None = None
    health_message: str | None = None
    at: float


class ReportBatch(BaseModel):
    reports: list[TaskReport]


class ReportAnswer(BaseModel):
    accepted: int  # reports in the batch
    written: int  # task statuses they changed


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    leader: bool
    revision: int
    cluster_id: str | None = None


# --- service registry (discovery) ---------------------------------------------------------


class PortMapping(BaseModel):
    """One named port of a registered container. ``external``/``exposed`` keep the original's
    shape (``["<host ip>", "<port>/tcp"]`` and ``"<port>/tcp"``); the ints are for new code."""

    external: tuple[str, str]
    exposed: str
    host_port: int
    container_port: int


class ContainerEntry(BaseModel):
    """``/services/<service>/<labels>/containers/<task id>/info`` in etcd."""

    service_name: str
    instance_name: str  # the task id (= CONTAINER_NAME inside the container)
    instance_host: str  # the node's address
    labels: list[str]
    node: str
    port_mapping: dict[str, PortMapping]


class RegistryGroup(BaseModel):
    labels: list[str]
    config: dict[str, object]  # the group's spec, as deployed
    containers: list[ContainerEntry]


class RegistryService(BaseModel):
    """``GET /v1/registry/{service}``: every group of the service and its running containers.
    A service that does not exist answers 200 with no groups."""

    service: str
    index: int
    groups: list[RegistryGroup]


class RegistryWatch(BaseModel):
    """``GET /v1/registry/watch?services=a,b&index=N&wait=S``: the instance names (task ids)
    registered for each requested service, returned as soon as one of them changes after
    ``index`` (or after ``wait`` seconds). Resume with the returned ``index``."""

    index: int
    services: dict[str, list[str]]


class CleanupResult(BaseModel):
    """``GET /cleanup``: what a rebuild of the registry from task state changed."""

    result: dict[str, int] = {"status": 200}
    added: list[str]
    removed: list[str]
    updated: list[str]


# --- task metrics (``GET /v1/tasks/{id}/stats``, ``GET /v1/stats``) ----------------------------


class ContainerUsage(BaseModel):
    """A task's (or one pod member's) figures at one time; ``None``: not measured there
    (cgroup v2 has no cache figure for swap-less hosts, a process task no limit...).
    Counters are cumulative since the container started; ``cpu_cores`` is the rate since the
    sample before."""

    cpu_cores: float | None = None
    cpu_seconds: float | None = None
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_seconds: float | None = None
    memory_usage_bytes: int | None = None
    memory_working_set_bytes: int | None = None
    memory_rss_bytes: int | None = None
    memory_cache_bytes: int | None = None
    memory_swap_bytes: int | None = None
    memory_limit_bytes: int | None = None  # None: no limit
    oom_kills: int | None = None
    processes: int | None = None
    network_rx_bytes: int | None = None
    network_tx_bytes: int | None = None
    network_rx_packets: int | None = None
    network_tx_packets: int | None = None


class TaskStatsSample(ContainerUsage):
    time: float  # wall clock
    members: dict[str, ContainerUsage] = {}  # a pod's, by member name; empty otherwise


class TaskStats(BaseModel):
    """A task's recent samples, oldest first, from the agent of its node (``interval``
    seconds apart; about an hour is kept there)."""

    task_id: str
    service: str
    group: str
    labels: list[str]
    node: str
    interval: float
    samples: list[TaskStatsSample]


class StatsList(BaseModel):
    """The latest sample of each task (``theseus top``); ``unreachable``: nodes whose agent
    did not answer, so their tasks are missing."""

    tasks: list[TaskStats]
    unreachable: list[str] = []
