"""``scripts/testbed up``: make the test bed of ``tests.testbed.plan`` (network, engines, sshds,
registry, images pushed, ``hosts.yaml``), then bootstrap a Theseus cluster on it over SSH.

Called by ``tests.testbed.cli`` and the fixture. Every thing made is recorded in the state file
before the next is made, so a failure (or a crash) half-way leaves a record ``down`` undoes;
``up`` never cleans up after itself, so a failure can be looked at; it says to run ``down``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.kit.image_registry import ImageRegistry
from tests.testbed import context, engines, network, processes, registry, sshd, state
from tests.testbed.hostsfile import write_hosts_file
from tests.testbed.plan import TestbedPlan
from tests.testbed.state import Recorder, TestbedState

REQUIRED_COMMANDS = ("ip", "iptables", "nsenter", "dockerd", "umount", "docker-registry")
BOOTSTRAP_TIMEOUT = 600.0
Say = Callable[[str], None]


class UpError(RuntimeError):
    pass


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def theseus_command() -> str:
    return str(repo_root() / ".venv" / "bin" / "theseus")


@contextmanager
def _timed(rec: Recorder, step: str, say: Say) -> Iterator[None]:
    start = time.monotonic()
    yield
    elapsed = time.monotonic() - start
    rec.state.timings[step] = round(elapsed, 2)
    rec.save()
    say(f"  {step:<10} {elapsed:6.1f} s")


def not_running(current: TestbedState) -> list[str]:
    """What of a complete test bed is not running (empty: it is up)."""
    return [p.name for p in current.processes if not processes.alive(p)]


def leftovers_in_use(plan: TestbedPlan) -> bool | None:
    """Whether a test bed's namespaces and links are there without a state file of this work
    directory (None: nothing is there), and if so whether anything still runs in them: a bed
    of another clone that is up (True), or the remains of one whose processes were all killed
    (False: the machine's processes were stopped under it), which ``down`` can sweep."""
    names = [n for n in plan.netns_names if network.netns_exists(n)]
    links = [n for n in [plan.bridge, plan.registry.veth, *(h.veth for h in plan.hosts)]]
    if not names and not any(network.link_exists(n) for n in links):
        return None
    return any(network.pids_in(n) for n in names)


def preflight(plan: TestbedPlan) -> None:
    if os.geteuid() != 0:
        raise UpError("the test bed needs root (network namespaces, bridges, iptables)")
    missing = [c for c in REQUIRED_COMMANDS if shutil.which(c) is None]
    if not Path(sshd.SSHD).exists():
        missing.append(sshd.SSHD)
    if missing:
        raise UpError(f"missing commands: {', '.join(missing)} (scripts/setup installs them)")
    missing_images = registry.missing_images()
    if missing_images:
        raise UpError(
            f"not in this machine's Docker Engine: {', '.join(missing_images)}; "
            ".venv/bin/theseus images build makes them (scripts/setup does)"
        )
    taken = [n for n in plan.netns_names if network.netns_exists(n)]
    taken += [n for n in [plan.bridge, plan.registry.veth] if network.link_exists(n)]
    taken += [h.veth for h in plan.hosts if network.link_exists(h.veth)]
    if taken:
        raise UpError(
            f"already there, made by another test bed without a state file: {', '.join(taken)}; "
            "scripts/testbed down removes them"
        )


def up(plan: TestbedPlan, bootstrap: bool, say: Say = print) -> TestbedState:
    with state.locked(plan.workdir):
        return _up(plan, bootstrap, say)


def _up(plan: TestbedPlan, bootstrap: bool, say: Say) -> TestbedState:
    existing = state.load(plan.state_file)
    if existing is not None:
        return _already(plan, existing, bootstrap, say)
    preflight(plan)
    rec = Recorder(plan.state_file, TestbedState(hosts=len(plan.hosts)))
    rec.state.context = context.remember()
    rec.save()
    say(f"test bed: {len(plan.hosts)} hosts, state in {plan.state_file}")
    total = time.monotonic()
    with _timed(rec, "network", say):
        make_network(plan, rec)
    with _timed(rec, "engines", say):
        start_engines(plan, rec)
    with _timed(rec, "sshd", say):
        start_sshds(plan, rec)
    with _timed(rec, "registry", say):
        started = start_registry(plan, rec)
    with _timed(rec, "push", say):
        # Recorded before the push: a push that fails half-way has tagged some already.
        rec.state.root_tags = [started.image(name) for name in registry.IMAGES]
        rec.save()
        registry.push(started)
    write_hosts_file(plan)
    rec.state.up_complete = True
    rec.state.timings["up"] = round(time.monotonic() - total, 2)
    rec.save()
    say(f"hosts file: {plan.hosts_file}")
    if bootstrap:
        with _timed(rec, "bootstrap", say):
            run_bootstrap(plan, rec)
    say(f"registry: {plan.registry.host}")
    return rec.state


def _already(plan: TestbedPlan, existing: TestbedState, bootstrap: bool, say: Say) -> TestbedState:
    if not existing.up_complete:
        raise UpError(
            f"a test bed was partly made (an earlier up failed or was killed; {plan.state_file}):"
            " run scripts/testbed down first"
        )
    if existing.hosts != len(plan.hosts):
        raise UpError(
            f"a test bed of {existing.hosts} hosts is up: scripts/testbed down first to make "
            f"one of {len(plan.hosts)}"
        )
    stopped = not_running(existing)
    if stopped:
        raise UpError(
            f"the test bed is up but {', '.join(stopped)} no longer runs: "
            "scripts/testbed down, then up"
        )
    say(f"the test bed is up ({existing.hosts} hosts)")
    if bootstrap and not existing.bootstrap_done:
        # Up without (or with a failed) bootstrap: this is the way to run it (again).
        rec = Recorder(plan.state_file, existing)
        with _timed(rec, "bootstrap", say):
            run_bootstrap(plan, rec)
    say(f"registry: {existing.registry_host}")
    return existing


def make_network(plan: TestbedPlan, rec: Recorder) -> None:
    s = rec.state
    s.netns_mount = not network.is_mount_point(processes.NETNS_DIR)
    rec.save()
    network.make_bridge(plan.bridge, plan.bridge_cidr)
    s.bridge = plan.bridge
    rec.save()
    for position, rule in enumerate(network.bridge_rules(plan.bridge), start=1):
        s.iptables.append(rule)  # recorded first: down removes a rule that is not there too
        rec.save()
        network.insert_rule(rule, position)
    ends = [(plan.registry.netns, plan.registry.veth, plan.registry.address)]
    ends += [(h.netns, h.veth, h.address) for h in plan.hosts]
    for netns, veth, address in ends:
        network.make_netns(netns)
        s.netns.append(netns)
        rec.save()
        network.make_veth(veth, netns, f"{address}/24", plan.bridge)
        s.links.append(veth)
        rec.save()


def start_engines(plan: TestbedPlan, rec: Recorder) -> None:
    """All at once (each takes seconds to come up), then wait for each."""
    started = []
    for host in plan.hosts:
        rec.state.cgroups.append(host.cgroup_parent)
        rec.state.engine_roots += [str(host.paths.docker_data), str(host.paths.docker_exec)]
        entry = engines.start_engine(host)
        rec.state.processes.append(entry)
        rec.save()
        started.append((host, entry))
    for host, entry in started:
        engines.wait_engine(host, entry)


def start_sshds(plan: TestbedPlan, rec: Recorder) -> None:
    # Left in place by down: openssh-server's own directory, which other sshds of this
    # machine (the bootstrap's tests) need as well.
    sshd.PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    plan.ssh_dir.mkdir(parents=True, exist_ok=True)
    plan.ssh_dir.chmod(0o700)
    client_public = sshd.make_key(plan.client_key, "theseus-testbed")
    plan.authorized_keys.write_text(client_public + "\n")
    plan.authorized_keys.chmod(0o600)
    lines = []
    started = []
    for host in plan.hosts:
        public = sshd.prepare(host, plan.authorized_keys)
        lines.append(sshd.known_hosts_line(host, public))
        entry = sshd.start_sshd(host)
        rec.state.processes.append(entry)
        rec.save()
        started.append((host, entry))
    plan.known_hosts.write_text("\n".join(lines) + "\n")
    for host, entry in started:
        sshd.wait_sshd(host, entry)


def start_registry(plan: TestbedPlan, rec: Recorder) -> ImageRegistry:
    started = registry.start(plan.registry)
    rec.state.processes.append(
        state.ProcessEntry(
            name="registry",
            kind="registry",
            pid=started.pid,
            start_time=processes.start_time(started.pid) or 0,
            command=processes.cmdline_of(started.pid),
            log=str(plan.registry.workdir / "registry.log"),
            netns=plan.registry.netns,
        )
    )
    rec.state.registry_host = started.host
    rec.save()
    # Recorded first: the directory may be made and the write then fail.
    rec.state.remove_paths.append(str(registry.certs_dir(started)))
    rec.save()
    registry.trust(started)
    return started


def cluster_args(plan: TestbedPlan, hosts_file: Path | None = None) -> list[str]:
    """The hosts file (the bed's, or a part of it: ``hosts_file``), and the workstation's
    state of the cluster (its CA, admin token) in the work directory, where down removes it
    with the rest."""
    hosts = hosts_file or plan.hosts_file
    return ["-f", str(hosts), "--state-dir", str(plan.cluster_state_dir)]


def run_bootstrap(
    plan: TestbedPlan,
    rec: Recorder,
    hosts_file: Path | None = None,
    extra: Sequence[str] = (),
) -> float:
    """``theseus cluster bootstrap`` of the bed's hosts file (or ``hosts_file``, some of its
    hosts: the others are added by a later run), then the registry's login stored in the
    cluster. Its duration in seconds, the login's included."""
    rec.state.bootstrap_started = True
    rec.save()
    started = time.monotonic()
    argv = [theseus_command(), "cluster", "bootstrap", *cluster_args(plan, hosts_file), *extra]
    try:
        result = subprocess.run(argv, env=_env(rec), timeout=BOOTSTRAP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise UpError(
            f"theseus cluster bootstrap did not finish within {BOOTSTRAP_TIMEOUT:g} s"
        ) from None
    if result.returncode != 0:
        raise UpError(
            f"theseus cluster bootstrap -f {plan.hosts_file} failed (exit {result.returncode});"
            " the test bed itself is up: scripts/testbed up runs the bootstrap again,"
            " scripts/testbed down removes it all"
        )
    login_registry(plan, rec)
    rec.state.bootstrap_done = True
    rec.save()
    return time.monotonic() - started


def _env(rec: Recorder) -> dict[str, str] | None:
    return context.environ(rec.state.context) if rec.state.context is not None else None


def login_registry(plan: TestbedPlan, rec: Recorder) -> None:
    """Store the registry's login in the cluster the CLI now points at, so that every agent
    pulls ``198.18.0.2:5000/...`` images. The password goes on stdin, never on a command line,
    and the command's output (which never holds it) is shown only on failure."""
    login = registry.credentials(plan.registry)
    argv = [theseus_command(), "registry-login", login.host, "-u", login.username]
    result = subprocess.run(
        [*argv, "--password-stdin"],
        env=_env(rec),
        input=login.password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise UpError(
            f"theseus registry-login {login.host} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
