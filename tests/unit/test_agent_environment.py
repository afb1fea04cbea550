"""The containers' environment (pure): original, Marathon, maestro and Theseus variables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from theseus.agent.environment import (
    image_name_and_tag,
    maestro_name,
    port_variable,
    task_environment,
)
from theseus.api.schemas import Assignment
from theseus.model.spec import GroupSpec

DOCKER = "unix:///run/theseus/agent.sock"


def assignment(task_id: str = "web.abc123", service: str = "web", **spec: Any) -> Assignment:
    fields: dict[str, Any] = {"image": "theseus/busybox:latest", "labels": ["dev", "a"]}
    fields.update(spec)
    group_spec = GroupSpec.model_validate(fields)
    ports = {name: 31000 + i for i, name in enumerate(group_spec.ports)}
    return Assignment(
        task_id=task_id,
        service=service,
        labels=group_spec.labels,
        group='web/["a","dev"]',
        version=group_spec.version(),
        desired="run",
        spec=group_spec,
        host_ports=ports,
    )


def test_original_marathon_maestro_and_theseus_variables() -> None:
    env = task_environment(
        assignment(ports={"ssh": 22, "api": 5000}),
        node="node-1",
        address="127.0.0.2",
        discovery=DOCKER,
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
        "THESEUS_DISCOVERY": "unix:///run/theseus/agent.sock",
        "MAESTRO_ENVIRONMENT_NAME": "default",
        "DOCKER_IMAGE": "theseus/busybox",
        "DOCKER_TAG": "latest",
        "WEB_WEB_ABC123_HOST": "127.0.0.2",
        "WEB_WEB_ABC123_SSH_PORT": "31000",
        "WEB_WEB_ABC123_SSH_INTERNAL_PORT": "22",
        "WEB_WEB_ABC123_API_PORT": "31001",
        "WEB_WEB_ABC123_API_INTERNAL_PORT": "5000",
    }
    assert json.loads(env["LABELS"]) == ["a", "dev"]


def test_ports_follow_the_spec_order_not_the_alphabet() -> None:
    env = task_environment(assignment(ports={"zeta": 1, "alpha": 2}), "n", "127.0.0.1", DOCKER)
    assert (env["PORT0"], env["PORT1"]) == (env["PORT_ZETA"], env["PORT_ALPHA"])


def test_no_ports_gives_an_empty_ports_list() -> None:
    env = task_environment(assignment(), "n", "127.0.0.1", DOCKER)
    assert env["PORTS"] == ""
    assert "PORT0" not in env


def test_user_values_win() -> None:
    env = task_environment(
        assignment(ports={"api": 5000}, environment={"HOST": "mine", "APP_NAME": "Ingestor"}),
        "n",
        "127.0.0.1",
        DOCKER,
    )
    assert env["HOST"] == "mine"
    assert env["APP_NAME"] == "Ingestor"
    assert env["CONTAINER_HOST_ADDRESS"] == "127.0.0.1"


def test_port_variable_names() -> None:
    assert port_variable("api") == "PORT_API"
    assert port_variable("ssh-alt") == "PORT_SSH_ALT"
    assert port_variable("a_b-c") == "PORT_A_B_C"


def test_user_values_win_over_maestro_and_discovery_variables() -> None:
    mine = {"THESEUS_DISCOVERY": "unix:///elsewhere.sock", "MAESTRO_ENVIRONMENT_NAME": "prod"}
    env = task_environment(assignment(environment=mine), "n", "127.0.0.1", DOCKER)
    assert env["THESEUS_DISCOVERY"] == "unix:///elsewhere.sock"
    assert env["MAESTRO_ENVIRONMENT_NAME"] == "prod"


def test_the_discovery_address_is_the_drivers() -> None:
    process = "unix:///var/lib/theseus/agents/n/discovery/agent.sock"
    assert task_environment(assignment(), "n", "a", process)["THESEUS_DISCOVERY"] == process
    assert "THESEUS_DISCOVERY" not in task_environment(assignment(), "n", "a", None)


@pytest.mark.parametrize(
    ("image", "name", "tag"),
    [
        ("busybox", "busybox", "latest"),
        ("busybox:1.36", "busybox", "1.36"),
        ("theseus/busybox:latest", "theseus/busybox", "latest"),
        ("registry.example/flask", "registry.example/flask", "latest"),
        ("host:5000/img", "host:5000/img", "latest"),
        ("host:5000/img:tag", "host:5000/img", "tag"),
        ("localhost:5000/team/app:v2.1-rc1", "localhost:5000/team/app", "v2.1-rc1"),
        ("img:1.0@sha256:abcd", "img", "1.0"),
        ("host:5000/img@sha256:abcd", "host:5000/img", "sha256:abcd"),
    ],
)
def test_docker_image_and_tag(image: str, name: str, tag: str) -> None:
    assert image_name_and_tag(image) == (name, tag)
    env = task_environment(assignment(image=image), "n", "127.0.0.1", DOCKER)
    assert (env["DOCKER_IMAGE"], env["DOCKER_TAG"]) == (name, tag)


def test_maestro_transliteration() -> None:
    assert maestro_name("web") == "WEB"
    assert maestro_name("my-web.v2") == "MY_WEB_V2"
    assert maestro_name("a_b") == "A_B"
    assert maestro_name("web.3f2a-9c") == "WEB_3F2A_9C"


def test_self_link_variables_transliterate_service_task_and_port_names() -> None:
    env = task_environment(
        assignment(
            task_id="my-web.v2-3f.9c", service="my-web.v2", ports={"http-alt": 8080, "a_b": 53}
        ),
        "n",
        "127.0.0.3",
        DOCKER,
    )
    prefix = "MY_WEB_V2_MY_WEB_V2_3F_9C"
    assert env[f"{prefix}_HOST"] == "127.0.0.3"
    assert env[f"{prefix}_HTTP_ALT_PORT"] == "31000"
    assert env[f"{prefix}_HTTP_ALT_INTERNAL_PORT"] == "8080"
    assert env[f"{prefix}_A_B_PORT"] == "31001"
    assert env[f"{prefix}_A_B_INTERNAL_PORT"] == "53"
    assert not [key for key in env if key.startswith(prefix) and ("-" in key or "." in key)]


def test_a_port_without_a_host_port_gets_no_self_link() -> None:
    task = assignment(ports={"api": 5000, "ssh": 22})
    task = task.model_copy(update={"host_ports": {"api": 31000}})
    env = task_environment(task, "n", "127.0.0.1", DOCKER)
    assert env["WEB_WEB_ABC123_API_PORT"] == "31000"
    assert "WEB_WEB_ABC123_SSH_PORT" not in env
    assert "WEB_WEB_ABC123_SSH_INTERNAL_PORT" not in env
