"""The API fuzzer: schemathesis reads the server's own ``/openapi.json`` and sends it
property-based requests (valid ones and malformed ones), each operation on its own and then
in sequences that feed one answer's values into the next call (its stateful phase, from links
it infers), against a real cluster: etcd, a server and an agent (``sim`` driver), started for
this module alone because the fuzzer drains nodes, registers nodes and reports task states.

No answer may be a server error. A 503 that says etcd cannot be reached, or that this server
cannot show it follows etcd, is the server's documented answer under load and is counted,
not failed, and so is a 502 from a relay to a node's agent that does not answer (the nodes the
fuzzer registers have none; they all get a loopback address); anything else of 5xx is a
failure, a 500 above all.

Bounded: a few examples per operation and a few short sequences, long-polls waiting at most a
fraction of a second, no log following; the whole module takes well under two minutes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode, Response

from tests.kit.cluster import Cluster, start_cluster
from tests.kit.wait import wait_until
from theseus.api.access_client import AccessApi
from theseus.api.events import SubscriptionCreate
from theseus.api.events_client import subscribe
from theseus.security.tokens import Scope

# Bounded by its settings to about a minute with the cluster's start; the timeout is the
# backstop that keeps it well under two.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(110)]

EXAMPLES_PER_OPERATION = 20
SEQUENCES = 40
STEPS_PER_SEQUENCE = 8
IMAGE = "theseus/busybox:latest"  # the sim driver runs nothing: any name would do
ANSWERED_503 = ("etcd unavailable", "has not been able to confirm it follows etcd")
# A relay to a node's agent (its logs, stats, metrics) that the agent did not answer: the
# fuzzer registers nodes of its own, whose agents do not exist. Bad Gateway is that answer.
ANSWERED_502 = ("did not answer",)
# The address every node the fuzzer registers gets: the relays above then try a loopback port
# (refused at once), never an address the fuzzer made up (test traffic stays on loopback).
REGISTERED_ADDRESS = "127.0.0.9"

SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure is reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the report names the request
)
seen: Counter[str] = Counter()  # answers by status class, for the module's summary


@pytest.fixture(scope="module")
def fuzzed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("fuzz"))
    cluster = start_cluster(root, {"fuzz-1": {"address": "127.0.0.9", "driver": "sim"}})
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_cluster: Cluster) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_cluster.server_url}/openapi.json")


@pytest.fixture(scope="module")
def known(fuzzed_cluster: Cluster) -> dict[str, str]:
    """Objects that exist, by the path parameter that names them: a group with two tasks
    (and its deployment), the node that runs them, a registry login, an event subscription.
    Random names mostly get 404s; these let the fuzzer past the lookups, into scale,
    rollback, drain, logs..."""
    document = {"deploy": {"web": {"image": IMAGE, "instances": 2, "labels": ["dev"]}}}
    with fuzzed_cluster.client() as client:
        token = AccessApi(client).create_token("fuzzed", [Scope.READ], None)
        AccessApi(client).registry_login("registry.fuzz:5000", "fuzz", "fuzz-password")
        # A callback nobody listens to (a port nothing serves): its deliveries just fail.
        receiver = SubscriptionCreate(url="http://127.0.0.1:9/events", topics=["task"])
        subscription = subscribe(client, receiver)
        (change,) = client.deploy(json.dumps(document), "application/json").changes
        running = wait_until(
            lambda: [t for t in client.tasks("web").tasks if t.state == "running"][:1],
            30,
            "a task of web running",
        )
    assert change.deployment is not None
    return {
        "service": "web",
        "name": "fuzz-1",
        "node": "fuzz-1",
        "task_id": running[0].id,
        "deployment_id": change.deployment,
        "token_id": token.info.id,
        "host": "registry.fuzz:5000",
        "id": subscription.id,
    }


LONG_POLLS = ("/v1/agent/{node}/assignments", "/v1/registry/watch")
FOLLOWED_BY_DEFAULT = ("/v1/events",)  # a stream that follows unless told not to


def bounded(case: Case) -> None:
    """Long-polls wait at most 0.2 s, and logs and events are not followed (a stream has no
    end)."""
    query = case.query if isinstance(case.query, dict) else {}
    if case.path in LONG_POLLS:
        wait = _number(query.get("wait", 30.0))
        if wait is not None:  # a malformed wait is left as it is: it gets a 422
            query["wait"] = min(wait, 0.2)
    if "follow" in query or case.path in FOLLOWED_BY_DEFAULT:
        query["follow"] = "false"
    if query or case.query is not None:
        case.query = query
    if case.path == "/v1/agent/register" and isinstance(case.body, dict) and "address" in case.body:
        case.body["address"] = REGISTERED_ADDRESS


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN: left as it is (a 422)


def no_server_error(response: Response, case: Case) -> None:
    status = response.status_code
    seen[f"{status // 100}xx"] += 1
    if status < 500:
        return
    if status == 503 and any(reason in response.text for reason in ANSWERED_503):
        seen["503 (etcd)"] += 1
        return
    if status == 502 and any(reason in response.text for reason in ANSWERED_502):
        seen["502 (no agent)"] += 1
        return
    raise AssertionError(
        f"{case.method} {case.formatted_path} answered {status}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command()}"
    )


def test_no_operation_answers_a_server_error(api_schema: Any, known: dict[str, str]) -> None:
    """Each operation on its own: valid requests, malformed ones, and valid ones about
    objects that exist (schemathesis's pytest decorator cannot run on this pytest, so one
    test drives every operation)."""
    failures: list[str] = []
    unbreakable: list[str] = []
    started = time.monotonic()
    for found in api_schema.get_all_operations():
        operation = found.ok()
        names = {p.name for p in operation.path_parameters}
        passes = {
            mode.value: operation.as_strategy(generation_mode=mode)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        }
        if names:
            pinned = {name: known[name] for name in names}
            passes["known objects"] = operation.as_strategy(path_parameters=pinned)
        for name, strategy in passes.items():

            @SETTINGS
            @given(case=strategy)
            def each(case: Case) -> None:
                bounded(case)
                no_server_error(case.call(timeout=10), case)

            try:
                each()
            except Unsatisfiable:
                assert name == "negative", f"{operation.label}: no {name} request possible"
                unbreakable.append(operation.label)  # nothing in it can be malformed
            except AssertionError as exc:
                failures.append(f"{operation.label} ({name}): {exc}")
    print(
        f"operations: {time.monotonic() - started:.1f}s, answers {dict(seen)}; "
        f"no malformed request possible: {unbreakable}"
    )
    seen.clear()
    assert not failures, "\n\n".join(failures)


def test_no_sequence_of_operations_answers_a_server_error(api_schema: Any) -> None:
    machine = api_schema.as_state_machine()

    class Bounded(machine):  # type: ignore[misc, valid-type]
        def before_call(self, case: Case) -> None:
            bounded(case)

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"timeout": 10}

        def validate_response(self, response: Response, case: Case, **kwargs: Any) -> None:
            no_server_error(response, case)

    started = time.monotonic()
    Bounded.run(
        settings=settings(SETTINGS, max_examples=SEQUENCES, stateful_step_count=STEPS_PER_SEQUENCE)
    )
    print(f"sequences: {time.monotonic() - started:.1f}s, answers {dict(seen)}")
