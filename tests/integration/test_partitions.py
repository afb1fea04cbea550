"""A host cut off the network on the test bed (issue 14): its link goes down while its agent,
engine and containers keep running, then comes back.

The servers declare the cut host lost and run its task on another host; the cut agent,
reaching no server, stops its own task once the group's ``stop_after_server_loss_seconds``
has passed (the fence); after the heal the agent registers again and no duplicate is left: the
group runs exactly ``instances`` tasks and the registry holds exactly those. The window in which
the group ran more than ``instances`` is measured and bounded.

The bed's cluster here has three server hosts (etcd, a server and an agent on each), so that
a server or an etcd member can be cut off while a majority goes on: a leading server cut off
from etcd (its HTTP still answered) steps down within its lease and refuses to answer from its
stale view, another leads, and nothing runs twice; an etcd member cut off from its peers (a
minority of one) does not stop the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest

from tests.chaos.testbed import TestbedChaos
from tests.kit.wait import unless_unavailable
from tests.kit.wait import wait_until as _wait_until
from tests.testbed.evidence import evidence, host_logs
from tests.testbed.faults import (
    add_rules,
    cut_host,
    etcd_client_rules,
    etcd_leader,
    etcd_peer_rules,
    heal_host,
    heal_rules,
)
from tests.testbed.fixture import Testbed, TestbedSession, testbed_session  # noqa: F401
from theseus.api.client import ApiError, ServerClient, ServerUnreachable
from theseus.api.schemas import TaskInfo
from theseus.cli import contexts
from theseus.cluster.waiting import WaitTimeout
from theseus.security.tls import client_context

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FENCE_SECONDS = 15  # past the replacement (within 10 s, after an etcd and a leader election)


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """The kit's wait, with a 503 from every server taken as "not yet": a healed etcd member
    can start an election, during which no server can vouch for its view. So is no answer at
    all: while the others answer 503 in that election, the cut host's server, asked last, does
    not answer (the client then reports the unreachable one; a CI run failed so)."""
    answered = unless_unavailable(check)

    def reached() -> Any:
        try:
            return answered()
        except ServerUnreachable:
            return None

    return _wait_until(reached, timeout, what, interval)


def client() -> ServerClient:
    context = contexts.resolve(None)
    assert context is not None and context.ca is not None
    tls = client_context(ca_pem=context.ca.encode())
    return ServerClient(context.servers, tls=tls, token=context.token, timeout=30)


def survivors_client(exclude: str) -> ServerClient:
    """A client of every server but the one on host ``exclude``."""
    context = contexts.resolve(None)
    assert context is not None and context.ca is not None
    tls = client_context(ca_pem=context.ca.encode())
    others = [url for host, url in server_urls().items() if host != exclude]
    return ServerClient(others, tls=tls, token=context.token, timeout=30)


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


SERVERS = ("h1", "h2", "h3")


@pytest.fixture
def bed(testbed_session: TestbedSession) -> Testbed:  # noqa: F811
    return testbed_session.with_cluster(SERVERS)


def server_urls() -> dict[str, str]:
    """Server URL by host name (the bed's addresses are the hosts' own)."""
    context = contexts.resolve(None)
    assert context is not None
    return {_host_of(url): url for url in context.servers}


def _host_of(url: str) -> str:
    address = urlsplit(url).hostname
    return f"h{int(str(address).rsplit('.', 1)[1]) - 10}"


def diagnosis(bed: Testbed, urls: dict[str, str], api: ServerClient) -> str:
    """What each server says of itself, what ``api`` answers for the group, and the end of
    every Theseus log on the hosts: for a failure that is not understood yet."""
    lines = []
    for host, url in urls.items():
        try:
            with one_server(url, timeout=5) as server:
                health = server.health()
            lines.append(f"{host} {url}: leader={health.leader} revision={health.revision}")
        except (ServerUnreachable, ApiError) as exc:
            lines.append(f"{host} {url}: {exc!r}")
    for call in (lambda: api.registry("steady"), lambda: api.tasks("steady")):
        try:
            lines.append(repr(call())[:2000])
        except (ServerUnreachable, ApiError) as exc:
            lines.append(repr(exc))
    for bed_host in bed.plan.hosts:
        for service, log in host_logs(bed_host):
            tail = log.read_text(errors="replace").splitlines()[-40:]
            lines += [f"--- {bed_host.name} {service}", *tail]
    return "\n".join(lines)


def one_server(url: str, timeout: float = 5) -> ServerClient:
    """A client of that server alone: its 503 is an answer, not a reason to move on."""
    context = contexts.resolve(None)
    assert context is not None and context.ca is not None
    tls = client_context(ca_pem=context.ca.encode())
    return ServerClient([url], tls=tls, token=context.token, timeout=timeout)


def leads(url: str) -> bool | None:
    """Whether that server says it leads; None when it does not answer."""
    try:
        with one_server(url, timeout=2) as api:
            return api.health().leader
    except (ServerUnreachable, ApiError):
        return None


def answers_tasks(url: str) -> int:
    """The status that server answers a read with (0: no answer)."""
    try:
        with one_server(url, timeout=2) as api:
            api.tasks()
    except ApiError as exc:
        return exc.status
    except ServerUnreachable:
        return 0
    return 200


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
            # Asked while h3 is cut: the servers of h1 and h2. A client of all three may try
            # h3's last (after 503s from the others while etcd elects a leader the cut may
            # have taken), and wait out its whole timeout on a host that drops every packet.
            survivors = survivors_client(exclude="h3")
            cut_at = time.monotonic()
            cut_host(h3)
            try:
                # The servers declare h3 lost and run its task on h1 or h2: from then on the
                # group runs 4 (the original, cut off, goes on) until the fence.
                wait_until(
                    lambda: (
                        len(found := [t for t in running(survivors, "fenced") if t.node != "h3"])
                        == 3
                        and registered(survivors, "fenced") == {t.id for t in found}
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
                survivors.close()
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


class ContainerWatch:
    """Samples, in a thread, the running containers of ``service`` on every host (each
    engine's own socket answers whatever the network does): the most seen at once, and any
    task seen running in two containers. A sampler, not a wait: what it holds is checked
    over the whole window the test makes."""

    def __init__(self, bed: Testbed, service: str) -> None:
        self.service = service
        self.engines = [bed.engine(h) for h in bed.hosts]
        self.most = 0
        self.samples = 0
        self.twice: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="container-watch", daemon=True)

    def __enter__(self) -> ContainerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                tasks = [
                    c.labels.get("theseus.task", "")
                    for engine in self.engines
                    for c in live_containers(engine, self.service)
                ]
            except docker.errors.DockerException:
                continue  # a container gone between the list and its inspection
            self.samples += 1
            self.most = max(self.most, len(tasks))
            self.twice |= {t for t in tasks if tasks.count(t) > 1}


def leaders(urls: dict[str, str]) -> list[str]:
    return [host for host, url in urls.items() if leads(url)]


def test_a_leading_server_cut_off_from_etcd_steps_down_and_another_leads(bed: Testbed) -> None:
    urls = server_urls()
    assert len(urls) == 3, urls
    spec = {
        "image": bed.image(),
        "command": "exec sleep 3600",
        "instances": 3,
        "cpus": 0.05,
        "mem": 16,
    }
    with client() as api, ContainerWatch(bed, "steady") as watch:
        api.deploy(json.dumps({"deploy": {"steady": spec}}), "application/json")
        try:
            wait_until(lambda: len(registered(api, "steady")) == 3, 120, "3 registered")
            (old,) = wait_until(lambda: leaders(urls), 30, "one leader")
            host = bed.plan.host(old)
            others = {h: u for h, u in urls.items() if h != old}
            rules = etcd_client_rules()
            cut_at = time.monotonic()
            add_rules(host, rules)
            try:
                # Its lease cannot be refreshed: it steps down when the lease would have run
                # out (2 s), and says so on /v1/health, which it still answers.
                wait_until(lambda: leads(urls[old]) is False, 15, f"{old} to step down")
                stepped_down = time.monotonic() - cut_at
                (new,) = wait_until(lambda: leaders(others), 30, "another server to lead")
                elected = time.monotonic() - cut_at
                # It cannot confirm that it follows etcd: reads get 503, not its stale view.
                wait_until(lambda: answers_tasks(urls[old]) == 503, 15, f"{old} to refuse reads")
                refused = time.monotonic() - cut_at
                # The cluster goes on without it: a scale is done by the new leader.
                with one_server(others[new], timeout=30) as other:
                    # The new leader may refuse with a 503 while its view catches up after
                    # the election (it failed so once in CI): a client asks again.
                    wait_until(
                        unless_unavailable(lambda: other.scale("steady", 4) or True),
                        30,
                        "the scale accepted by the new leader's server",
                    )
                    try:
                        wait_until(
                            lambda: len(registered(other, "steady")) == 4, 60, "4 registered"
                        )
                    except WaitTimeout as exc:  # it failed twice in CI, cause unknown: say more
                        raise AssertionError(f"{exc}\n{diagnosis(bed, urls, other)}") from exc
                    assert leads(urls[old]) is False, "the cut-off server leads again"
            finally:
                heal_rules(host, rules)
            healed_at = time.monotonic()
            wait_until(lambda: answers_tasks(urls[old]) == 200, 30, f"{old} to answer again")
            with one_server(urls[old]) as healed:
                # Its view is the cluster's again: the scale it did not see, the same tasks.
                wait_until(
                    lambda: (
                        {t.id for t in running(healed, "steady")}
                        == {t.id for t in running(api, "steady")}
                        and len(running(healed, "steady")) == 4
                    ),
                    30,
                    f"{old}'s view to be the cluster's",
                )
            assert leaders(urls) == [new]
            print(
                f"{old} cut off from etcd: stepped down after {stepped_down:.1f} s, {new} led"
                f" after {elected:.1f} s, reads refused after {refused:.1f} s; answering again"
                f" {time.monotonic() - healed_at:.1f} s after the heal"
            )
        finally:
            with contextlib.suppress(Exception):
                api.remove("steady")
    # Over the whole test, never more containers than the group's instances at the time
    # (3, then 4), and no task in two containers.
    assert watch.samples > 10
    assert watch.most <= 4 and not watch.twice, (watch.most, watch.twice)


def test_an_etcd_member_cut_off_from_its_peers_does_not_stop_the_cluster(bed: Testbed) -> None:
    urls = server_urls()
    (lead,) = wait_until(lambda: leaders(urls), 30, "one leader")
    raft_leader = wait_until(lambda: etcd_leader(bed.plan, list(SERVERS)), 30, "an etcd leader")
    # The minority member on a host whose server does not lead and whose member is not etcd's
    # raft leader either: this test is a follower member's. A server that leads is the test
    # above's; etcd's own leader cut off means an etcd election, during which no server can
    # renew its lease (the chaos test below cuts hosts whatever they hold).
    minority = next(h for h in SERVERS if h not in (lead, raft_leader))
    host = bed.plan.host(minority)
    spec = {"image": bed.image(), "command": "exec sleep 3600", "instances": 2, "mem": 16}
    rules = etcd_peer_rules()
    with client() as api, ContainerWatch(bed, "during") as watch:
        add_rules(host, rules)
        cut_at = time.monotonic()
        try:
            # Deploys, placements and the registry go on through the majority.
            api.deploy(json.dumps({"deploy": {"during": spec}}), "application/json")
            wait_until(lambda: len(registered(api, "during")) == 2, 60, "2 registered")
            deployed = time.monotonic() - cut_at
            api.scale("during", 3)
            wait_until(lambda: len(registered(api, "during")) == 3, 60, "3 registered")
            # The server on the minority's host, whose etcd member can no longer confirm
            # anything, refuses reads rather than answer from what it saw last, or follows
            # through another member: never a stale view.
            status = answers_tasks(urls[minority])
            assert status in (200, 503), status
            if status == 200:
                with one_server(urls[minority]) as there:
                    wait_until(lambda: len(running(there, "during")) == 3, 15, "its view current")
            assert leaders(urls) == [lead], "the leader changed for a minority member"
        finally:
            heal_rules(host, rules)
        try:
            wait_until(lambda: answers_tasks(urls[minority]) == 200, 60, "the member back")
            with one_server(urls[minority]) as there:
                wait_until(lambda: len(running(there, "during")) == 3, 30, "its view current")
            print(
                f"{minority}'s etcd member cut off from its peers: a deploy registered after"
                f" {deployed:.1f} s; reads on its server answered {status}"
            )
        finally:
            with contextlib.suppress(Exception):
                api.remove("during")
    assert watch.most <= 3 and not watch.twice, (watch.most, watch.twice)


def test_a_chaos_run_with_partitions_and_host_deaths_keeps_every_invariant(
    bed: Testbed,
) -> None:
    seed = int.from_bytes(os.urandom(4))
    print(f"chaos seed {seed} (scripts/chaos --testbed --seed {seed} replays the choices)")
    hosts_file = bed.hosts_file(bed.plan.host_names, servers=SERVERS)
    chaos = TestbedChaos(bed, hosts_file, seed, round_seconds=15.0, settle_seconds=90.0)
    # Partitions and host deaths are what this run is for: often (they come in turn).
    chaos.actions = {**chaos.actions, "cut_host": 3, "kill_host": 3}
    try:
        # 90 s: a round with a host death lasts until the host has booted and been
        # bootstrapped again (30-60 s on a loaded machine), and the run must see a cut too.
        report = chaos.run(duration=90.0)
    finally:
        chaos.remove_services()
        chaos.close()
    summary = report.summary()
    print(summary)
    found = evidence(bed.plan.hosts, report.violations)
    assert report.violations == [], (report.violations, summary, found)
    assert summary["faults"].get("cut_host", 0) >= 1, summary
    assert summary["faults"].get("kill_host", 0) >= 1, summary
    # The window over instances is reported, not bounded here: the chaos workload scales and
    # removes groups meanwhile, and its sampler's reading is not a partition's alone (the
    # cut's own window is bounded by the first test of this module and by test_fencing).
    assert report.longest_over_instances is not None
