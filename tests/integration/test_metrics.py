"""``GET /metrics`` on real servers and agents, read with Prometheus's own parser
(``prometheus_client.parser``): after a deploy, the server shows the placements, the tasks
by state as the API lists them, the API's requests by route template, its leadership and
etcd's latency; an agent shows its heartbeats. In a secure cluster a read token scrapes the
server and no token is refused; the agent answers servers' certificates only.

The development cluster is the session's (agents at 127.0.0.2-4); the secure one is this
module's own, with one agent at 127.0.0.91.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kit.cluster import Cluster, start_secure_cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import LOOPING, deploy, wait_running
from theseus.api.access_client import AccessApi
from theseus.security.tls import client_context
from theseus.security.tokens import Scope

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of the exposition, by name and sorted labels (parsing checks the format)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: Samples, name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


def matching(parsed: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of ``name`` whose labels include ``labels``."""
    return {
        key_labels: v
        for (key_name, key_labels), v in parsed.items()
        if key_name == name and set(labels.items()) <= set(key_labels)
    }


def test_server_metrics_after_a_deploy(cluster: Cluster) -> None:
    with cluster.client() as client:
        before = samples(client.metrics())
        deploy(client, gauged={**LOOPING, "instances": 2})
        wait_running(client, "gauged", 2)

        def tasks_by_state() -> Counter[str]:
            return Counter(t.state for t in client.tasks(include_stopped=True).tasks)

        def metrics_match_the_api() -> Samples | None:
            parsed = samples(client.metrics())
            listed = tasks_by_state()
            exported = Counter[str]()
            for labels, count in matching(parsed, "theseus_tasks").items():
                exported[dict(labels)["state"]] += int(count)
            return parsed if +exported == +listed else None

        after = wait_until(metrics_match_the_api, 30, "theseus_tasks as GET /v1/tasks lists")

    placed = value(after, "theseus_placements_total") - value(before, "theseus_placements_total")
    assert placed >= 2
    assert value(after, "theseus_tasks", state="running", desired="run") >= 2
    assert value(after, "theseus_is_leader") == 1
    assert value(after, "theseus_leader_elections_total") >= 1
    assert value(after, "theseus_reconcile_pass_duration_seconds_count") > 0
    assert value(after, "theseus_etcd_request_duration_seconds_count", operation="commit") > 0
    assert value(after, "theseus_nodes", status="ready") == len(cluster.nodes)
    assert value(after, "theseus_groups") >= 1
    # Requests by route template and status: the deploy, and agents' calls under their
    # template, never a series per node.
    assert value(after, "theseus_api_requests_total", method="POST", route="/deploy", status="200")
    assert matching(after, "theseus_api_requests_total", route="/v1/agent/{node}/heartbeat")
    routes = {dict(labels)["route"] for labels in matching(after, "theseus_api_requests_total")}
    assert not [r for r in routes if any(node in r for node in cluster.nodes)], routes
    assert value(after, "theseus_heartbeats_received_total", outcome="ok") > 0
    assert value(after, "process_cpu_seconds_total") > 0
    # The event stream's counters, from the default registry, beside this server's own.
    assert value(after, "theseus_events_derived_total") > 0
    # The garbage collector's pauses, and the survivors of its collections frozen by the
    # server process's policy (theseus.server.gc_policy): a server allocates all the time
    # (heartbeats, polls), so its young collections come by themselves; the full one is the
    # policy's, at start (and every 10 minutes).
    with cluster.client() as client:

        def frozen_after_a_young_collection() -> Samples | None:
            parsed = samples(client.metrics())
            young = value(parsed, "theseus_gc_pause_seconds_count", generation="0")
            return parsed if young > 0 and value(parsed, "theseus_gc_frozen_objects") > 0 else None

        gc_figures = wait_until(
            frozen_after_a_young_collection, 60, "a young collection, and its survivors frozen"
        )
    assert value(gc_figures, "theseus_gc_pause_seconds_count", generation="2") >= 1


def test_agent_metrics_show_heartbeats(cluster: Cluster) -> None:
    with cluster.client() as client:
        node = client.nodes().nodes[0]
    url = f"http://{node.address}:{node.agent_port}/metrics"

    def heartbeats() -> float:
        parsed = samples(httpx.get(url, timeout=10).text)
        assert value(parsed, "theseus_agent_info", node=node.name, version="0.1.0") == 1
        return value(parsed, "theseus_agent_heartbeats_sent_total")

    def counted() -> float | None:
        try:
            return heartbeats() or None
        except httpx.ConnectError:  # ready once registered; its endpoint listens just after
            return None

    first = wait_until(counted, 30, "the agent's first heartbeats counted")
    wait_until(lambda: heartbeats() > first, 30, "one more heartbeat counted")
    parsed = samples(httpx.get(url, timeout=10).text)
    assert value(parsed, "theseus_agent_heartbeats_failed_total", reason="unreachable") == 0
    assert 0 <= value(parsed, "theseus_agent_seconds_since_server_contact") < 30


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Cluster]:
    agents = {"metered-1": {"address": "127.0.0.91", "cpus": 1.0, "mem": 512}}
    cluster = start_secure_cluster(Path(tmp_path_factory.mktemp("metrics")), agents)
    yield cluster
    cluster.stop()


def test_a_read_token_scrapes_a_secure_server_and_no_token_is_refused(secure: Cluster) -> None:
    assert secure.pki is not None
    with secure.client() as client:
        token = AccessApi(client).create_token("prometheus", [Scope.READ], None).token
    url = secure.server_url + "/metrics"
    with httpx.Client(verify=client_context(secure.pki), timeout=10) as http:
        scraped = http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200, scraped.text
        assert scraped.headers["content-type"].startswith("text/plain")
        parsed = samples(scraped.text)
        assert value(parsed, "theseus_nodes", status="ready") == 1
        refused = http.get(url)
        assert refused.status_code == 401
        assert token not in refused.text
        # The refusal is counted under the route's template too.
        again = samples(http.get(url, headers={"Authorization": f"Bearer {token}"}).text)
        refusals = value(
            again, "theseus_api_requests_total", method="GET", route="/metrics", status="401"
        )
        assert refusals >= 1


def test_a_secure_agent_answers_metrics_to_servers_only(secure: Cluster) -> None:
    assert secure.pki is not None
    with secure.client() as client:
        node = client.nodes().nodes[0]
    url = f"https://{node.address}:{node.agent_port}/metrics"

    def status_without_certificate() -> int | None:
        # The node is ready once registered; its endpoint starts listening just after.
        with httpx.Client(verify=client_context(secure.pki), timeout=10) as anonymous:
            try:
                return anonymous.get(url).status_code
            except httpx.ConnectError:
                return None

    assert wait_until(status_without_certificate, 30, "the agent's endpoint") == 401
    with httpx.Client(verify=client_context(secure.pki, "server"), timeout=10) as server:
        answer = server.get(url)
    assert answer.status_code == 200
    assert value(samples(answer.text), "theseus_agent_heartbeats_sent_total") > 0


def test_a_read_token_scrapes_a_secure_agent_through_a_server(secure: Cluster) -> None:
    """Prometheus holds no certificate of a server: it finds the nodes with
    ``http_sd_configs`` (``/v1/prometheus/targets``) and scrapes each through a server."""
    assert secure.pki is not None
    with secure.client() as client:
        token = AccessApi(client).create_token("prometheus-sd", [Scope.READ], None).token
        node = client.nodes().nodes[0]
    bearer = {"Authorization": f"Bearer {token}"}
    server = httpx.URL(secure.server_url)
    with httpx.Client(verify=client_context(secure.pki), timeout=10) as http:
        found = http.get(secure.server_url + "/v1/prometheus/targets", headers=bearer)
        assert found.status_code == 200, found.text
        [target] = found.json()
        assert target["targets"] == [f"{server.host}:{server.port}"]
        path = target["labels"]["__metrics_path__"]
        assert path == f"/v1/nodes/{node.name}/metrics"
        assert target["labels"]["node"] == node.name

        def scraped() -> httpx.Response | None:
            answer = http.get(secure.server_url + path, headers=bearer)
            return answer if answer.status_code == 200 else None

        answer = wait_until(scraped, 30, "the agent's metrics through the server")
        assert answer.headers["content-type"].startswith("text/plain")
        parsed = samples(answer.text)
        assert value(parsed, "theseus_agent_heartbeats_sent_total") > 0
        [agent_info] = matching(parsed, "theseus_agent_info")
        assert ("node", node.name) in agent_info
        assert http.get(secure.server_url + path).status_code == 401  # no token
        missing = http.get(secure.server_url + "/v1/nodes/nowhere/metrics", headers=bearer)
        assert missing.status_code == 404 and "nowhere" in missing.json()["message"]
