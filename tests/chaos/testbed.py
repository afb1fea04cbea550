"""The chaos run on the test bed (``scripts/chaos --testbed``): the workload and invariants of
``tests.chaos.run.Chaos`` on a cluster of separate hosts (``tests/testbed``), with the faults
that real clusters meet: a host cut off the network while everything on it runs on (healed
after a while, often past its groups' fence), and a whole host killed at once (started again
after a while, as a machine that boots, and its services by a bootstrap run). Containers are
still killed and checked tasks sickened, on whichever host runs them.

One host is faulted at a time: the bed's cluster has three server hosts, and two of them keep
etcd's quorum. At every tick the run also measures how long any group ran more than its
``instances`` (``tests.chaos.windows``): the bound the fence puts on a partition.

Called by ``python -m tests.chaos --testbed`` and, short, by
``tests/integration/test_partitions.py``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from tests.chaos.run import CHECKED, SERVICES, SICK_MARK, Chaos, ChaosReport
from tests.chaos.windows import OverInstances, counted
from tests.testbed.faults import cut_host, heal_host, kill_host, revive_host
from tests.testbed.fixture import Testbed
from theseus.api.client import ApiError, ServerClient, ServerUnreachable
from theseus.cli import contexts
from theseus.security.tls import client_context

# Per tick, relative weights. No process kills of their own: a host's death kills them all.
ACTIONS = {
    "deploy": 4,
    "remove": 1,
    "kill_container": 3,
    "sicken_task": 2,
    "cut_host": 1,
    "kill_host": 1,
}
FENCE_SECONDS = 8  # every group's stop_after_server_loss_seconds: cuts often outlast it
SERVERS = ("h1", "h2", "h3")
HOST_FAULTS = ("cut_host", "kill_host")
BOOT_TIMEOUT = 600.0  # a host's engine and sshd, then the bootstrap: about 15 s


class TestbedChaos(Chaos):
    __test__ = False

    def __init__(
        self,
        bed: Testbed,
        hosts_file: Path,
        seed: int,
        log: Callable[[str], None] = print,
        round_seconds: float = 10.0,
        settle_seconds: float = 60.0,
    ) -> None:
        self.bed = bed
        self.hosts_file = hosts_file
        context = contexts.resolve(None)
        assert context is not None and context.ca is not None, "no CLI context for the bed"
        self.servers = list(context.servers)
        self.tls = client_context(ca_pem=context.ca.encode())
        self.token = context.token
        self.engines = {host.name: bed.engine(host) for host in bed.hosts}
        self._shared: ServerClient | None = None
        self.faulted: dict[str, str] = {}  # host -> "cut" | "dead", until healed or booted
        self.last_host_fault = ""
        self.booting: list[threading.Thread] = []
        self.over = OverInstances(report_over=FENCE_SECONDS + 5)
        # No Cluster of local processes: every call that used one is overridden here.
        super().__init__(None, {}, seed, log, round_seconds, settle_seconds)  # type: ignore[arg-type]
        self.actions = dict(ACTIONS)
        self.image = bed.image()
        self.spec_extra = {"stop_after_server_loss_seconds": FENCE_SECONDS}
        # A rolling update runs one more task on purpose: it would count as over instances.
        self.rolling_updates = False

    def run(self, duration: float) -> ChaosReport:
        report = super().run(duration)
        report.longest_over_instances = round(self.over.finish(time.monotonic()), 2)
        if self.over.longest_service is not None:
            self.log(
                f"over instances: {self.over.windows} windows, the longest"
                f" {self.over.longest:.1f}s ({self.over.longest_service})"
            )
        for window in self.over.long_windows:
            self.log(f"  long window: {window}")
        return report

    # --- the cluster --------------------------------------------------------------------------

    def _client(self) -> contextlib.AbstractContextManager[ServerClient]:
        # One client for the whole run, as a user's would be: once a cut host's server stops
        # answering, the client stays with the one that answered (a new client per call would
        # try the cut one first, and wait out its timeout, every time).
        if self._shared is None:
            self._shared = ServerClient(self.servers, tls=self.tls, token=self.token, timeout=5.0)
        return contextlib.nullcontext(self._shared)

    def _server_addresses(self) -> list[str]:
        return self.servers

    def _containers(self) -> list[dict[str, Any]]:
        """Running containers of the chaos services on every host that is not dead (a cut
        host's engine still answers on its socket), each with the ``_host`` it runs on."""
        found = []
        for host, engine in self.engines.items():
            if self.faulted.get(host) == "dead":
                continue
            try:
                running = engine.api.containers(
                    filters={"label": [f"theseus.cluster={self.cluster_id}", "theseus.task"]}
                )
            except docker.errors.DockerException:
                continue  # an engine starting again
            found += [{**c, "_host": host} for c in running if self._ours(c)]
        return found

    def _ours(self, container: dict[str, Any]) -> bool:
        return container["Labels"].get("theseus.service") in SERVICES

    def _observe(self) -> Any:
        self._tick()
        return super()._observe()

    def _tick(self) -> None:
        """Sample how many containers run per group against its instances."""
        try:
            with self._client() as client:
                instances = {g.service: g.instances for g in client.groups().groups}
                tasks = {t.id: t for t in client.tasks().tasks}
        except (ServerUnreachable, ApiError):
            return  # no sample: the window, if one is open, goes on
        stopping = {t.id for t in tasks.values() if t.desired != "run"}
        found = self._containers()
        containers = [(c["Labels"]["theseus.service"], c["Labels"]["theseus.task"]) for c in found]

        def describe(service: str) -> str:
            def one(c: dict[str, Any]) -> str:
                task = tasks.get(c["Labels"]["theseus.task"])
                known = f"{task.desired}/{task.state}" if task is not None else "unknown"
                return f"{c['Labels']['theseus.task']} on {c['_host']} ({known})"

            ours = [c for c in found if c["Labels"]["theseus.service"] == service]
            cut = ", ".join(f"{h} {k}" for h, k in self.faulted.items()) or "no host faulted"
            return f"{cut}; " + ", ".join(one(c) for c in ours)

        self.over.sample(time.monotonic(), instances, counted(containers, stopping), describe)

    # --- faults -------------------------------------------------------------------------------

    def _possible(self, kind: str) -> bool:
        if kind in HOST_FAULTS:
            # One host at a time, and the two kinds in turn: a short run has both.
            return not self.faulted and kind != self.last_host_fault
        return True

    def _kill_container(self) -> bool:
        ours = self._containers()
        if not ours:
            return False
        victim = self.rng.choice(ours)
        try:
            self.engines[victim["_host"]].api.kill(victim["Id"])
        except docker.errors.APIError:
            return False  # already gone
        return True

    def _sicken_task(self) -> bool:
        checked = [c for c in self._containers() if c["Labels"]["theseus.service"] in CHECKED]
        if not checked:
            return False
        victim = self.rng.choice(checked)
        try:
            engine = self.engines[victim["_host"]]
            exit_code, _ = engine.containers.get(victim["Id"]).exec_run(["touch", SICK_MARK])
        except docker.errors.APIError:
            return False
        return bool(exit_code == 0)

    def _cut_host(self) -> bool:
        name = self.rng.choice(self.bed.plan.host_names)
        host = self.bed.plan.host(name)
        cut_host(host)
        self.faulted[name] = "cut"
        self.last_host_fault = "cut_host"

        def heal() -> None:
            heal_host(host)
            self.faulted.pop(name, None)

        # From under the liveness timeout to well past the fence.
        lasts = self.rng.uniform(2.0, 2.0 * FENCE_SECONDS)
        self.log(f"{time.strftime('%H:%M:%S')}   {name} cut off for {lasts:.1f}s")
        self._later(lasts, f"heal {name}", heal)
        return True

    def _kill_host(self) -> bool:
        name = self.rng.choice(self.bed.plan.host_names)
        host = self.bed.plan.host(name)
        killed = kill_host(host)
        self.faulted[name] = "dead"
        self.last_host_fault = "kill_host"

        def boot() -> None:
            # The host boots and an operator runs the bootstrap again (its etcd, server and
            # agent started), while the chaos goes on: a thread, joined at the round's end.
            def booting() -> None:
                try:
                    revive_host(self.bed.plan, host)
                    self.bed.bootstrap(self.hosts_file)
                finally:
                    self.faulted.pop(name, None)

            thread = threading.Thread(target=booting, name=f"boot-{name}", daemon=True)
            thread.start()
            self.booting.append(thread)

        after = self.rng.uniform(2.0, 10.0)
        stamp = time.strftime("%H:%M:%S")
        self.log(f"{stamp}   {name} killed ({killed} processes), boots {after:.1f}s later")
        self._later(after, f"boot {name}", boot)
        return True

    def _restart_everything(self) -> None:
        super()._restart_everything()
        for thread in self.booting:
            thread.join(BOOT_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"{thread.name} did not finish within {BOOT_TIMEOUT} s")
        self.booting.clear()

    def remove_services(self) -> None:
        """Every host healed or booted, then the chaos services removed: the bed's cluster is
        left as the run found it (the bed's own ``down`` removes the rest)."""
        self._restart_everything()
        for service in SERVICES:
            try:
                with self._client() as client:
                    client.remove(service)
            except (ServerUnreachable, ApiError):
                pass  # not deployed, or the cluster is gone: nothing to leave behind

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()
        super().close()
