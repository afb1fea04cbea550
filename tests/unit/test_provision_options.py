"""The hosts file's ``agent:`` and ``server:`` blocks: defaults, a host's own over the file's,
refusals naming the field, and the ``theseus agent`` / ``theseus server`` command lines the
bootstrap starts from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from theseus.provision.hosts import HostsFile, HostsFileError, parse
from theseus.provision.options import AgentOptions
from theseus.provision.services import agent_service, server_service

FILE = Path("/cfg/hosts.yaml")

HOSTS = """
cluster: prod
hosts:
  - {name: s1, advertise: 198.18.0.11, role: both}
  - {name: a1, advertise: 198.18.0.12, role: agent}
  - {name: a2, advertise: 198.18.0.13, role: agent}
"""

OPTIONS = """
cluster: prod
agent:
  pod_infra_image: registry.example:5000/theseus/busybox:latest
  pull_timeout: 120
  registry_login_cache: 0
  allow_caps: [net_admin]
server: {liveness_timeout: 5, agent_cert_days: 30}
hosts:
  - {name: s1, advertise: 198.18.0.11, role: both}
  - name: a1
    advertise: 198.18.0.12
    role: agent
    agent:
      pull_unqualified: true
      pull_timeout: 30.5
      allow_privileged: true
      allow_host_namespaces: true
      allow_caps: [CAP_SYS_PTRACE, NET_ADMIN]
      cpus: 2
      mem: 1536
  - {name: a2, advertise: 198.18.0.13, role: agent, agent: {allow_caps: []}}
"""


def _errors(text: str) -> str:
    with pytest.raises(HostsFileError) as caught:
        parse(text, FILE)
    return str(caught.value)


def _argv(hosts: HostsFile, name: str) -> str:
    return " ".join(agent_service(hosts, hosts.host(name)).argv)


def test_without_the_blocks_every_option_is_the_processes_own_default() -> None:
    hosts = parse(HOSTS, FILE)
    assert all(h.agent == AgentOptions() for h in hosts.hosts)
    assert hosts.server.liveness_timeout is None and hosts.server.agent_cert_days is None
    agent = _argv(hosts, "a1")
    for flag in ("--pod-infra-image", "--pull", "--registry-login-cache", "--allow", "--cpus"):
        assert flag not in agent, flag
    assert " --mem " not in agent
    server = " ".join(server_service(hosts, hosts.host("s1")).argv)
    assert "--liveness-timeout" not in server and "--agent-cert-days" not in server


def test_a_hosts_agent_block_overrides_the_files_key_by_key() -> None:
    hosts = parse(OPTIONS, FILE)
    s1, a1, a2 = (hosts.host(n) for n in ("s1", "a1", "a2"))
    assert s1.agent == AgentOptions(
        pod_infra_image="registry.example:5000/theseus/busybox:latest",
        pull_timeout=120,
        registry_login_cache=0,
        allow_caps=["NET_ADMIN"],  # normalised as theseus agent --allow-cap does
    )
    # a1's own keys win; the image and the login cache are still the file's.
    assert a1.agent.pod_infra_image == "registry.example:5000/theseus/busybox:latest"
    assert a1.agent.registry_login_cache == 0
    assert (a1.agent.pull_timeout, a1.agent.pull_unqualified) == (30.5, True)
    assert a1.agent.allow_caps == ["NET_ADMIN", "SYS_PTRACE"]
    assert (a1.agent.cpus, a1.agent.mem) == (2, 1536)
    # A host's list replaces the file's: a2 allows no capability beyond the Baseline.
    assert a2.agent.allow_caps == [] and a2.agent.pull_timeout == 120


def test_the_agents_command_lines_carry_their_options() -> None:
    hosts = parse(OPTIONS, FILE)
    s1 = _argv(hosts, "s1")
    assert "--pod-infra-image registry.example:5000/theseus/busybox:latest" in s1
    assert "--pull-timeout 120 " in s1 and "--registry-login-cache 0 " in s1
    assert "--allow-cap NET_ADMIN " in s1
    for flag in ("--pull-unqualified", "--allow-privileged", "--allow-host-namespaces"):
        assert flag not in s1, flag
    a1 = _argv(hosts, "a1")
    for part in (
        "--cpus 2 ",
        "--mem 1536 ",
        "--allow-privileged ",
        "--allow-host-namespaces ",
        "--allow-cap NET_ADMIN --allow-cap SYS_PTRACE ",
        "--pull-timeout 30.5 ",
        "--pull-unqualified ",
    ):
        assert part in a1, part
    assert a1.endswith("--state-dir /var/lib/theseus/agent")
    assert "--allow-cap" not in _argv(hosts, "a2")


def test_the_servers_command_line_carries_its_options() -> None:
    hosts = parse(OPTIONS, FILE)
    server = " ".join(server_service(hosts, hosts.host("s1")).argv)
    assert "--liveness-timeout 5 " in server and server.endswith("--agent-cert-days 30")


def test_bad_options_are_refused_naming_the_field() -> None:
    bad_host = OPTIONS.replace("pull_timeout: 30.5", "pull_timeout: 0")
    assert "hosts[1].agent.pull_timeout: input should be greater than or equal to 1" in (
        _errors(bad_host)
    )
    errors = _errors(OPTIONS.replace("[net_admin]", "[net_admin, all, FLY]"))
    assert "agent.allow_caps: 'ALL' is not accepted" in errors
    assert "'FLY' is not a Linux capability" in errors
    assert "allowed by allow_privileged: true" in errors  # the file's words, not the flag's
    assert "agent.allow_caps: input should be a valid list" in _errors(
        OPTIONS.replace("[net_admin]", "net_admin")
    )
    assert "hosts[2].agent.allow_caps:" in _errors(
        OPTIONS.replace("{allow_caps: []}", "{allow_caps: [x]}")
    )
    assert "agent.colour: extra inputs are not permitted" in _errors(
        OPTIONS.replace("pull_timeout: 120", "colour: blue")
    )
    assert "agent.mem: input should be greater than 0" in _errors(
        OPTIONS.replace("mem: 1536", "mem: 0")
    )
    assert "hosts[1].agent.cpus:" in _errors(OPTIONS.replace("cpus: 2", "cpus: many"))
    assert "agent.pod_infra_image: an image name" in _errors(
        OPTIONS.replace("registry.example:5000/theseus/busybox:latest", "'busy box'")
    )
    assert "server.liveness_timeout: input should be greater than or equal to 2" in _errors(
        OPTIONS.replace("liveness_timeout: 5", "liveness_timeout: 1")
    )
    assert "server.agent_cert_days:" in _errors(
        OPTIONS.replace("agent_cert_days: 30", "agent_cert_days: 0")
    )
    # server: is the file's only: every server runs with the same.
    per_host = OPTIONS.replace("role: both}", "role: both, server: {liveness_timeout: 9}}")
    assert "hosts[0].server: extra inputs are not permitted" in _errors(per_host)


def test_a_server_only_host_has_no_agent_to_give_options_to() -> None:
    text = HOSTS.replace("role: both}", "role: server, agent: {cpus: 2}}")
    assert "hosts[0].agent: role server runs no agent" in _errors(text)
    # The file's defaults are for the agents there are: a server-only host ignores them.
    hosts = parse(HOSTS.replace("role: both", "role: server") + "agent: {cpus: 2}\n", FILE)
    assert [h.agent.cpus for h in hosts.agents] == [2, 2]


def test_the_example_of_docs_machines_md_is_a_valid_hosts_file() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "machines.md"
    example = docs.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    hosts = parse(example, FILE)
    assert hosts.server.liveness_timeout == 3
    assert hosts.host("s1").agent.allow_privileged and hosts.host("s1").agent.cpus == 2
    assert hosts.host("s1").agent.allow_caps == ["NET_ADMIN"]
