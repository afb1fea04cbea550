"""Heartbeat timing scaled with the cluster: the target, the advice to agents, TTL changes,
the TTL recorded in a node's ``alive`` value, and a heartbeat's cost in writes (none)."""

from __future__ import annotations

import asyncio

import pytest

from theseus.api.schemas import NodeRegistration
from theseus.server.heartbeats import (
    POLL_WAIT_MAX,
    HeartbeatTiming,
    advised_interval,
    advised_poll_wait,
    heartbeat_timing,
    lease_change,
)
from theseus.server.writes import Writer
from theseus.store.cache import StateCache
from theseus.store.encoding import alive_put, alive_ttl
from theseus.store.memory import MemoryStore


@pytest.mark.parametrize(
    ("nodes", "interval", "ttl"),
    [
        (0, 1.0, 3),
        (3, 1.0, 3),
        (100, 1.0, 3),  # 100 heartbeats per second: still every second
        (101, 2.0, 6),  # whole seconds: fewer lease changes as the cluster grows
        (1000, 10.0, 30),
        (1001, 11.0, 33),
    ],
)
def test_target_timing_grows_with_the_cluster(nodes: int, interval: float, ttl: int) -> None:
    assert heartbeat_timing(nodes, 3, 100.0) == HeartbeatTiming(interval, ttl)


def test_the_liveness_timeout_is_a_floor_and_the_base_interval_too() -> None:
    assert heartbeat_timing(300, 10, 100.0) == HeartbeatTiming(3.0, 10)
    assert heartbeat_timing(3, 4, 100.0, base_interval=2.0) == HeartbeatTiming(2.0, 6)
    assert heartbeat_timing(1000, 3, 50.0) == HeartbeatTiming(20.0, 60)


def test_total_rate_stays_under_the_cap() -> None:
    for nodes in range(1, 5000, 37):
        timing = heartbeat_timing(nodes, 3, 100.0)
        assert nodes / timing.interval <= 100.0 or timing.interval == 1.0
        assert timing.ttl >= 3 * timing.interval


@pytest.mark.parametrize(
    ("nodes", "wait"),
    [
        (0, None),
        (1000, None),  # 1,000 polls of 30 s: 33 a second, under half the cap: no advice
        (1500, None),
        (1501, 31.0),
        (5000, 100.0),  # 50 polls a second
        (100_000, POLL_WAIT_MAX),
    ],
)
def test_a_big_cluster_is_advised_longer_polls(nodes: int, wait: float | None) -> None:
    assert advised_poll_wait(nodes, 100.0) == wait
    if wait is not None and wait < POLL_WAIT_MAX:
        assert nodes / wait <= 50.0


def test_agents_slow_down_only_once_their_lease_allows_it() -> None:
    target = HeartbeatTiming(10.0, 30)
    assert advised_interval(30, target) == 10.0
    assert advised_interval(60, target) == 10.0  # a longer lease than needed: still the target
    assert advised_interval(6, target) == 2.0  # granted for 2 s heartbeats: keep those
    assert advised_interval(3, target) == 1.0
    assert advised_interval(2, HeartbeatTiming(1.0, 2)) == 1.0


def test_a_longer_lease_is_granted_at_once() -> None:
    assert lease_change(3, HeartbeatTiming(10.0, 30), gap=None)
    assert lease_change(3, HeartbeatTiming(10.0, 30), gap=1.0)
    assert not lease_change(30, HeartbeatTiming(10.0, 30), gap=10.0)


def test_a_shorter_lease_waits_for_the_agent_to_speed_up() -> None:
    small = HeartbeatTiming(1.0, 3)
    assert not lease_change(30, small, gap=None)
    assert not lease_change(30, small, gap=10.0)  # still at the old pace: would be lost
    assert lease_change(30, small, gap=1.2)


def test_a_cluster_at_a_steps_edge_does_not_replace_leases_back_and_forth() -> None:
    at_1000, at_1001 = heartbeat_timing(1000, 3, 100.0), heartbeat_timing(1001, 3, 100.0)
    assert lease_change(30, at_1001, gap=10.0)  # grown: 33 s
    assert not lease_change(33, at_1000, gap=10.0)  # and it stays
    assert not lease_change(33, at_1000, gap=11.0)


def test_every_heartbeat_keeps_its_node_alive_under_the_rules() -> None:
    """Simulate one agent while its cluster grows and shrinks: the agent follows the advice
    it gets (after each heartbeat), the server changes leases by ``lease_change``; no gap
    between heartbeats may exceed the lease in force."""
    lease = 3
    interval = 1.0
    sizes = [50] * 5 + [400] * 10 + [1200] * 10 + [10] * 20 + [700] * 10
    for nodes in sizes:
        target = heartbeat_timing(nodes, 3, 100.0)
        assert interval <= lease / 2  # the pace the agent keeps fits the lease in force
        if lease_change(lease, target, gap=interval):
            lease = target.ttl
        interval = advised_interval(lease, target)
    assert lease == heartbeat_timing(700, 3, 100.0).ttl


def test_alive_values_record_the_ttl() -> None:
    assert alive_ttl(alive_put("n1", 1700000000.5, 30).value) == 30
    assert alive_ttl(b"1700000000.5") is None  # written by an older server
    assert alive_ttl(b"x y") is None


async def test_heartbeats_refresh_no_lease_and_share_their_writes(
    store: MemoryStore, cache: StateCache
) -> None:
    writer = Writer(store, cache, liveness_timeout=3)
    for name in ("n1", "n2", "n3"):
        await writer.register_node(
            NodeRegistration(name=name, address="127.0.0.2", agent_port=5051, cpus=1, mem=512)
        )
    commits = store.calls["commit"]
    timings = await asyncio.gather(*(writer.heartbeat(n) for n in ("n1", "n2", "n3") * 3))
    assert set(timings) == {HeartbeatTiming(1.0, 3)}
    assert store.calls["commit"] == commits + 1  # one heard record for the nine
    assert store.calls["refresh_lease"] == store.calls["grant_lease"] == 0
    assert await writer.heartbeat("unknown") is None
