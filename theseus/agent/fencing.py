"""When an agent cut off from every server stops its own tasks (pure): the node fences itself.

A node that no server hears from is declared lost after the liveness timeout (3 s by default)
and its tasks are replaced on other nodes, while the originals may still run: the servers
cannot tell a dead machine from one behind a broken network. So the agent counts how long it
has gone without reaching a server, and once that exceeds a task's group setting
(``stop_after_server_loss_seconds``, Nomad's ``stop_on_client_after``), it stops the task
itself: a group then runs more than ``instances`` tasks only for that long. A fenced task is
never started again by this agent: when a server answers again, the agent does what its
assignments say (the server has replaced the task by then; its copy here is removed).

What counts as reaching a server (``theseus.agent.agent`` keeps the time): a heartbeat or a
registration answered 2xx, i.e. a server that renewed the node's liveness lease in etcd. A
503 (a server cut off from etcd, or one not in touch with it) vouches for nothing: the other
side of the partition may already have declared the node lost. Nor does a 401 or 403 (the
node's certificate refused: a removed or revoked node, whose tasks the servers replace), nor
a 404 (node unknown: the agent registers again, and that answer counts).

The agent calls ``candidates`` with its runner's view, ``due`` to know which to stop now and
``next_due`` to know when to look again; the runner performs the stop (``Step.FENCE``). An
agent restarted during a partition has no assignments to read the settings from: it fences
the containers it adopted by their label (``adopted_candidates``), counting the silence from
its own start, since it cannot know how long the network was cut before.
"""

from __future__ import annotations

from collections.abc import Mapping

from theseus.agent.decide import Local, Phase
from theseus.api.schemas import Assignment
from theseus.model.fields import NEVER
from theseus.model.spec import GroupSpec

# Never sooner than this many heartbeat intervals without an answer. In a big cluster agents
# heartbeat only every few seconds, and a node's TTL is at least three of the intervals
# its agent is told (``theseus.server.heartbeats``: ``ttl >= 3 * interval``; a shorter lease
# is advised a faster pace): no server can declare the node lost, and replace its tasks,
# before that. Stopping them sooner protects nothing and stops a healthy node's tasks when
# only its own agent was slow. At 5,000 hollow nodes sharing two cores (bench/scale.py),
# agents starved of CPU for a minute timed out connecting three times in a row and fenced
# after two intervals (62 s), while their leases (93 s) never ran out.
HEARTBEATS_OF_GRACE = 3.0

# The phases of a task a fence stops: not started yet, starting (fenced once its start ends)
# or running. In every other phase it has ended already.
_LIVE = (Phase.NEW, Phase.STARTING, Phase.RUNNING)


def delay_of(spec: GroupSpec) -> float | None:
    """The group's setting in seconds; None for ``never``."""
    value = spec.stop_after_server_loss_seconds
    return None if value == NEVER else float(value)


def candidates(
    assigned: Mapping[str, Assignment], local: Mapping[str, Local]
) -> dict[str, float | None]:
    """Each task a fence would stop, with its delay (None: never): assigned to run here, not
    started yet or running (or starting: a start in flight is fenced once it ends), and not
    fenced already. Tasks the server asked to stop are left to that stop."""
    found: dict[str, float | None] = {}
    for task_id, assignment in assigned.items():
        if assignment.desired != "run":
            continue
        state = local.get(task_id, Local(Phase.NEW))
        if state.fenced or state.phase not in _LIVE:
            continue
        found[task_id] = delay_of(assignment.spec)
    return found


def adopted_candidates(
    local: Mapping[str, Local], labels: Mapping[str, str | None]
) -> dict[str, float | None]:
    """Before the server's first list (an agent restarted while it reaches no server): each
    adopted task a fence would stop, with the delay its container's label says (the group's
    setting when it started). A container without the label (started by an older agent) or
    with one that does not parse is left alone, as every task was before fencing."""
    found: dict[str, float | None] = {}
    for task_id, label in labels.items():
        state = local.get(task_id)
        if label is None or state is None or state.fenced or state.phase not in _LIVE:
            continue
        if label == NEVER:
            found[task_id] = None
            continue
        try:
            found[task_id] = float(label)
        except ValueError:
            continue
    return found


def effective(delay: float, heartbeat_interval: float) -> float:
    """The silence after which a task of that setting is stopped."""
    return max(delay, HEARTBEATS_OF_GRACE * heartbeat_interval)


def due(
    now: float,
    last_contact: float,
    delays: Mapping[str, float | None],
    heartbeat_interval: float,
) -> list[str]:
    """The tasks to stop now: those whose delay has passed since ``last_contact`` (the
    monotonic time the last answered heartbeat was sent), in order."""
    silence = now - last_contact
    return sorted(
        task_id
        for task_id, delay in delays.items()
        if delay is not None and silence >= effective(delay, heartbeat_interval)
    )


def next_due(
    now: float,
    last_contact: float,
    delays: Mapping[str, float | None],
    heartbeat_interval: float,
) -> float | None:
    """Seconds from ``now`` until the next task would be due if no server answers meanwhile
    (0 if one is due already); None when no task would ever be (none, or all ``never``)."""
    deadlines = [
        last_contact + effective(delay, heartbeat_interval)
        for delay in delays.values()
        if delay is not None
    ]
    return max(0.0, min(deadlines) - now) if deadlines else None


def reason(silence: float) -> str:
    """What the task's report and ``theseus ps`` say."""
    return f"stopped: no server reached for {silence:.0f} s (fenced)"
