"""How often agents heartbeat and how long a node may go unheard (its TTL, or "lease"),
scaled with the cluster (pure; the writer and the agent routes apply it).

Small clusters heartbeat every ``base_interval`` (1 s) and a node is lost after the liveness
timeout. A big cluster would then send one heartbeat per node per second into the server,
so, as Nomad does with ``max_heartbeats_per_second``, the interval grows with the number of
live nodes to keep the total rate under a cap, and the lease (the time without a heartbeat
before a node is declared lost) grows with it to three intervals:

    interval = max(base_interval, ceil(nodes / max_per_second))   (whole seconds)
    ttl      = max(liveness_timeout, ceil(3 * interval))

With the defaults (1 s, 3 s, 100 per second) up to 100 nodes heartbeat every second and are
lost after 3 s; 1,000 nodes heartbeat every 10 s and are lost after 30 s. The interval is
rounded to whole seconds so that a growing cluster changes it (and every node's lease) rarely.

A node's TTL (its "lease": an etcd lease of its own until issue 17's twenty-fourth session,
``theseus.server.liveness``) is written in its ``alive`` key, where every server reads it, so
a changed TTL is a write. The order matters: an agent may only slow down once its lease lasts
long enough for the new pace (``advised_interval``), and a lease may only shrink once its
agent heartbeats at the faster pace (``lease_change``). Faster heartbeats than needed are
always safe.

An agent's long-poll for its assignments (answered at once when they change, else when its
wait runs out) is held longer in a big cluster too: with every agent asking for 30 s, 5,000
nodes sent 167 polls a second that found nothing, more than their heartbeats. The server
advises a wait (``advised_poll_wait``) that keeps those polls under half the heartbeat cap, up
to 5 minutes, Nomad's default for its blocking queries; a smaller cluster gets no advice and
its agents keep their own setting (30 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASE_INTERVAL = 1.0
# A lease shrinks once the gap between two heartbeats is at most this many target intervals:
# the agent has heard the faster pace (plus room for a late answer).
SHRINK_GAP = 1.5
# ...and only if it is this many times longer than the target: a cluster at a step's edge
# (1,000 live nodes, a few registering) would otherwise have every node's lease replaced at
# every heartbeat, up and down.
SHRINK_RATIO = 1.5


POLLS_PER_HEARTBEAT = 0.5  # polls that time out, per heartbeat the cap allows
POLL_WAIT_MIN = 30.0  # seconds: below this, no advice (the agents' own default)
POLL_WAIT_MAX = 300.0  # seconds: the longest a server holds an assignments long-poll


@dataclass(frozen=True)
class HeartbeatTiming:
    interval: float  # seconds between one agent's heartbeats
    ttl: int  # seconds without a heartbeat before the node is lost (its lease)


def heartbeat_timing(
    nodes: int, liveness_timeout: int, max_per_second: float, base_interval: float = BASE_INTERVAL
) -> HeartbeatTiming:
    """The target timing for a cluster of ``nodes`` live nodes."""
    interval = max(base_interval, float(math.ceil(nodes / max_per_second)))
    return HeartbeatTiming(interval, max(liveness_timeout, math.ceil(3 * interval)))


def advised_interval(
    lease_ttl: int, target: HeartbeatTiming, base_interval: float = BASE_INTERVAL
) -> float:
    """The interval to tell an agent whose lease was granted with ``lease_ttl``: the target,
    unless that lease is too short for it (it was granted for a smaller cluster; the next
    heartbeat renews it for the target)."""
    if lease_ttl >= target.ttl:
        return target.interval
    return min(target.interval, max(base_interval, lease_ttl / 3))


def lease_change(lease_ttl: int, target: HeartbeatTiming, gap: float | None) -> bool:
    """Whether a heartbeat should replace the node's lease by one of ``target.ttl``.

    ``gap`` is the time since this node's previous heartbeat (None: unknown). A longer lease
    is granted at once (the agent keeps its pace until told otherwise); a shorter one only
    once the agent already heartbeats at the target's pace, or it would be lost while
    following the slower pace it was told before, and only if the lease is much longer than
    the target (hysteresis).
    """
    if lease_ttl < target.ttl:
        return True
    if lease_ttl >= SHRINK_RATIO * target.ttl:
        return gap is not None and gap <= SHRINK_GAP * target.interval
    return False


def advised_poll_wait(nodes: int, max_heartbeats_per_second: float) -> float | None:
    """How long agents should ask their assignments' long-poll to be held in a cluster of
    ``nodes`` live nodes (whole seconds, at most ``POLL_WAIT_MAX``), or None when the agents'
    own setting keeps the polls under the rate."""
    wait = math.ceil(nodes / (max_heartbeats_per_second * POLLS_PER_HEARTBEAT))
    if wait <= POLL_WAIT_MIN:
        return None
    return min(float(wait), POLL_WAIT_MAX)
