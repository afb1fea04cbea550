"""The metrics' pure parts and their plumbing, in-process: the kinds of pending reasons (from
the scheduler's own sentences), the state's gauges on made-up states, the request counter's
route templates, the metered store, the agent's heartbeat counts, and two servers in one
process keeping their figures apart."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.kit.app import inprocess_api
from tests.kit.builders import make_group, make_node, make_spec, make_state, make_status, make_task
from theseus.agent.metrics import AgentMetrics
from theseus.api.client import ApiError, ServerUnreachable
from theseus.model.deployments import DeploymentRecord
from theseus.model.nodes import NodeControl
from theseus.model.tasks import Desired, TaskState
from theseus.reconciler.pending import KINDS, reason_kind
from theseus.scheduler.placement import Placer, Unplaceable
from theseus.server.metered_store import MeteredStore
from theseus.server.metrics import ServerMetrics
from theseus.server.metrics_state import ClusterStateCollector, state_figures
from theseus.server.policy import template_of
from theseus.store.base import Put, StoreUnavailable
from theseus.store.memory import MemoryStore


def parsed(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# --- pending reasons ---------------------------------------------------------------------


def _unplaceable(**spec: object) -> str:
    placer = Placer([make_node("n1"), make_node("n2")], [])
    result = placer.place("t1", "g", make_spec(**spec))
    assert isinstance(result, Unplaceable)
    return result.reason


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"cpus": 8}, "cpus"),
        ({"mem": 100_000}, "memory"),
        ({"constraints": [["hostname", "LIKE", "nowhere"]]}, "constraint"),
        ({"privileged": True}, "host_gates"),
    ],
)
def test_the_schedulers_own_reasons_have_their_kind(spec: dict[str, object], kind: str) -> None:
    reason = _unplaceable(**spec)
    assert reason.startswith("0/2 nodes can run it")
    assert reason_kind(reason) == kind


def test_the_reconcilers_waits_and_the_most_frequent_rejection() -> None:
    assert reason_kind(None) == "unplaced"
    assert reason_kind("no ready nodes") == "no_ready_nodes"
    assert reason_kind("restart backoff after 3 quick failures") == "backoff"
    assert reason_kind("waiting for dependency db: 0 of 1 tasks ready") == "dependency"
    assert reason_kind("waiting for node n1 (sticky): insufficient cpus (needs 2)") == (
        "sticky_node"
    )
    mixed = "0/4 nodes can run it: 3 nodes: UNIQUE hostname; 1 node: insufficient memory"
    assert reason_kind(mixed) == "constraint"
    assert reason_kind("0/1 nodes can run it: 1 node: pods need the docker driver") == (
        "pod_driver"
    )
    assert reason_kind("something new") == "other"
    assert {reason_kind(r) for r in ("x", None, "no ready nodes")} <= set(KINDS)


# --- the state's gauges ------------------------------------------------------------------


def _deployment(group_key: str, status: str) -> DeploymentRecord:
    return DeploymentRecord.model_validate(
        {
            "id": f"d-{status}",
            "group": group_key,
            "service": "web",
            "labels": [],
            "kind": "update",
            "from_version": 1,
            "to_version": 2,
            "digest": "x",
            "instances": 1,
            "status": status,
            "started_at": 0.0,
            "updated_at": 0.0,
            "deadline": 1.0,
            "progress_deadline_seconds": 1.0,
            "auto_revert": False,
        }
    )


def _made_up_state():  # type: ignore[no-untyped-def]
    web = make_group("web")
    running = [make_task(web, "n1"), make_task(web, "n1")]
    starting = make_task(web, "n2")
    on_lost = make_task(web, "n3")
    waiting = make_task(web, None, pending_reason="0/3 nodes can run it: 3 nodes: IS rack a")
    unplaced = make_task(web, None)
    backoff = make_task(web, None, pending_reason="restart backoff after 2 quick failures")
    history = make_task(web, "n1", desired=Desired.STOP)
    tasks = [*running, starting, on_lost, waiting, unplaced, backoff, history]
    statuses = [make_status(t, TaskState.RUNNING) for t in running]
    statuses += [make_status(starting, TaskState.STARTING)]
    statuses += [make_status(history, TaskState.EXITED, exit_code=1)]
    nodes = [make_node("n1"), make_node("n2"), make_node("n3"), make_node("n4")]
    state = make_state([web], nodes, tasks, statuses, lost={"n3"})
    state.controls = {
        "n2": NodeControl(drain=True, schedulable=False, updated_at=0.0),
        "n4": NodeControl(schedulable=False, updated_at=0.0),
    }
    key = web.group_key.key
    state.deployments = {
        "a": _deployment(key, "running"),
        "b": _deployment(key, "successful"),
        "c": _deployment(key, "successful"),
    }
    state.revision = 42
    return state


def test_state_figures_count_tasks_pending_reasons_deployments_and_nodes() -> None:
    figures = state_figures(_made_up_state())
    assert figures.tasks == {
        ("running", "run"): 2,
        ("starting", "run"): 1,
        ("lost", "run"): 1,
        ("pending", "run"): 3,
        ("exited", "stop"): 1,
    }
    assert figures.pending == {"constraint": 1, "unplaced": 1, "backoff": 1}
    assert figures.deployments == {"running": 1, "successful": 2}
    assert figures.nodes == {"ready": 1, "draining": 1, "down": 1, "ineligible": 1}
    assert figures.groups == 1 and figures.revision == 42


def test_the_collector_exports_every_label_value_at_scrape_time() -> None:
    state = _made_up_state()
    current = {"state": None}
    registry = CollectorRegistry()
    registry.register(ClusterStateCollector(lambda: current["state"]))
    assert not [k for k in parsed(registry) if k[0].startswith("theseus_")]  # starting
    current["state"] = state  # type: ignore[assignment]
    values = parsed(registry)
    assert values[("theseus_tasks", (("desired", "run"), ("state", "running")))] == 2
    assert values[("theseus_tasks", (("desired", "stop"), ("state", "failed")))] == 0
    assert values[("theseus_pending_tasks", (("reason", "constraint"),))] == 1
    assert values[("theseus_pending_tasks", (("reason", "memory"),))] == 0
    assert values[("theseus_deployments", (("status", "successful"),))] == 2
    assert values[("theseus_nodes", (("status", "down"),))] == 1
    assert values[("theseus_state_revision", ())] == 42
    assert len([k for k in values if k[0] == "theseus_tasks"]) == len(TaskState) * len(Desired)
    # Computed at each scrape: a change shows without anyone telling the collector.
    state.tasks.clear()
    assert parsed(registry)[("theseus_tasks", (("desired", "run"), ("state", "running")))] == 0


# --- the server in-process ---------------------------------------------------------------


def test_requests_refused_before_routing_are_named_by_the_policy_tables_template() -> None:
    assert template_of("GET", "/v1/tasks/web.abc/logs") == "/v1/tasks/{id}/logs"
    assert template_of("HEAD", "/metrics") == "/metrics"
    assert template_of("POST", "/v1/agent/n1/heartbeat") == "/v1/agent/{node}/heartbeat"
    assert template_of("GET", "/v1/no/such/route") is None


async def test_two_servers_in_one_process_keep_their_own_figures() -> None:
    async with inprocess_api() as first, inprocess_api() as second:
        for _ in range(3):
            assert (await first.get("/v1/groups")).status_code == 200
        assert (await first.get("/v1/nodes/nowhere")).status_code == 404
        assert (await second.get("/v1/health")).status_code == 200
        one = (await first.get("/metrics")).text
        other = (await second.get("/metrics")).text

    def requests(text: str, route: str, status: str) -> float:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = s.labels
                wanted = {"route": route, "status": status}
                if s.name == "theseus_api_requests_total" and labels.items() >= wanted.items():
                    return s.value
        return 0.0

    assert requests(one, "/v1/groups", "200") == 3
    assert requests(one, "/v1/nodes/{name}", "404") == 1  # the template, not the path
    assert requests(other, "/v1/groups", "200") == 0
    assert requests(other, "/v1/health", "200") == 1
    assert "theseus_is_leader 1.0" in one


async def test_the_metered_store_times_requests_and_counts_failures() -> None:
    metrics = ServerMetrics(CollectorRegistry())
    memory = MemoryStore()
    store = MeteredStore(memory, metrics.etcd_duration, metrics.etcd_failures)
    await store.connect()
    await store.commit([Put("/k", b"v")])
    assert (await store.get("/k")) is not None
    memory.faults.fail("commit", times=1)
    with pytest.raises(StoreUnavailable):
        await store.commit([Put("/k", b"w")])
    values = parsed(metrics.registry)
    count = "theseus_etcd_request_duration_seconds_count"
    assert values[(count, (("operation", "commit"),))] == 2
    assert values[(count, (("operation", "get"),))] == 1
    assert values[("theseus_etcd_request_failures_total", (("operation", "commit"),))] == 1
    await store.close()


# --- the agent ---------------------------------------------------------------------------


async def test_the_agent_counts_heartbeats_sent_and_failed() -> None:
    metrics = AgentMetrics("n1", CollectorRegistry())

    async def ok() -> str:
        return "ok"

    async def unreachable() -> str:
        raise ServerUnreachable("http://nowhere", OSError("refused"))

    async def lost() -> str:
        raise ApiError(404, "node n1 is not registered", [])

    assert await metrics.counted_heartbeat(ok) == "ok"
    for call in (unreachable, lost):
        with pytest.raises((ServerUnreachable, ApiError)):
            await metrics.counted_heartbeat(call)
    metrics.contact_by(lambda: None)
    values = parsed(metrics.registry)
    assert values[("theseus_agent_heartbeats_sent_total", ())] == 3
    assert values[("theseus_agent_heartbeats_failed_total", (("reason", "unreachable"),))] == 1
    assert values[("theseus_agent_heartbeats_failed_total", (("reason", "rejected"),))] == 1
    assert values[("theseus_agent_seconds_since_server_contact", ())] == -1
    assert values[("theseus_agent_info", (("node", "n1"), ("version", "0.1.0")))] == 1
