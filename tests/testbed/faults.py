"""Faults injected into the test bed's hosts: a whole host killed at once, as a power cut
would; a host cut off the network while everything on it keeps running, then healed. Called by
the across-hosts and partition tests (``tests/integration/test_across_hosts.py``,
``test_partitions.py``) and the test bed benchmark (``bench/testbed.py``).

A killed host stays dead until ``revive_host`` starts its engine and sshd again, as a machine
that boots would (the cluster's services on it are then started by a bootstrap run, as an
operator would); otherwise ``tests.testbed.down`` removes what is left of it (its namespace,
veth, engine directories) with the rest of the bed. A cut host is healed by ``heal_host``, and
``down`` removes its link whatever its state.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess

from tests.testbed import engines, processes, sshd, state
from tests.testbed.plan import HostPlan, TestbedPlan
from theseus.cluster.waiting import WaitTimeout


def kill_host(host: HostPlan) -> int:
    """SIGKILL every process of ``host`` at once: those in its network namespace (the agent,
    its supervisor, sshd, the engine, containerd and its shims) and its containers' (in
    namespaces of their own, found by the engine's cgroup parent). How many were killed."""
    pids = set(processes.netns_pids(host.netns)) | engines.cgroup_pids(host.cgroup_parent)
    pids.discard(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def revive_host(plan: TestbedPlan, host: HostPlan) -> None:
    """Start a killed host's engine and sshd again (same data, same keys), each recorded in
    the bed's state in place of its dead entry, so that ``down`` stops the new ones and the
    bed counts as up."""
    with state.locked(plan.workdir):
        current = state.load(plan.state_file)
        assert current is not None, "the test bed is not up"
        recorder = state.Recorder(plan.state_file, current)
        for start, wait in (
            (engines.start_engine, engines.wait_engine),
            (sshd.start_sshd, sshd.wait_sshd),
        ):
            # Twice at most: on a busy machine dockerd may give up on its containerd (10 s)
            # just after a kill, and a second start finds it.
            for attempt in (1, 2):
                entry = start(host)
                current.processes = [p for p in current.processes if p.name != entry.name]
                current.processes.append(entry)
                recorder.save()
                try:
                    wait(host, entry)
                    break
                except (engines.EngineError, sshd.SshdError, WaitTimeout):
                    if attempt == 2:
                        raise


def cut_host(host: HostPlan) -> None:
    """Take the root namespace's end of ``host``'s veth down: the host loses its link to every
    other host and to the root namespace (its sshd included), while its processes, engine and
    containers run on and reach nothing. Its engine is still reached on its unix socket."""
    subprocess.run(["ip", "link", "set", host.veth, "down"], check=True, capture_output=True)


def heal_host(host: HostPlan) -> None:
    """Bring ``host``'s link back (``cut_host`` undone)."""
    subprocess.run(["ip", "link", "set", host.veth, "up"], check=True, capture_output=True)


# Rules inside a host's namespace, each undone by ``heal_rules``: a partition of one kind of
# traffic while the link stays up. DROP (not REJECT): a cut network answers nothing, so
# connections hang until their own timeouts, as they would on a real one.
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380


def etcd_client_rules() -> list[list[str]]:
    """The host's processes reach no etcd member's client port (their own host's included):
    its server is cut off from etcd while it still answers HTTP and its etcd member still
    serves the other hosts and its peers."""
    return [["OUTPUT", "-p", "tcp", "--dport", str(ETCD_CLIENT_PORT), "-j", "DROP"]]


def etcd_peer_rules() -> list[list[str]]:
    """The host's etcd member exchanges nothing with its peers: it is a minority of one,
    while its clients still reach it."""
    return [
        ["OUTPUT", "-p", "tcp", "--dport", str(ETCD_PEER_PORT), "-j", "DROP"],
        ["INPUT", "-p", "tcp", "--dport", str(ETCD_PEER_PORT), "-j", "DROP"],
    ]


def _iptables(host: HostPlan, action: str, rule: list[str]) -> subprocess.CompletedProcess[str]:
    # nsenter, as the engines are started: the rules are the host's own namespace's.
    argv = ["nsenter", f"--net=/var/run/netns/{host.netns}", "iptables", action, *rule]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def add_rules(host: HostPlan, rules: list[list[str]]) -> None:
    for rule in rules:
        result = _iptables(host, "-I", rule)
        if result.returncode != 0:
            raise RuntimeError(f"iptables -I {' '.join(rule)} in {host.netns}: {result.stderr}")


def heal_rules(host: HostPlan, rules: list[list[str]]) -> None:
    """Remove ``rules`` (each as many times as it was added; absent ones are fine)."""
    for rule in rules:
        while _iptables(host, "-D", rule).returncode == 0:
            pass


def etcd_leader(plan: TestbedPlan, names: list[str]) -> str | None:
    """The host (of ``names``, those that run an etcd member) whose member is the etcd
    cluster's raft leader, as ``etcdctl endpoint status`` says from the root namespace with the
    bootstrap's client certificate; None when no member answers or none knows a leader."""
    pki = plan.workdir / "cluster" / "pki"
    by_endpoint = {f"https://{plan.host(n).address}:{ETCD_CLIENT_PORT}": n for n in names}
    argv = ["etcdctl", "--endpoints", ",".join(by_endpoint), "--cacert", str(pki / "ca.pem")]
    argv += ["--cert", str(pki / "etcd-client.pem"), "--key", str(pki / "etcd-client-key.pem")]
    argv += ["--command-timeout", "3s", "endpoint", "status", "-w", "json"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    try:
        answers = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        return None
    for answer in answers:
        status = answer["Status"]
        if status.get("leader") and status["header"]["member_id"] == status["leader"]:
            return by_endpoint.get(answer["Endpoint"])
    return None
