"""A host cut off the network on the test bed (issue 14): its link goes down while its agent,
engine and containers keep running, then comes back.

The servers declare the cut host lost and run its task on another host; the cut agent,
reaching no server, stops its own task once the group's ``stop_after_server_loss_seconds``
has passed (the fence); after the heal the agent registers again and no duplicate is left: the
group runs exactly ``instances`` tasks and the registry holds exactly those. The window in which
the group ran more than ``instances`` is measured and bounded.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.kit.wait import wait_until
from tests.testbed.faults import cut_host, heal_host
from tests.testbed.fixture import Testbed, TestbedSession, testbed_session  # noqa: F401
from theseus.api.client import ServerClient
from theseus.api.schemas import TaskInfo
from theseus.cli import contexts
from theseus.security.tls import client_context

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FENCE_SECONDS = 8


def client() -> ServerClient:
    context = contexts.resolve(None)
    assert context is not None and context.ca is not None
    tls = client_context(ca_pem=context.ca.encode())
    return ServerClient(context.servers, tls=tls, token=context.token, timeout=30)


def running(api: ServerClient, service: str) -> list[TaskInfo]:
    return [t for t in api.tasks(service).tasks if t.state == "running" and t.desired == "run"]


def registered(api: ServerClient, service: str) -> set[str]:
    return {c.instance_name for g in api.registry(service).groups for c in g.containers}


def live_containers(engine: docker.DockerClient, service: str) -> list[Any]:
    return engine.containers.list(filters={"label": f"theseus.service={service}"})


@pytest.fixture(scope="module", autouse=True)
def _bed_down_after(testbed_session: TestbedSession) -> Iterator[None]:  # noqa: F811
    """The bed down at the module's end: its cluster is the CLI's current context, which the
    modules after this one (their own clusters, through the ``theseus`` command) must not
    inherit. ``down`` puts the contexts back as they were."""
    yield
    testbed_session.down()


@pytest.fixture
def bed(testbed_session: TestbedSession) -> Testbed:  # noqa: F811
    bed = testbed_session.ensure_up()
    if not bed.state().bootstrap_done:
        bed.bootstrap()
    return bed


def test_a_cut_off_host_fences_itself_and_rejoins_without_duplicates(bed: Testbed) -> None:
    h3 = bed.plan.host("h3")
    spec = {
        "image": bed.image(),
        "command": "exec sleep 3600",
        "instances": 3,
        "cpus": 0.05,
        "mem": 16,
        "stop_after_server_loss_seconds": FENCE_SECONDS,
    }
    h3_engine = bed.engine(h3)
    with client() as api:
        api.deploy(json.dumps({"deploy": {"fenced": spec}}), "application/json")
        try:
            wait_until(lambda: len(registered(api, "fenced")) == 3, 120, "3 registered")
            (on_h3,) = [t for t in running(api, "fenced") if t.node == "h3"]
            cut_at = time.monotonic()
            cut_host(h3)
            try:
                # The servers declare h3 lost and run its task on h1 or h2: from then on the
                # group runs 4 (the original, cut off, goes on) until the fence.
                wait_until(
                    lambda: (
                        len(found := [t for t in running(api, "fenced") if t.node != "h3"]) == 3
                        and registered(api, "fenced") == {t.id for t in found}
                    ),
                    30,
                    "h3's task replaced on another host, and out of the registry",
                )
                replaced_after = time.monotonic() - cut_at
                # Its container ran on while cut off, then the fence stopped it.
                assert live_containers(h3_engine, "fenced"), "stopped before its setting"
                wait_until(
                    lambda: not live_containers(h3_engine, "fenced"),
                    FENCE_SECONDS + 10,
                    "the cut-off agent to stop its own task",
                )
                fenced_after = time.monotonic() - cut_at
                # From the last heartbeat answered, sent up to one interval (1 s) before the cut.
                assert fenced_after >= FENCE_SECONDS - 2
            finally:
                heal_host(h3)
            healed_at = time.monotonic()

            def converged() -> bool:
                tasks = running(api, "fenced")
                ids = {t.id for t in tasks}
                containers = sum(len(live_containers(bed.engine(h), "fenced")) for h in bed.hosts)
                return (
                    len(tasks) == 3
                    and registered(api, "fenced") == ids
                    and on_h3.id not in ids
                    and containers == 3
                    and any(n.name == "h3" and n.status == "ready" for n in api.nodes().nodes)
                )

            wait_until(converged, 60, "h3 back, 3 tasks and 3 containers, the registry equal")
            print(
                f"h3's task replaced {replaced_after:.1f} s after the cut, fenced after"
                f" {fenced_after:.1f} s: the group ran 4 for {fenced_after - replaced_after:.1f} s;"
                f" converged {time.monotonic() - healed_at:.1f} s after the heal"
            )
        finally:
            with contextlib.suppress(Exception):
                api.remove("fenced")
