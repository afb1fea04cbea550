"""The test bed as pytest fixtures: ``testbed_session`` (session-scoped) brings a test bed of
3 hosts up the first time a test asks for it and down at the end of the session, also when
tests failed; ``testbed`` (per test) hands it over, up again if a test took it down.

Use from an integration test module::

    from tests.testbed.fixture import testbed, testbed_session  # noqa: F401  (fixtures)

The bed is brought up without the bootstrap (``--no-bootstrap``): the hosts, engines, sshds and
registry only; ``Testbed.bootstrap()`` runs ``theseus cluster bootstrap`` on it when a test
wants the cluster. A test bed already up when the session starts (``scripts/testbed up``) is
used as it is and left up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import yaml

from tests.kit.image_registry import ImageRegistry, push_images
from tests.testbed import down as down_module
from tests.testbed import engines, state, up
from tests.testbed.cli import workdir
from tests.testbed.plan import HostPlan, TestbedPlan, make_plan
from tests.testbed.registry import RegistryCredentials, credentials

HOSTS = 3


@dataclass
class Testbed:
    """A test bed that is up: its plan and what the tests reach it by."""

    __test__ = False

    plan: TestbedPlan
    _clients: list[docker.DockerClient] = field(default_factory=list)

    @property
    def hosts(self) -> tuple[HostPlan, ...]:
        return self.plan.hosts

    def state(self) -> state.TestbedState:
        current = state.load(self.plan.state_file)
        assert current is not None, "the test bed is not up"
        return current

    def engine(self, host: HostPlan) -> docker.DockerClient:
        """A client of ``host``'s own engine (closed at the end of the session)."""
        client = engines.client(host, timeout=120)
        self._clients.append(client)
        return client

    @property
    def registry(self) -> RegistryCredentials:
        return credentials(self.plan.registry)

    def image(self, name: str = "theseus/busybox:latest") -> str:
        """``name`` as the hosts pull it: from the test bed's registry."""
        return f"{self.registry.host}/{name}"

    def push(self, images: Sequence[str]) -> list[str]:
        """Images of this machine's engine pushed to the bed's registry, as ``<host>/<name>``
        (tags the caller removes from this machine's engine when done; ``down`` removes only
        those of the project's images)."""
        login = self.registry
        registry = ImageRegistry(
            login.host, login.username, login.password, login.ca_cert, 0, self.plan.workdir
        )
        return push_images(registry, images)

    def bootstrap(self, hosts_file: Path | None = None, extra: Sequence[str] = ()) -> float:
        """``theseus cluster bootstrap`` on the bed (or on the hosts of ``hosts_file``, a part
        of the bed's hosts file), then the registry's login stored in the cluster (``down``
        tears the cluster down). Its duration in seconds."""
        with state.locked(self.plan.workdir):
            return up.run_bootstrap(self.plan, up_recorder(self.plan), hosts_file, extra)

    def hosts_file(self, names: Sequence[str], servers: Sequence[str] = ()) -> Path:
        """The bed's hosts file cut to the hosts ``names``, beside it (so that its relative
        paths still hold): what bootstraps a part of the bed. ``servers``: hosts that run etcd
        and a server as well as an agent (role ``both``), instead of the bed's h1 alone."""
        document = yaml.safe_load(self.plan.hosts_file.read_text())
        suffix = f"-servers-{'-'.join(servers)}" if servers else ""
        path = self.plan.workdir / f"hosts-{'-'.join(names)}{suffix}.yaml"
        hosts = [h for h in document["hosts"] if h["name"] in names]
        if servers:
            hosts = [{**h, "role": "both" if h["name"] in servers else "agent"} for h in hosts]
        path.write_text(yaml.safe_dump({**document, "hosts": hosts}))
        return path

    def close_clients(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()


def up_recorder(plan: TestbedPlan) -> state.Recorder:
    current = state.load(plan.state_file)
    assert current is not None, "the test bed is not up"
    return state.Recorder(plan.state_file, current)


class TestbedSession:
    """Brings the test bed up once, on first use; down at ``close`` if it did."""

    __test__ = False

    def __init__(self, plan: TestbedPlan) -> None:
        self.plan = plan
        self.ours = False  # brought up by this session: taken down at its end
        self.bed: Testbed | None = None

    def ensure_up(self) -> Testbed:
        current = state.load(self.plan.state_file)
        if (
            current is None
            or not current.up_complete
            or current.hosts != len(self.plan.hosts)
            or up.not_running(current)
        ):
            if current is not None:  # partial, another size, or a part died: start afresh
                down_module.down(self.plan.workdir)
            elif up.leftovers_in_use(self.plan) is False:
                # The remains of a bed whose every process was killed (with the machine's
                # processes, say): nothing uses them, and up would refuse to start beside them.
                down_module.down(self.plan.workdir)
            self.ours = True
            try:
                up.up(self.plan, bootstrap=False)
            except BaseException:
                down_module.down(self.plan.workdir)
                raise
        if self.bed is None:
            self.bed = Testbed(self.plan)
        return self.bed

    def with_cluster(self, servers: Sequence[str]) -> Testbed:
        """The bed up with a cluster bootstrapped whose server hosts (etcd, a server and an
        agent each) are ``servers`` and whose other hosts are agents. A cluster of another
        shape cannot become this one (etcd members are not added to a running cluster), so
        the bed is made afresh then."""
        bed = self.ensure_up()
        current = bed.state()
        if current.bootstrap_done and current.bootstrap_servers != list(servers):
            self.down()
            bed = self.ensure_up()
        if not bed.state().bootstrap_done:
            # Written after any down above: a down removes the bed's files.
            hosts_file = bed.hosts_file(bed.plan.host_names, servers=servers)
            bed.bootstrap(hosts_file)
            with state.locked(self.plan.workdir):
                recorder = up_recorder(self.plan)
                recorder.state.bootstrap_servers = list(servers)
                recorder.save()
        return bed

    def down(self) -> down_module.DownReport:
        if self.bed is not None:
            self.bed.close_clients()
        return down_module.down(self.plan.workdir)

    def close(self) -> None:
        if self.bed is not None:
            self.bed.close_clients()
        if self.ours and state.load(self.plan.state_file) is not None:
            down_module.down(self.plan.workdir)


def testbed_plan(hosts: int = HOSTS) -> TestbedPlan:
    return make_plan(workdir(), hosts)


@pytest.fixture(scope="session")
def testbed_session() -> Iterator[TestbedSession]:
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root (network namespaces, bridges, iptables)")
    session = TestbedSession(testbed_plan())
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def testbed(testbed_session: TestbedSession) -> Testbed:
    return testbed_session.ensure_up()
