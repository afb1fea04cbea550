"""Which groups the leader's next reconcile pass must look at: all, or only some (pure).

Called by ``theseus.server.leader`` before each pass. At 50,000 tasks a pass over everything
takes 0.6 s of CPU alone and 1-3 s beside the event loop, and during a deploy the agents'
reports call for one every few seconds, each to register a few hundred tasks that started.
Most of that work looks at groups in which nothing happened. As Nomad evaluates only the jobs
an event touched, a pass is **scoped** to:

* the groups whose tasks, statuses or record changed since the last pass whose plan was
  committed (the cache keeps a revision per group: ``StateCache.group_index``);
* the groups that pass left with tasks waiting for a node: capacity freed elsewhere, a
  dependency that became ready or a backoff that ended can place them now.

Every other group was left by that pass with nothing to do, and stays so while nothing it is
decided on changes: its own tasks and record, and what all groups share. So a pass is over
everything when any of those shared inputs changed: the first pass of a term, the set of
groups, the set of live nodes, a node's record or its operator's control, the nodes whose
loss is held back (``spared``), and while tasks of removed groups run (their stop waits for
the tasks that need them).

A group in the scope is looked at **lightly** (``light_scope``) when all that changed in it
since that pass are statuses that say a task is alive (starting, running, its health): its
record, its task records and its waiting tasks are as that pass left them, and no status
ended a task. The task records that pass wrote itself count as left by it: only the leader's
plans write task records, so those changed up to its own commit are its own (without this,
the pass after a big deploy's placing pass looked at all 50,000 tasks, in a child). Such a
change can call for that task's registry entry, and, through the group's readiness, for a
step of its rollout. So the pass still weighs the whole group's counts (``converge``), but
looks task by task only at the tasks whose status changed and those it writes itself.
During a deploy at 5,000 nodes, these are the passes that register the tasks as they start:
from a few thousand to most of the 50,000 tasks, spread over all 500 groups.

The registry's anti-entropy (``repair_due``: the pass compares with what etcd holds, not with
what the leader wrote) is a full pass too. It runs every ``registry_repair_interval`` seconds,
or every ten full passes' time if that is longer, so that at 50,000 tasks it takes about a
tenth of the leader's time rather than a fifth; a full pass also finds what only it looks for
(statuses whose task is gone, the history that has grown too old). A pass in a child process
(``theseus.server.pass_process``) keeps its scope: it is the repair only when one is due.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from theseus.model.state import ClusterState

# A full pass at most this share of the time: the interval is at least this many full passes.
FULL_PASS_SPACING = 10.0


@dataclass(frozen=True)
class LastPass:
    """What the last committed pass was decided on, and what it left."""

    revision: int  # of the snapshot it planned from
    groups: frozenset[str]
    spared: frozenset[str]
    waiting_groups: frozenset[str]
    orphans: bool
    # The revision its own plan's commit reached (0: it wrote nothing). Only the leader's
    # plans write task records, one pass at a time: a record changed up to there is one this
    # pass wrote itself, and left as it meant to.
    wrote_until: int = 0


@dataclass(frozen=True)
class SharedInputs:
    """Revisions of what every group is decided on (``StateCache``): the set of live nodes
    (``alive_index``), and the nodes' records and controls (``nodes_index``)."""

    alive: int
    nodes: int


def pass_scope(
    last: LastPass | None,
    snapshot: ClusterState,
    group_index: Mapping[str, int],
    shared: SharedInputs,
) -> frozenset[str] | None:
    """The groups the next pass over ``snapshot`` must look at, or None for all of them."""
    if last is None or last.orphans:
        return None
    if shared.alive > last.revision or shared.nodes > last.revision:
        return None
    if snapshot.spared != last.spared or snapshot.groups.keys() != last.groups:
        return None
    since = last.revision
    changed = {
        group
        for group in snapshot.groups
        if group_index.get(group, 0) > since or snapshot.group_revisions.get(group, 0) > since
    }
    return frozenset(changed | (last.waiting_groups & snapshot.groups.keys()))


def repair_due(now: float, last_repair: float, repair_interval: float, full_took: float) -> bool:
    """Whether the next pass is the registry's anti-entropy (a full pass): ``now`` and
    ``last_repair`` on one clock; ``full_took``: seconds the last full pass took."""
    return now - last_repair >= max(repair_interval, FULL_PASS_SPACING * full_took)


def light_scope(
    last: LastPass | None,
    snapshot: ClusterState,
    only: frozenset[str] | None,
    records: Mapping[str, int],
    statuses: Mapping[str, int],
) -> dict[str, frozenset[str]]:
    """Of the groups ``only`` names, those a pass may look at lightly, each with the tasks
    whose status changed since ``last``. ``records``: each group's revision of its last task
    record change; ``statuses``: each task's of its last status change (``TaskChanges``). They
    may run ahead of ``snapshot``: a change seen there and not in it only widens the look."""
    if last is None or only is None:
        return {}
    since = last.revision
    others_since = max(since, last.wrote_until)  # task records changed by another than it
    light: dict[str, frozenset[str]] = {}
    for group in only:
        if group in last.waiting_groups or records.get(group, 0) > others_since:
            continue
        if snapshot.group_revisions.get(group, 0) > since:
            continue
        touched = []
        for task_id in snapshot.tasks_by_group.get(group, ()):
            if statuses.get(task_id, 0) > since:
                task = snapshot.tasks.get(task_id)
                # Ended, or lost with its node (``spared`` is the pass's own): its group's
                # history and the task's replacement are at stake.
                if task is None or task_id not in snapshot.statuses:
                    break
                if snapshot.task_state(task).terminal:
                    break
                touched.append(task_id)
        else:
            light[group] = frozenset(touched)
    return light
