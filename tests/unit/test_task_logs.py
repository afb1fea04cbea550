"""The bound of a task's logs: the size notation, a group's ``logs:`` (a bad one named in the
error), the agent's default under it, and what reaches Docker (each pod member too), the
agent's command line and the hosts file's ``agent:`` block."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from tests.kit.builders import make_assignment
from theseus.agent.drivers.base import Owner
from theseus.agent.drivers.docker_config import container_config
from theseus.agent.drivers.docker_pods import INFRA_LOGS, infra_config, member_config
from theseus.agent.launch import launch_of
from theseus.api.schemas import GroupChange, GroupPlan
from theseus.cli.agent_cmd import parse_log_limits
from theseus.cli.output import plan_lines
from theseus.cluster.argv import AgentProcess
from theseus.model.logs import LogLimits, LogOptions, describe_options, format_size, parse_size
from theseus.model.spec import SpecError, parse_deploy_document
from theseus.provision.hosts import HostsFileError, parse

OWNER = Owner("n1", "127.0.0.2", "cluster-1")
KIB, MIB, GIB = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10m", 10 * MIB),
        ("10M", 10 * MIB),
        ("10mb", 10 * MIB),
        ("10MiB", 10 * MIB),
        ("512k", 512 * KIB),
        ("1g", GIB),
        ("1.5m", int(1.5 * MIB)),
        ("2048", 2048),
        (4096, 4096),
        (" 16k ", 16 * KIB),
    ],
)
def test_sizes_are_read_in_binary_units_as_dockers(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "m", "10q", "ten", "-1m", "10 m b", "1e6"])
def test_what_is_no_size_says_what_one_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match="a size such as 10m"):
        parse_size(text)


@pytest.mark.parametrize("text", ["512", "1023", "101g", 0])
def test_a_size_out_of_bounds_says_the_bounds(text: str | int) -> None:
    with pytest.raises(ValueError, match="between 1k and 100g"):
        parse_size(text)


def test_sizes_are_written_back_in_their_largest_whole_unit() -> None:
    assert [format_size(n) for n in (10 * MIB, 512 * KIB, 2 * GIB, 1500)] == [
        "10m",
        "512k",
        "2g",
        "1500",
    ]


def _group(logs: object) -> object:
    return parse_deploy_document({"deploy": {"web": {"image": "img", "logs": logs}}}).deploy["web"]


def _errors(logs: object) -> list[dict[str, str]]:
    with pytest.raises(SpecError) as caught:
        _group(logs)
    return caught.value.errors


@pytest.mark.parametrize(
    ("logs", "path", "words"),
    [
        ({"max_size": "10q"}, "deploy.web.logs.max_size", "a size such as 10m"),
        ({"max_size": 100}, "deploy.web.logs.max_size", "between 1k and 100g"),
        ({"max_size": True}, "deploy.web.logs.max_size", "a size such as 10m"),
        ({"max_files": 0}, "deploy.web.logs.max_files", "greater than or equal to 1"),
        ({"max_files": 101}, "deploy.web.logs.max_files", "less than or equal to 100"),
        ({"max_files": "3"}, "deploy.web.logs.max_files", "valid integer"),
        ({"max_sise": "5m"}, "deploy.web.logs.max_sise", "unknown key"),
        ("5m", "deploy.web.logs", "valid dictionary"),
    ],
)
def test_a_bad_logs_key_is_named(logs: object, path: str, words: str) -> None:
    errors = _errors(logs)
    assert [e["path"] for e in errors] == [path]
    assert words in errors[0]["message"]


def test_a_pod_member_has_no_logs_of_its_own() -> None:
    document = {"deploy": {"web": {"containers": [{"name": "a", "image": "i", "logs": {}}]}}}
    with pytest.raises(SpecError) as caught:
        parse_deploy_document(document)
    assert caught.value.errors[0]["path"] == "deploy.web.containers.0.logs"


def test_a_groups_logs_change_its_version_and_no_logs_leaves_it_as_it_was() -> None:
    plain = parse_deploy_document({"deploy": {"web": {"image": "img"}}}).deploy["web"]
    assert _group(None).version() == plain.version()  # type: ignore[attr-defined]
    bounded = _group({"max_size": "5m", "max_files": 2})
    assert bounded.version() != plain.version()  # type: ignore[attr-defined]
    assert bounded.logs == LogOptions(max_size="5m", max_files=2)  # type: ignore[attr-defined]


def test_the_spec_wins_over_the_agent_key_by_key() -> None:
    agent = LogLimits.of("10m", 3)
    assert agent.over(None) == agent
    assert agent.over(LogOptions(max_size="5m")) == LogLimits(5 * MIB, 3)
    assert agent.over(LogOptions(max_files=2)) == LogLimits(10 * MIB, 2)
    assert agent.over(LogOptions(max_size="64k", max_files=1)) == LogLimits(64 * KIB, 1)
    assert LogLimits() == agent  # the agent's default: 10m × 3


def test_docker_gets_bounded_json_file_options() -> None:
    launch = launch_of(make_assignment("t1", logs={"max_size": "5m"}), OWNER)
    config = container_config(launch, "127.0.0.2", None, LogLimits.of("1m", 4))
    assert config["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": str(5 * MIB), "max-file": "4"},
    }
    # Without a bound anywhere: the agent's default, never the Engine's unbounded one.
    plain = container_config(launch_of(make_assignment("t2"), OWNER), "127.0.0.2")
    assert plain["HostConfig"]["LogConfig"]["Config"] == {
        "max-size": str(10 * MIB),
        "max-file": "3",
    }


def test_each_pod_member_is_bounded_and_so_is_the_network_container() -> None:
    assignment = make_assignment(
        "t1",
        image=None,
        containers=[{"name": "a", "image": "i"}, {"name": "b", "image": "j"}],
        logs={"max_files": 2},
    )
    pod = launch_of(assignment, OWNER)
    limits = LogLimits.of("1m", 5).over(pod.logs)
    for member in pod.members:
        config = member_config(pod, member, "infra-id", (), limits)["HostConfig"]["LogConfig"]
        assert config["Config"] == {"max-size": str(MIB), "max-file": "2"}
    infra = infra_config(pod, "127.0.0.2")["HostConfig"]["LogConfig"]
    assert infra == INFRA_LOGS.docker_log_config()


def test_the_agents_flags() -> None:
    assert parse_log_limits("5m", 2) == LogLimits(5 * MIB, 2)
    with pytest.raises(typer.BadParameter, match="a size such as 10m"):
        parse_log_limits("lots", 2)
    process = AgentProcess(("http://s",), "n1", "127.0.0.2", 1, Path("state"))
    assert "--log-max-size" not in process.argv()
    bounded = AgentProcess(
        ("http://s",), "n1", "127.0.0.2", 1, Path("state"), log_max_size="1m", log_max_files=2
    )
    assert " --log-max-size 1m --log-max-files 2 " in " ".join(bounded.argv())


HOSTS = """
cluster: prod
agent: {log_max_size: 20m, log_max_files: 5}
hosts:
  - {name: s1, advertise: 198.18.0.11, role: both}
  - {name: a1, advertise: 198.18.0.12, role: agent, agent: {log_max_files: 2}}
"""


def test_the_hosts_files_agent_block_sets_the_agents_default() -> None:
    from theseus.provision.services import agent_service

    hosts = parse(HOSTS, Path("/cfg/hosts.yaml"))
    a1 = " ".join(agent_service(hosts, hosts.host("a1")).argv)
    assert "--log-max-size 20m --log-max-files 2 " in a1
    with pytest.raises(HostsFileError, match=r"agent\.log_max_size: .*a size such as 10m"):
        parse(HOSTS.replace("20m", "big"), Path("/cfg/hosts.yaml"))
    with pytest.raises(HostsFileError, match=r"agent\.log_max_files"):
        parse(HOSTS.replace("log_max_files: 5", "log_max_files: 0"), Path("/cfg/hosts.yaml"))


def test_theseus_plan_says_what_is_kept() -> None:
    assert describe_options(None).startswith("each agent's default")
    assert describe_options(LogOptions(max_size="5m", max_files=2)) == "5m × 2 files per container"
    assert describe_options(LogOptions(max_size="5m")) == (
        "5m × each agent's default files per container"
    )
    change = GroupChange(
        service="web", labels=[], action="created", plan=GroupPlan(logs="5m × 2 files")
    )
    assert any("logs kept: 5m × 2 files (logs)" in line for line in plan_lines(change))
