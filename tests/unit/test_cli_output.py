"""The CLI's pure formatters: task rows, node rows, change lines, label options."""

from __future__ import annotations

import pytest
import typer
from rich.text import Text

from tests.kit.builders import NOW, make_task_info
from theseus.api.schemas import GroupChange, GroupPlan, NodeInfo, NodeUsage, PortInfo
from theseus.cli.output import (
    change_line,
    format_age,
    format_bytes,
    format_cores,
    format_ports,
    format_state,
    node_row,
    parse_label_options,
    plan_lines,
    task_row,
)
from theseus.model.hostgates import HostVolume, NodeGates


def test_task_row_of_a_running_task() -> None:
    assert task_row(make_task_info(), NOW) == [
        "ingestor.0123456789ab",
        "ingestor",
        "monkey",
        "node-1",
        "api=127.0.0.2:31001 ssh=127.0.0.2:31000",
        "running",
        "2m",
    ]


def test_pending_task_shows_its_reason_and_no_node() -> None:
    task = make_task_info(
        state="pending", node=None, address=None, ports={}, pending_reason="no node has 0.1 cpus"
    )
    row = task_row(task, NOW)
    assert row[3] == "-"
    assert row[4] == "-"
    assert row[5] == "pending (no node has 0.1 cpus)"


def test_exited_task_shows_exit_code_attempt_and_backoff() -> None:
    task = make_task_info(
        state="exited", exit_code=3, attempt=2, not_before=NOW + 3.5, backoff_delay=4.0
    )
    assert format_state(task, NOW) == "exited (code 3), attempt 3, backoff 4s of 4s"


def test_task_asked_to_stop_but_still_running_is_stopping() -> None:
    assert format_state(make_task_info(desired="stop"), NOW) == "stopping"


def test_unallocated_port_shows_container_port() -> None:
    task = make_task_info(ports={"api": PortInfo(container_port=5000)})
    assert format_ports(task) == "api=-:5000"


@pytest.mark.parametrize(
    ("seconds", "text"), [(-1, "0s"), (59, "59s"), (60, "1m"), (7200, "2h"), (3 * 86400, "3d")]
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_node_row() -> None:
    node = NodeInfo(
        name="node-1",
        address="127.0.0.2",
        agent_port=5051,
        status="ready",
        eligibility="draining",
        driver="docker",
        cpus=4.0,
        mem=8192.0,
        used_cpus=0.3,
        used_mem=384.0,
        tasks=3,
        port_range=(31000, 32000),
        attributes={"zone": "a", "rack": "r[1]"},
        registered_at=NOW,
    )
    row = node_row(node)
    assert row[:-1] == [
        "node-1",
        "127.0.0.2",
        "ready",
        "draining",
        "docker",
        "0.3/4",
        "384/8192 MB",
        "-",  # no usage reported (yet)
        "-",
        "3",
        "-",
        "-",
    ]
    # Sorted by key, and escaped: rich would read "[1]" as markup.
    assert Text.from_markup(row[-1]).plain == "rack=r[1] zone=a"
    assert node_row(node.model_copy(update={"attributes": {}}))[-1] == "-"


def test_node_row_shows_what_its_tasks_use() -> None:
    usage = NodeUsage(time=NOW, cpu_cores=0.512, memory_bytes=96 * 1024 * 1024, tasks=2)
    node = NodeInfo(
        name="node-1",
        address="127.0.0.2",
        agent_port=5051,
        status="ready",
        driver="docker",
        cpus=4.0,
        mem=8192.0,
        used_cpus=1,
        used_mem=512,
        tasks=2,
        port_range=(31000, 32000),
        attributes={},
        registered_at=NOW,
        usage=usage,
    )
    assert node_row(node)[5:9] == ["1/4", "512/8192 MB", "0.51", "96.0 MiB"]
    assert format_bytes(512 * 1024) == "512 KiB"
    assert format_bytes(3 * 1024**3 // 2) == "1.50 GiB"
    assert format_bytes(None) == format_cores(None) == "-"


def test_node_row_shows_host_volumes_and_what_the_agent_allows() -> None:
    gates = NodeGates(
        host_volumes=[
            HostVolume(name="logs", path="/var/log/app", read_only=True),
            HostVolume(name="data", path="/srv/data"),
        ],
        allow_privileged=True,
        allow_host_namespaces=True,
        allow_caps=["NET_ADMIN"],
    )
    node = NodeInfo(
        name="node-1",
        address="127.0.0.2",
        agent_port=5051,
        status="ready",
        driver="docker",
        cpus=4.0,
        mem=8192.0,
        used_cpus=0,
        used_mem=0,
        tasks=0,
        port_range=(31000, 32000),
        attributes={},
        registered_at=NOW,
        gates=gates,
    )
    assert node_row(node)[-3:] == ["data logs:ro", "privileged host-ns +NET_ADMIN", "-"]


def test_change_line_names_the_group_and_instances() -> None:
    change = GroupChange(service="ingestor", labels=["dev"], action="created", instances=4)
    # Rendered, not raw markup: "[dev]" must survive rich's markup parser.
    assert Text.from_markup(change_line(change)).plain == "created   ingestor [dev] (4 instances)"
    removed = GroupChange(service="ingestor", labels=[], action="removed", instances=0)
    assert Text.from_markup(change_line(removed)).plain == "removed   ingestor [-]"


def test_plan_lines_say_how_long_a_cut_off_node_keeps_the_tasks() -> None:
    def shown(fence: float | str | None) -> list[str]:
        plan = GroupPlan.model_validate({"placed": {"node-1": 2}, "stop_after_server_loss": fence})
        change = GroupChange(service="web", labels=[], action="created", instances=2, plan=plan)
        return [Text.from_markup(line).plain for line in plan_lines(change)]

    assert shown(30.0) == [
        "    + 2 new: node-1 ×2",
        "    · on a node that reaches no server: stopped after 30 s "
        "(stop_after_server_loss_seconds)",
    ]
    assert shown("never")[-1] == (
        "    · on a node that reaches no server: never stopped "
        "(stop_after_server_loss_seconds: never)"
    )
    assert shown(None) == ["    + 2 new: node-1 ×2"]  # a removal


def test_label_options_are_taken_whole_deduplicated_and_sorted() -> None:
    assert parse_label_options(None) is None
    assert parse_label_options([]) is None
    assert parse_label_options(["b, c", "a b", "b, c"]) == ["a b", "b, c"]


def test_empty_label_option_names_the_unlabelled_group() -> None:
    assert parse_label_options([""]) == []


def test_unprintable_label_is_rejected() -> None:
    with pytest.raises(typer.BadParameter):
        parse_label_options(["a\nb"])


@pytest.mark.parametrize(
    ("health", "message", "shown"),
    [
        (None, None, "running"),  # no checks
        ("healthy", None, "running (healthy)"),
        ("unknown", None, "running (health unknown)"),
        ("unknown", "HTTP 503 from /", "running (health unknown: HTTP 503 from /)"),
        ("unhealthy", "HTTP 404 from /health", "running (unhealthy: HTTP 404 from /health)"),
    ],
)
def test_running_tasks_show_their_health(health: str, message: str, shown: str) -> None:
    task = make_task_info(health=health, health_message=message)
    assert format_state(task, NOW) == shown
    stopping = make_task_info(desired="stop", health=health, health_message=message)
    assert format_state(stopping, NOW) == "stopping"
