"""``scripts/testbed down``: undo everything ``up`` made, from its state file, also after a
partial ``up`` or a crash, and say what (if anything) is left.

Called by ``tests.testbed.cli`` and the fixture. The order matters: the cluster the bootstrap
set up first (``theseus cluster teardown``), then each engine's containers (through the engine,
which unmounts their file systems), then the recorded daemons (by PID, SIGTERM then SIGKILL),
then whatever still runs in the test bed's namespaces or its engines' cgroups (what a killed
engine or the bootstrap left), then mounts, cgroups, namespaces, links, the iptables rule,
certs.d, the CLI's context, and the work directory. Without a state file (it was deleted),
the names only the test bed uses (``ths-tb-*``, ``thstb*``) are swept all the same.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGKILL

from tests.testbed import context, engines, network, processes, registry, state
from tests.testbed.plan import BRIDGE, NETNS_PREFIX, TestbedPlan, make_plan
from tests.testbed.state import TestbedState
from tests.testbed.up import Say, cluster_args, theseus_command

TEARDOWN_TIMEOUT = 300.0
LEFTOVER_GRACE = 5.0
LEFTOVER_ROUNDS = 3


@dataclass
class DownReport:
    steps: list[tuple[str, str]] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # what could not be removed
    seconds: float = 0.0

    def step(self, what: str, outcome: str, say: Say) -> None:
        self.steps.append((what, outcome))
        say(f"  {what}: {outcome}")


def _our_netns() -> list[str]:
    if not processes.NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in processes.NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))


def _our_links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("thstb"))


def plan_for(workdir: Path, recorded: TestbedState | None) -> TestbedPlan:
    """The plan of the recorded bed, or, without a record, of as many hosts as are found."""
    if recorded is not None:
        return make_plan(workdir, recorded.hosts)
    found = [n for n in _our_netns() if n.startswith(NETNS_PREFIX + "h")]
    dirs = list((workdir / "hosts").glob("h*")) if (workdir / "hosts").is_dir() else []
    return make_plan(workdir, max(len(found), len(dirs), 1))


def _what_a_bed_makes(plan: TestbedPlan) -> TestbedState:
    """Without a state file: the things of a test bed whose names are the test bed's alone
    (its certs.d directory and its tags in the root engine; namespaces and links are found by
    their prefixes)."""
    return TestbedState(
        hosts=len(plan.hosts),
        remove_paths=[str(registry.certs_dir_of(plan.registry.host))],
        root_tags=[f"{plan.registry.host}/{image}" for image in registry.IMAGES],
        cgroups=[h.cgroup_parent for h in plan.hosts],
    )


def down(workdir: Path, say: Say = print) -> DownReport:
    with state.locked(workdir):
        return _down(workdir, say)


def _down(workdir: Path, say: Say) -> DownReport:
    started = time.monotonic()
    report = DownReport()
    recorded = state.load(workdir / "state.json")
    plan = plan_for(workdir, recorded)
    current = recorded or _what_a_bed_makes(plan)
    if recorded is None and not _our_netns() and not _our_links():
        say("no test bed is up")
    if current.bootstrap_started and plan.hosts_file.exists():
        report.step("cluster", _teardown(plan, current), say)
    removed = 0
    for host in plan.hosts:
        try:
            removed += engines.remove_containers(host)
        except Exception as exc:  # an engine that fails here is stopped below all the same
            report.step(f"containers of {host.name}", f"not removed: {exc}", say)
    report.step("containers", f"{removed} removed", say)
    outcome = processes.stop(current.processes)
    report.step("daemons", _summary(outcome), say)
    _stop_leftovers(plan, current, report, say)
    _unmount(plan, report, say)
    for parent in {*current.cgroups, *(h.cgroup_parent for h in plan.hosts)}:
        report.left += engines.remove_cgroups(parent)
    _remove_network(plan, current, report, say)
    for path in current.remove_paths:
        _remove_path(Path(path), report)
    if current.root_tags:
        left, kept = registry.untag(current.root_tags)
        report.left += left
        for tag in kept:
            report.step("tag kept", tag, say)
    if current.context is not None:
        report.step("CLI context", context.restore(current.context), say)
    _clean_workdir(plan, report, say)
    processes.reap(current.processes)
    report.left += leftovers(plan, current)
    if not report.left:
        state.clear(plan.state_file)
    report.seconds = round(time.monotonic() - started, 2)
    say(f"down in {report.seconds:.1f} s" + ("" if not report.left else "; LEFT:"))
    for item in report.left:
        say(f"  left: {item}")
    return report


def _summary(outcome: dict[str, str]) -> str:
    if not outcome:
        return "none recorded"
    return ", ".join(f"{name} {how}" for name, how in sorted(outcome.items()))


def _teardown(plan: TestbedPlan, current: TestbedState) -> str:
    # --keep-packages: the hosts share this machine's packages, which are not the bed's.
    argv = [
        theseus_command(),
        "cluster",
        "teardown",
        *cluster_args(plan),
        "--yes",
        "--keep-packages",
    ]
    try:
        result = subprocess.run(
            argv,
            env=context.environ(current.context) if current.context is not None else None,
            timeout=TEARDOWN_TIMEOUT,
            capture_output=True,
            text=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"teardown failed ({exc}); its processes are stopped below"
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        return f"teardown exited {result.returncode} ({last[0]}); its processes are stopped below"
    return "torn down"


def _stop_leftovers(plan: TestbedPlan, current: TestbedState, report: DownReport, say: Say) -> None:
    """Whatever still runs in the namespaces (the bootstrap's processes, a dead engine's
    containerd and shims): SIGTERM, then SIGKILL; and in the engines' cgroups (the containers
    of an engine that died without stopping them): SIGKILL at once, as ``docker rm -f`` does.
    A few rounds: a supervisor stopped in one round may have started a child in it (a
    process left in a namespace would outlive its deletion, unseen)."""
    for _ in range(LEFTOVER_ROUNDS):
        in_netns, in_cgroups = _running_in_bed(plan, current)
        if not in_netns and not in_cgroups:
            return
        if in_cgroups:
            outcome = processes.stop_pids(in_cgroups, LEFTOVER_GRACE, SIGKILL)
            report.step("containers of stopped engines", _summary(outcome), say)
        if in_netns:
            outcome = processes.stop_pids(in_netns, LEFTOVER_GRACE)
            report.step("left in the namespaces", _summary(outcome), say)
    in_netns, in_cgroups = _running_in_bed(plan, current)
    report.left += [f"process {pid} in {where}" for pid, where in in_netns.items()]
    report.left += [f"process {pid} in {where}" for pid, where in in_cgroups.items()]


def _running_in_bed(
    plan: TestbedPlan, current: TestbedState
) -> tuple[dict[int, str], dict[int, str]]:
    """The processes in the bed's namespaces, and those in its engines' cgroups but not in a
    namespace of the bed (containers have namespaces of their own): pid -> where."""
    in_netns: dict[int, str] = {}
    for netns in {*current.netns, *plan.netns_names, *_our_netns()}:
        for pid in processes.netns_pids(netns):
            in_netns[pid] = netns
    in_cgroups: dict[int, str] = {}
    for host in plan.hosts:
        for pid in engines.cgroup_pids(host.cgroup_parent):
            if pid not in in_netns:
                in_cgroups[pid] = f"cgroup {host.cgroup_parent}"
    return in_netns, in_cgroups


def _unmount(plan: TestbedPlan, report: DownReport, say: Say) -> None:
    left = engines.unmount_under(plan.workdir)
    for host in plan.hosts:
        left += engines.unmount_under(host.paths.docker_exec)
    report.left += left
    if left:
        report.step("mounts", f"{len(left)} could not be unmounted", say)


def _remove_network(plan: TestbedPlan, current: TestbedState, report: DownReport, say: Say) -> None:
    # The veths first (deleting one end deletes the pair at once; a namespace's deletion
    # takes its end away only later), then the namespaces, the bridge last.
    veths = sorted(name for name in {*current.links, *_our_links()} if name != BRIDGE)
    names = sorted({*current.netns, *_our_netns()})
    steps = [(network.remove_link, v) for v in veths]
    steps += [(network.remove_netns, n) for n in names]
    if current.bridge or network.link_exists(BRIDGE):
        steps.append((network.remove_link, BRIDGE))
    for remove, item in steps:
        try:
            remove(item)
        except network.NetworkError as exc:
            report.left.append(str(exc))
    rules = current.iptables or network.bridge_rules(BRIDGE)
    for rule in rules:
        try:
            network.remove_rule(rule)
        except network.NetworkError as exc:
            report.left.append(str(exc))
    if current.netns_mount and not _any_netns():
        # The first `ip netns add` of this machine made /run/netns a mount point of its own.
        subprocess.run(["umount", str(processes.NETNS_DIR)], capture_output=True, check=False)
    report.step("network", f"{len(names)} namespaces, {len(veths)} veths, the bridge", say)


def _any_netns() -> bool:
    return processes.NETNS_DIR.is_dir() and any(processes.NETNS_DIR.iterdir())


def _remove_path(path: Path, report: DownReport) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        report.left.append(f"{path}: {exc.strerror}")


def _clean_workdir(plan: TestbedPlan, report: DownReport, say: Say) -> None:
    """The hosts' directories (engines' data: image layers), the registry's, the keys and the
    hosts file; never while anything is still mounted under them."""
    still = engines.mounts_under(plan.workdir)
    if still:
        report.left += [f"mounted: {p}" for p in still]
        say("  work directory kept: something is still mounted under it")
        return
    for name in ("hosts", "registry", "ssh", "cluster"):
        shutil.rmtree(plan.workdir / name, ignore_errors=True)
    for path in (plan.hosts_file, plan.known_hosts, *plan.workdir.glob("hosts-*.yaml")):
        path.unlink(missing_ok=True)  # hosts-*.yaml: parts of the hosts file (Testbed.hosts_file)


def leftovers(plan: TestbedPlan, current: TestbedState) -> list[str]:
    """What of the test bed still exists (empty when down left nothing behind): namespaces,
    links, mounts, recorded processes, processes in the engines' cgroups, the rule."""
    left = [f"namespace {n}" for n in _our_netns()]
    left += [f"link {n}" for n in _our_links()]
    left += [f"mount {p}" for p in engines.mounts_under(plan.workdir)]
    left += [
        f"mount {p}"
        for p in network.mount_points()
        if p.startswith(str(processes.NETNS_DIR.resolve()) + "/" + NETNS_PREFIX)
    ]
    left += [f"process {p.name} ({p.pid})" for p in current.processes if processes.alive(p)]
    for host in plan.hosts:
        left += [
            f"process {pid} in {host.cgroup_parent}"
            for pid in engines.cgroup_pids(host.cgroup_parent)
        ]
    for rule in network.bridge_rules(BRIDGE):
        if network.rule_exists(rule):
            left.append("iptables rule " + " ".join(rule))
    return left
