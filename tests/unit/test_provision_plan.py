"""The plan of ``theseus cluster bootstrap`` (pure): facts of a host in, steps out."""

from __future__ import annotations

import hashlib
from pathlib import Path

from theseus.provision.facts import HostFacts, PortState, ServiceState
from theseus.provision.hosts import HostsFile, parse
from theseus.provision.plan import (
    PHASES,
    Desired,
    DesiredFile,
    Step,
    desired_hash,
    files_digest,
    plan_host,
    with_files,
)
from theseus.provision.services import (
    agent_service,
    etcd_service,
    layout_of,
    server_service,
    services_of,
    unit_text,
)

HOSTS_TEXT = """
cluster: prod
hosts:
  - {name: s1, advertise: 198.18.0.11, role: both, attributes: {zone: a}}
  - {name: a1, advertise: 198.18.0.12, role: agent, install: {prefix: /srv/a1}}
"""
HOSTS = parse(HOSTS_TEXT, Path("/cfg/hosts.yaml"))
S1, A1 = HOSTS.hosts
FILES = (DesiredFile("pki/ca.pem", b"CA"), DesiredFile("agent.env", b"DOCKER_HOST=x\n", 0o600))


def desired(**changes: object) -> Desired:
    base = Desired(
        files=FILES,
        build="b1",
        wheelhouse=Path("/wh/b1"),
        project_wheel="theseus_orchestrator-0.1.0-py3-none-any.whl",
        pip_wheel="pip-25.3-py3-none-any.whl",
        python=(3, 11),
        admin_token_known=True,
        first_server="s1",
    )
    return Desired(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def fresh(**changes: object) -> HostFacts:
    """A host nothing was done to: Python, apt, an engine, free ports."""
    facts = HostFacts(
        python=[3, 11, 2],
        time=0.0,
        systemd=False,
        apt=True,
        packages={"docker.io": True, "python3-venv": False, "etcd-server": False},
        own_address=True,
        ports={},
        docker="20.10.24",
    )
    return facts.model_copy(update=changes)


def settled(hosts: HostsFile, host_index: int, systemd: bool = False) -> HostFacts:
    """A host where a previous bootstrap did everything."""
    host = hosts.hosts[host_index]
    layout = layout_of(hosts, host)
    wanted = desired()
    pki = files_digest(wanted, "pki/")
    services: dict[str, ServiceState] = {}
    for service in services_of(hosts, host):
        facts = fresh(systemd=systemd)
        started = desired_hash(service, layout, facts)
        if service.name == "etcd":
            started = with_files(started, pki)
        elif service.name == "server":
            started = with_files(started, f"{pki}:{wanted.build}")
        else:
            started = with_files(started, wanted.build)
        unit = hashlib.sha256(unit_text(service, layout).encode()).hexdigest()
        services[service.name] = ServiceState(
            running=True, pid=10, installed=True, started=started, unit_sha256=unit
        )
    return fresh(
        systemd=systemd,
        packages={"docker.io": True, "python3-venv": True, "etcd-server": True},
        build="b1",
        venv=True,
        files={f.path: f.sha256 for f in FILES},
        services=services,
        agent_joined=True,
    )


def by_phase(steps: list[Step]) -> dict[str, Step]:
    return {s.phase: s for s in steps}


def shown(step: Step) -> str:
    return "\n".join(c.show() for c in step.commands)


def test_a_fresh_host_goes_through_every_phase_in_order() -> None:
    steps = plan_host(HOSTS, S1, fresh(), desired())
    assert [s.phase for s in steps] == list(PHASES)
    assert all(s.error is None for s in steps)
    phases = by_phase(steps)
    assert not phases["preflight"].needed and not phases["docker"].needed
    for phase in ("packages", "theseus", "config", "etcd", "servers", "agents"):
        assert phases[phase].needed, phase


def test_an_agent_host_has_no_etcd_or_server_step() -> None:
    steps = plan_host(HOSTS, A1, fresh(), desired())
    assert [s.phase for s in steps] == [p for p in PHASES if p not in ("etcd", "servers")]


def test_a_settled_host_needs_nothing() -> None:
    for index, systemd in ((0, False), (1, False), (0, True)):
        steps = plan_host(HOSTS, HOSTS.hosts[index], settled(HOSTS, index, systemd), desired())
        assert [s.phase for s in steps if s.needed] == [], (index, systemd)


def test_packages_installs_only_the_missing_and_records_them() -> None:
    step = by_phase(plan_host(HOSTS, S1, fresh(), desired()))["packages"]
    text = shown(step)
    assert "apt-get install -y -q --no-install-recommends python3-venv etcd-server" in text
    assert "docker.io" not in text.split("install")[1]
    assert "installed-packages" in text
    no_apt = by_phase(plan_host(HOSTS, S1, fresh(apt=False), desired()))["packages"]
    assert no_apt.error is not None and "no apt-get" in no_apt.error


def test_preflight_refuses_what_it_cannot_fix() -> None:
    def error(**facts: object) -> str:
        step = by_phase(plan_host(HOSTS, S1, fresh(**facts), desired()))["preflight"]
        assert step.error is not None
        return step.error

    assert "3.11 or later" in error(python=[3, 9, 2])
    assert "the workstation's 3.11" in error(python=[3, 12, 1])
    assert "198.18.0.11 is not one of s1's own addresses" in error(own_address=False)
    busy = {"5000": PortState(busy=True, ours=False, holder="nginx")}
    assert "port 5000 on 198.18.0.11 is taken by nginx" in error(ports=busy)
    assert "clock is +1.50 s off" in error(skew=1.5)
    # A port held by our own service is fine (a re-run).
    ours = {"5000": PortState(busy=True, ours=True, holder="theseus")}
    step = by_phase(plan_host(HOSTS, S1, fresh(ports=ours), desired()))["preflight"]
    assert step.error is None


def test_a_prefix_too_long_for_the_agents_socket_is_refused() -> None:
    long = parse(
        "cluster: c\nhosts: [{name: s, advertise: 10.9.0.1, role: both, install: {prefix: /"
        + "x" * 80
        + "}}]",
        Path("/h.yaml"),
    )
    step = plan_host(long, long.hosts[0], fresh(), desired())[0]
    assert step.error is not None and "too long" in step.error


def test_theseus_is_installed_from_the_wheelhouse_only_when_the_build_differs() -> None:
    step = by_phase(plan_host(HOSTS, A1, fresh(build="b0"), desired()))["theseus"]
    kinds = [c.kind for c in step.commands]
    assert "put_dir" in kinds
    text = shown(step)
    assert "python3 -m venv --without-pip /srv/a1/opt/theseus/venv" in text
    # pip from its wheel in the wheelhouse, run by the venv's Python: it installs there.
    pip = (
        "/srv/a1/opt/theseus/venv/bin/python "
        "/srv/a1/opt/theseus/wheels/pip-25.3-py3-none-any.whl/pip install -q --no-compile"
    )
    assert pip in text
    assert "--no-index --find-links /srv/a1/opt/theseus/wheels" in text
    assert "printf '%s\\n' b1 > /srv/a1/opt/theseus/build" in text
    assert "--force-reinstall" not in text  # a new venv: one install is enough
    upgrade = by_phase(plan_host(HOSTS, A1, fresh(build="b0", venv=True), desired()))["theseus"]
    assert "--no-deps --force-reinstall" in shown(upgrade) and "-m venv" not in shown(upgrade)
    same = by_phase(plan_host(HOSTS, A1, fresh(build="b1", venv=True), desired()))["theseus"]
    assert not same.needed


def test_config_writes_only_the_files_that_differ() -> None:
    facts = fresh(files={"pki/ca.pem": FILES[0].sha256, "agent.env": "old"})
    step = by_phase(plan_host(HOSTS, S1, facts, desired()))["config"]
    puts = [c for c in step.commands if c.kind == "put"]
    assert [(c.target, c.mode) for c in puts] == [("/etc/theseus/agent.env", 0o600)]


def test_an_agent_not_joined_gets_a_token_in_its_env_file_then_not() -> None:
    step = by_phase(plan_host(HOSTS, A1, fresh(), desired()))["agents"]
    kinds = [(c.kind, c.target) for c in step.commands]
    assert kinds[0] == ("local", "join_token")
    with_token = step.commands[1]
    assert with_token.secrets == ("THESEUS_JOIN_TOKEN",)
    assert "THESEUS_JOIN_TOKEN=<redacted>" in with_token.show()
    assert b"THESEUS_JOIN_TOKEN" not in with_token.content  # added by the runner only
    wait = kinds.index(("local", "wait_node"))
    after = [c for c in step.commands[wait:] if c.kind == "put"]
    assert after and not after[0].secrets  # rewritten without the token once joined
    # Joined already, only restarted: no token.
    joined = fresh(agent_joined=True)
    step = by_phase(plan_host(HOSTS, A1, joined, desired()))["agents"]
    assert all(c.target != "join_token" for c in step.commands)


def test_a_service_with_another_configuration_is_restarted() -> None:
    facts = settled(HOSTS, 0)
    facts.services["server"] = facts.services["server"].model_copy(update={"started": "old"})
    steps = by_phase(plan_host(HOSTS, S1, facts, desired()))
    assert not steps["etcd"].needed and not steps["agents"].needed
    text = shown(steps["servers"])
    assert "kill -TERM" in text and "setsid -f" in text and "wait server" in text
    # A changed certificate restarts etcd and the server, not the agent.
    other = desired(files=(DesiredFile("pki/ca.pem", b"CA2"), FILES[1]))
    steps = by_phase(plan_host(HOSTS, S1, settled(HOSTS, 0), other))
    assert steps["etcd"].needed and steps["servers"].needed and not steps["agents"].needed
    # A new build of Theseus restarts the server and the agent, not etcd.
    steps = by_phase(plan_host(HOSTS, S1, settled(HOSTS, 0), desired(build="b2")))
    assert steps["servers"].needed and steps["agents"].needed and not steps["etcd"].needed


def test_the_admin_token_is_bootstrapped_once_on_the_first_server() -> None:
    facts = settled(HOSTS, 0)
    step = by_phase(plan_host(HOSTS, S1, facts, desired(admin_token_known=False)))["servers"]
    assert [c.target for c in step.commands] == ["wait_server", "bootstrap_admin"]
    assert not by_phase(plan_host(HOSTS, S1, facts, desired()))["servers"].needed


def test_docker_not_answering() -> None:
    step = by_phase(plan_host(HOSTS, S1, fresh(docker=None, systemd=True), desired()))["docker"]
    assert "systemctl enable --now docker" in shown(step)
    step = by_phase(plan_host(HOSTS, A1, fresh(docker=None), desired()))["docker"]
    assert "systemctl" not in shown(step) and "does not answer" in shown(step)


def test_systemd_units_are_modelled_on_nomads() -> None:
    layout = layout_of(HOSTS, S1)
    etcd = unit_text(etcd_service(HOSTS, S1), layout)
    agent = unit_text(agent_service(HOSTS, S1), layout)
    server = unit_text(server_service(HOSTS, S1), layout)
    for unit in (etcd, agent, server):
        assert "Restart=on-failure" in unit and "RestartSec=2" in unit
        assert "LimitNOFILE=65536" in unit
        assert "EnvironmentFile=-/etc/theseus/" in unit
    assert "OOMScoreAdjust=-1000" in etcd and "OOMScoreAdjust=-1000" in server
    assert "OOMScoreAdjust" not in agent
    assert "KillMode=process" in agent and "KillMode" not in server
    step = by_phase(plan_host(HOSTS, S1, fresh(systemd=True), desired()))["services"]
    targets = [c.target for c in step.commands]
    assert "/etc/systemd/system/theseus-prod-agent.service" in targets
    assert "systemctl daemon-reload" in targets


def test_services_run_what_the_launcher_runs() -> None:
    etcd = " ".join(etcd_service(HOSTS, S1).argv)
    assert "--initial-cluster s1=https://198.18.0.11:2380" in etcd
    assert "--client-cert-auth" in etcd and "--data-dir /var/lib/theseus/etcd" in etcd
    server = " ".join(server_service(HOSTS, S1).argv)
    assert server.startswith("/opt/theseus/venv/bin/python -m theseus server --host 198.18.0.11")
    assert "--pki-dir /etc/theseus/pki" in server and "--etcd https://198.18.0.11:2379" in server
    agent = agent_service(HOSTS, A1)
    text = " ".join(agent.argv)
    assert "--join https://198.18.0.11:5000" in text and "--name a1" in text
    assert "--state-dir /srv/a1/var/lib/theseus/agent" in text
    assert agent.only_main_process
    assert "--attr zone=a" in " ".join(agent_service(HOSTS, S1).argv)


def _with(options: str) -> HostsFile:
    """``HOSTS`` with more top-level keys (``agent:``, ``server:``)."""
    return parse(HOSTS_TEXT + options, Path("/cfg/hosts.yaml"))


def test_a_changed_agent_option_restarts_that_agent_only() -> None:
    for systemd in (False, True):
        before = _with("agent: {pull_timeout: 60}\n")
        facts = [settled(before, index, systemd) for index in (0, 1)]
        # The same options again: nothing to do.
        for index, host in enumerate(before.hosts):
            assert not any(s.needed for s in plan_host(before, host, facts[index], desired()))
        after = _with("agent: {pull_timeout: 60, pod_infra_image: r.example:5000/busybox:1}\n")
        for index, host in enumerate(after.hosts):
            steps = by_phase(plan_host(after, host, facts[index], desired()))
            assert steps["agents"].needed, (systemd, host.name)
            assert "running with another configuration" in steps["agents"].check
            assert "join_token" not in shown(steps["agents"])  # joined: a restart, no new join
            if host.is_server:
                assert not steps["etcd"].needed and not steps["servers"].needed
            # The new command line: the supervisor's, or the agent's unit (and only that unit).
            units = [c for c in steps["services"].commands if c.kind == "put"]
            if systemd:
                assert [c.target.rsplit("/", 1)[1] for c in units] == ["theseus-prod-agent.service"]
                started = units[0].content.decode()
            else:
                assert units == []
                started = shown(steps["agents"])
            assert "--pod-infra-image r.example:5000/busybox:1" in started
        # A host's own option restarts that host's agent, not the others'.
        own = parse(
            HOSTS_TEXT.replace("prefix: /srv/a1}", "prefix: /srv/a1}, agent: {cpus: 3}")
            + "agent: {pull_timeout: 60}\n",
            Path("/cfg/hosts.yaml"),
        )
        s1, a1 = own.hosts
        assert not any(s.needed for s in plan_host(own, s1, facts[0], desired()))
        assert by_phase(plan_host(own, a1, facts[1], desired()))["agents"].needed
        assert "--cpus 3" in " ".join(agent_service(own, a1).argv)


def test_a_changed_server_option_restarts_the_server_only() -> None:
    facts = settled(HOSTS, 0)
    steps = by_phase(plan_host(_with("server: {liveness_timeout: 6}\n"), S1, facts, desired()))
    assert steps["servers"].needed and "--liveness-timeout 6" in shown(steps["servers"])
    assert not steps["etcd"].needed and not steps["agents"].needed
    assert not any(s.needed for s in plan_host(_with("server: {}\n"), S1, facts, desired()))
