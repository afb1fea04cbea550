"""The containers' environment (pure): original, Marathon and Theseus variables."""

from __future__ import annotations

import json
from typing import Any

from theseus.agent.environment import port_variable, task_environment
from theseus.api.schemas import Assignment
from theseus.model.spec import GroupSpec


def assignment(**spec: Any) -> Assignment:
    fields: dict[str, Any] = {"image": "theseus/busybox:latest", "labels": ["dev", "a"]}
    fields.update(spec)
    group_spec = GroupSpec.model_validate(fields)
    ports = {name: 31000 + i for i, name in enumerate(group_spec.ports)}
    return Assignment(
        task_id="web.abc123",
        service="web",
        labels=group_spec.labels,
        group='web/["a","dev"]',
        version=group_spec.version(),
        desired="run",
        spec=group_spec,
        host_ports=ports,
    )


def test_original_marathon_and_theseus_variables() -> None:
    env = task_environment(
        assignment(ports={"ssh": 22, "api": 5000}), node="node-1", address="127.0.0.2"
    )
    assert env == {
        "SERVICE_NAME": "web",
        "CONTAINER_NAME": "web.abc123",
        "CONTAINER_HOST_ADDRESS": "127.0.0.2",
        "LABELS": '["a", "dev"]',
        "HOST": "127.0.0.2",
        "PORT0": "31000",
        "PORT_SSH": "31000",
        "PORT1": "31001",
        "PORT_API": "31001",
        "PORTS": "31000,31001",
        "THESEUS_TASK_ID": "web.abc123",
        "THESEUS_NODE": "node-1",
        "THESEUS_SERVICE": "web",
        "THESEUS_GROUP": 'web/["a","dev"]',
    }
    assert json.loads(env["LABELS"]) == ["a", "dev"]


def test_ports_follow_the_spec_order_not_the_alphabet() -> None:
    env = task_environment(assignment(ports={"zeta": 1, "alpha": 2}), "n", "127.0.0.1")
    assert (env["PORT0"], env["PORT1"]) == (env["PORT_ZETA"], env["PORT_ALPHA"])


def test_no_ports_gives_an_empty_ports_list() -> None:
    env = task_environment(assignment(), "n", "127.0.0.1")
    assert env["PORTS"] == ""
    assert "PORT0" not in env


def test_user_values_win() -> None:
    env = task_environment(
        assignment(ports={"api": 5000}, environment={"HOST": "mine", "APP_NAME": "Ingestor"}),
        "n",
        "127.0.0.1",
    )
    assert env["HOST"] == "mine"
    assert env["APP_NAME"] == "Ingestor"
    assert env["CONTAINER_HOST_ADDRESS"] == "127.0.0.1"


def test_port_variable_names() -> None:
    assert port_variable("api") == "PORT_API"
    assert port_variable("ssh-alt") == "PORT_SSH_ALT"
    assert port_variable("a_b-c") == "PORT_A_B_C"
