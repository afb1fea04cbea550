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
from collections.abc import Iterator
from dataclasses import dataclass, field

import docker
import pytest

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

    def bootstrap(self) -> None:
        """``theseus cluster bootstrap`` on the bed, then the registry's login stored in the
        cluster (``down`` tears the cluster down)."""
        with state.locked(self.plan.workdir):
            up.run_bootstrap(self.plan, up_recorder(self.plan))

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
            self.ours = True
            try:
                up.up(self.plan, bootstrap=False)
            except BaseException:
                down_module.down(self.plan.workdir)
                raise
        if self.bed is None:
            self.bed = Testbed(self.plan)
        return self.bed

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
