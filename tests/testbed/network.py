"""The test bed's network: its namespaces, the bridge ``thstb0`` in the root namespace, one veth
pair per namespace (``eth0`` inside), and the iptables rule that lets traffic cross the bridge.

Called by ``tests.testbed.up`` (make) and ``tests.testbed.down`` (remove). Everything goes
through ``ip`` and ``iptables``; each ``make_*`` fails with ``NetworkError`` naming the command
and its error, each ``remove_*`` is silent when the thing is already gone.

Why the rule: the root namespace's dockerd sets FORWARD's policy to DROP, and with
``br_netfilter`` loaded, frames bridged between two veths of ``thstb0`` traverse the root
namespace's FORWARD chain: without an ACCEPT for ``-i thstb0 -o thstb0``, the hosts could
reach the root namespace but not each other. A second rule drops what would be forwarded into
the bridge from anywhere else, so the test bed is a closed network whatever FORWARD's policy.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.testbed.processes import NETNS_DIR

RULE_COMMENT = "theseus-testbed"


class NetworkError(RuntimeError):
    pass


def _run(argv: Sequence[str]) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _quiet(argv: Sequence[str]) -> bool:
    return subprocess.run(list(argv), capture_output=True, check=False).returncode == 0


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def pids_in(netns: str) -> list[int]:
    """The processes whose network namespace is ``netns`` (``ip netns pids``; none when it is
    gone)."""
    result = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()] if result.returncode == 0 else []


def is_mount_point(path: Path) -> bool:
    return str(path.resolve()) in mount_points()


def mount_points() -> list[str]:
    """Every mount point of this mount namespace (``/proc/self/mountinfo``'s fifth field;
    spaces and the like are octal-escaped there)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split()[4]
        points.append(field.encode().decode("unicode_escape"))
    return points


def make_bridge(name: str, cidr: str) -> None:
    _run(["ip", "link", "add", name, "type", "bridge"])
    _run(["ip", "addr", "add", cidr, "dev", name])
    _run(["ip", "link", "set", name, "up"])


def make_netns(name: str) -> None:
    _run(["ip", "netns", "add", name])
    _run(["ip", "-n", name, "link", "set", "lo", "up"])


def make_veth(root_end: str, netns: str, cidr: str, bridge: str) -> None:
    """A veth pair: ``root_end`` on ``bridge``, ``eth0`` in ``netns`` with ``cidr``. No default
    route inside: the hosts reach each other on the bridge's link and nothing beyond."""
    _run(["ip", "link", "add", root_end, "type", "veth", "peer", "name", "eth0", "netns", netns])
    _run(["ip", "link", "set", root_end, "master", bridge, "up"])
    _run(["ip", "-n", netns, "addr", "add", cidr, "dev", "eth0"])
    _run(["ip", "-n", netns, "link", "set", "eth0", "up"])


def bridge_rules(bridge: str) -> list[list[str]]:
    """The FORWARD rules, as given to ``iptables -I`` / ``-C`` / ``-D`` after the action:
    traffic between the test bed's namespaces crosses the bridge; nothing forwarded from
    elsewhere (another interface of this machine, a container of its own engine) enters it.
    The root namespace itself reaches the hosts without FORWARD (OUTPUT, INPUT)."""
    comment = ["-m", "comment", "--comment", RULE_COMMENT]
    return [
        ["FORWARD", "-i", bridge, "-o", bridge, *comment, "-j", "ACCEPT"],
        ["FORWARD", "!", "-i", bridge, "-o", bridge, *comment, "-j", "DROP"],
    ]


def rule_exists(rule: list[str]) -> bool:
    return _quiet(["iptables", "-C", *rule])


def insert_rule(rule: list[str], position: int = 1) -> None:
    chain, *spec = rule
    _run(["iptables", "-I", chain, str(position), *spec])


def remove_rule(rule: list[str]) -> None:
    while rule_exists(rule):  # inserted twice by two crashed ups: every copy goes
        _run(["iptables", "-D", *rule])


def remove_link(name: str) -> None:
    """Silent when it is gone, also when it went meanwhile: a namespace's deletion removes its
    veths asynchronously."""
    if link_exists(name):
        try:
            _run(["ip", "link", "del", name])
        except NetworkError:
            if link_exists(name):
                raise


def remove_netns(name: str) -> None:
    """Deleting a namespace also deletes the veth end inside it (and with it its peer)."""
    if netns_exists(name):
        _run(["ip", "netns", "del", name])


def addresses_in(netns: str) -> list[str]:
    """The IPv4 addresses inside ``netns`` (``status`` shows them)."""
    out = _run(["ip", "-n", netns, "-4", "-o", "addr", "show"])
    return [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]
