"""The deploy document: parsing, defaults, validation paths, versions and group identity."""

from __future__ import annotations

import json

import pytest

from theseus.model.groups import GroupKey
from theseus.model.spec import GroupSpec, SpecError, parse_deploy_document, parse_document_text

README_EXAMPLE = """
deploy:
  ingestor:
    image: 54.189.193.228:5000/flask
    ports:
      ssh: 22
      api: 5000
    environment:
      APP_NAME: Ingestor
      KEYSPACE_NAME: 'flask_keyspace2'
      TABLE_NAME: 'flask_table2'
    instances: 4
    cpus: 0.1
    mem: 128
    labels: ['dev']
"""


def errors_of(raw: object) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_deploy_document(raw)
    return {e["path"]: e["message"] for e in caught.value.errors}


def test_readme_example_parses_with_its_values() -> None:
    doc = parse_deploy_document(parse_document_text(README_EXAMPLE))
    spec = doc.deploy["ingestor"]
    assert spec.instances == 4 and spec.cpus == 0.1 and spec.mem == 128
    assert spec.ports == {"ssh": 22, "api": 5000}
    assert spec.environment["KEYSPACE_NAME"] == "flask_keyspace2"
    assert spec.labels == ["dev"]


def test_json_booleans_and_numbers_become_strings_in_the_environment() -> None:
    raw = parse_document_text(
        json.dumps({"deploy": {"a": {"image": "i", "environment": {"X": True, "Y": 3, "Z": "s"}}}})
    )
    env = parse_deploy_document(raw).deploy["a"].environment
    assert env == {"X": "true", "Y": "3", "Z": "s"}


def test_null_means_the_default() -> None:
    raw = parse_document_text(
        '{"deploy": {"a": {"image": "i", "labels": null, "ports": null, "command": null,'
        ' "instances": null, "environment": {"EMPTY": null, "ON": false}}}}'
    )
    spec = parse_deploy_document(raw).deploy["a"]
    assert (spec.labels, spec.ports, spec.command, spec.instances) == ([], {}, None, 1)
    assert spec.environment == {"EMPTY": "", "ON": "false"}


def test_defaults_follow_the_original() -> None:
    spec = parse_deploy_document({"deploy": {"a": {"image": "i"}}}).deploy["a"]
    assert (spec.instances, spec.cpus, spec.mem, spec.labels, spec.ports) == (1, 0.3, 512, [], {})


@pytest.mark.parametrize(
    ("group", "path", "fragment"),
    [
        ({}, "deploy.svc.image", "required"),
        ({"image": "i", "instances": -1}, "deploy.svc.instances", "greater than or equal to 0"),
        ({"image": "i", "ports": {"api": 0}}, "deploy.svc.ports.api", "greater than or equal to 1"),
        ({"image": "i", "ports": {"api": 70000}}, "deploy.svc.ports.api", "less than or equal"),
        ({"image": "i", "ports": {"api": "80"}}, "deploy.svc.ports.api", "valid integer"),
        ({"image": "i", "labels": ["ok", 3]}, "deploy.svc.labels.1", "valid string"),
        ({"image": "i", "labels": "dev"}, "deploy.svc.labels", "valid list"),
        ({"image": "i", "cpu": 1}, "deploy.svc.cpu", "did you mean 'cpus'"),
        ({"image": "i", "instances": True}, "deploy.svc.instances", "valid integer"),
        (
            {"image": "i", "environment": {"N": [1]}},
            "deploy.svc.environment.N",
            "string, a number",
        ),
        ({"image": None}, "deploy.svc.image", "required"),
        (
            {"image": "i", "health_checks": [{"protocol": "UDP"}]},
            "deploy.svc.health_checks.0.protocol",
            "HTTP",
        ),
        (
            {"image": "i", "health_checks": [{"protocol": "TCP"}]},
            "deploy.svc.health_checks.0",
            "needs a port",
        ),
        (
            {"image": "i", "ports": {"a": 80}, "healthChecks": [{"portName": "b"}]},
            "deploy.svc.health_checks.0.port_name",
            "not one of the ports",
        ),
        (
            {"image": "i", "ports": {"a": 80}, "health_checks": [{"port_index": 1}]},
            "deploy.svc.health_checks.0.port_index",
            "has 1 ports",
        ),
        (
            {"image": "i", "health_checks": [{"protocol": "COMMAND"}]},
            "deploy.svc.health_checks.0.command",
            "required when protocol is COMMAND",
        ),
        (
            {
                "image": "i",
                "health_checks": [{"protocol": "COMMAND", "command": "true", "intervalSeconds": 0}],
            },
            "deploy.svc.health_checks.0.intervalSeconds",
            "greater than 0",
        ),
        ({"containers": []}, "deploy.svc.containers", "at least one container"),
        (
            {"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]},
            "deploy.svc.containers.1.name",
            "used twice",
        ),
        (
            {"containers": [{"name": "A_b", "image": "x"}]},
            "deploy.svc.containers.0.name",
            "pattern",
        ),
        ({"containers": [{"name": "a"}]}, "deploy.svc.containers.0.image", "required"),
        (
            {"containers": [{"name": "a", "image": "x"}], "image": "x"},
            "deploy.svc.image",
            "on each of its containers",
        ),
        (
            {"containers": [{"name": "a", "image": "x", "mem": 64}], "mem": 512},
            "deploy.svc.mem",
            "sum of its containers' (64.0)",
        ),
        ({"image": "i", "dependencies": ["bad name"]}, "deploy.svc.dependencies.0", "pattern"),
        ({"image": "i", "links": ["a"], "dependencies": ["b"]}, "deploy.svc.links", "not both"),
        (
            {"image": "i", "upgrade_strategy": {"progress_deadline_seconds": 0}},
            "deploy.svc.upgrade_strategy.progress_deadline_seconds",
            "greater than 0",
        ),
        ({"image": "i", "volumes": ["data:relative"]}, "deploy.svc.volumes.0", "NAME:/container"),
        ({"image": "i", "volumes": ["a b:/x"]}, "deploy.svc.volumes.0", "--host-volume NAME"),
        ({"image": "i", "volumes": ["d:/x", "/:/host:ro"]}, "deploy.svc.volumes.1", "host path"),
        (
            {"containers": [{"name": "a", "image": "x", "volumes": ["/srv:/srv"]}]},
            "deploy.svc.containers.0.volumes.0",
            "--host-volume NAME=/path",
        ),
        ({"image": "i", "cap_add": ["ALL"]}, "deploy.svc.cap_add", "--allow-privileged"),
        ({"image": "i", "cap_add": ["SYS_WIZARD"]}, "deploy.svc.cap_add", "not a Linux cap"),
        ({"image": "i", "network_mode": "container:x"}, "deploy.svc.network_mode", "'host'"),
        ({"image": "i", "privileged": "yes"}, "deploy.svc.privileged", "boolean"),
        ({"image": "i", "labels": ["bad\nlabel"]}, "deploy.svc.labels", "printable"),
    ],
)
def test_bad_fields_are_named_by_path(group: dict[str, object], path: str, fragment: str) -> None:
    errors = errors_of({"deploy": {"svc": group}})
    assert path in errors, errors
    assert fragment in errors[path]


def test_every_bad_field_is_reported_at_once() -> None:
    errors = errors_of({"deploy": {"a": {"instances": -1}, "b": {"image": "i", "mem": -5}}})
    assert {"deploy.a.image", "deploy.a.instances", "deploy.b.mem"} <= set(errors)


def test_unknown_top_level_key_and_bad_service_name() -> None:
    assert "services" in errors_of({"services": {}})
    assert any(
        p.startswith("deploy.") for p in errors_of({"deploy": {"bad name!": {"image": "i"}}})
    )


def test_a_group_cannot_be_deployed_and_removed_in_one_document() -> None:
    with pytest.raises(SpecError, match="also deployed"):
        parse_deploy_document(
            {"deploy": {"a": {"image": "i", "labels": ["x"]}}, "remove": {"a": {"labels": ["x"]}}}
        )


def test_undecodable_text_is_a_spec_error() -> None:
    with pytest.raises(SpecError):
        parse_document_text("deploy: [unclosed")


def test_label_order_and_duplicates_do_not_change_the_group() -> None:
    a = parse_deploy_document({"deploy": {"s": {"image": "i", "labels": ["b", "a", "a"]}}})
    b = parse_deploy_document({"deploy": {"s": {"image": "i", "labels": ["a", "b"]}}})
    assert a.deploy["s"] == b.deploy["s"]
    assert GroupKey.of("s", ["b", "a"]) == GroupKey.of("s", ["a", "b", "a"])


def test_group_key_round_trips_any_printable_label() -> None:
    key = GroupKey.of("svc", ["a,b", "it's", 'quo"te', "sl/ash", "D.L", "ünï"])
    assert GroupKey.parse(key.key) == key


def test_version_ignores_instances_but_not_other_fields() -> None:
    base = {"image": "i", "instances": 2}
    v1 = parse_deploy_document({"deploy": {"s": base}}).deploy["s"].version()
    v2 = parse_deploy_document({"deploy": {"s": {**base, "instances": 5}}}).deploy["s"].version()
    v3 = parse_deploy_document({"deploy": {"s": {**base, "environment": {"A": "1"}}}}).deploy["s"]
    assert v1 == v2
    assert v3.version() != v1


def test_sticky_and_the_originals_fixed_host_mean_the_same() -> None:
    for extra in ({"sticky": True}, {"custom_constraints": "fixed-host"}):
        doc = parse_deploy_document({"deploy": {"web": {"image": "x", **extra}}})
        assert doc.deploy["web"].sticky is True
    plain = parse_deploy_document({"deploy": {"web": {"image": "x"}}}).deploy["web"]
    sticky = parse_deploy_document({"deploy": {"web": {"image": "x", "sticky": True}}})
    # A restart policy change does not restart running containers.
    assert sticky.deploy["web"].version() == plain.version()


def test_other_custom_constraints_are_refused_by_name() -> None:
    raw = {"deploy": {"web": {"image": "x", "custom_constraints": ["rack=r1"]}}}
    errors = errors_of(raw)
    assert "only 'fixed-host'" in errors["deploy.web.custom_constraints"]
    assert (
        "boolean"
        in errors_of({"deploy": {"web": {"image": "x", "sticky": "yes"}}})["deploy.web.sticky"]
    )


def test_health_checks_take_marathons_defaults_and_spellings() -> None:
    document = parse_deploy_document(
        {
            "deploy": {
                "web": {
                    "image": "i",
                    "ports": {"http": 80, "admin": 81},
                    "healthChecks": [
                        {"protocol": "MESOS_HTTP", "path": "/health"},
                        {"protocol": "tcp", "portIndex": 1, "gracePeriodSeconds": 5},
                        {"protocol": "COMMAND", "command": {"value": "test -f /ok"}},
                    ],
                }
            }
        }
    )
    http, tcp, command = document.deploy["web"].health_checks
    assert (http.protocol, http.path, http.port({"http": 80, "admin": 81})) == (
        "HTTP",
        "/health",
        "http",
    )
    assert (http.grace_period_seconds, http.interval_seconds, http.timeout_seconds) == (300, 60, 20)
    assert http.max_consecutive_failures == 3
    assert (tcp.protocol, tcp.port({"http": 80, "admin": 81}), tcp.grace_period_seconds) == (
        "TCP",
        "admin",
        5,
    )
    assert (command.command, command.port({"http": 80})) == ("test -f /ok", None)
    assert document.deploy["web"].has_health_checks


def test_a_pods_resources_are_its_members_sums_and_survive_a_round_trip() -> None:
    spec = parse_deploy_document(
        {
            "deploy": {
                "pod": {
                    "ports": {"http": 8080},
                    "containers": [
                        {"name": "app", "image": "a", "cpus": 0.25, "mem": 64},
                        {"name": "sidecar", "image": "b"},
                    ],
                }
            }
        }
    ).deploy["pod"]
    assert (spec.cpus, spec.mem, spec.images) == (0.35, 192.0, ["a", "b"])
    assert not spec.has_health_checks
    stored = GroupSpec.model_validate(spec.model_dump(mode="json"))
    assert stored == spec and stored.version() == spec.version()


def test_orchestration_only_keys_do_not_change_the_version() -> None:
    base = {"image": "i", "instances": 2}
    steered = dict(
        base,
        instances=5,
        sticky=True,
        links=["db"],
        upgrade_strategy={"minimum_health_capacity": 0.5, "auto_revert": False},
    )
    assert GroupSpec.model_validate(steered).version() == GroupSpec.model_validate(base).version()
    checked = dict(base, health_checks=[{"protocol": "COMMAND", "command": "true"}])
    assert GroupSpec.model_validate(checked).version() != GroupSpec.model_validate(base).version()


def test_init_is_on_by_default_and_keeps_the_digests_of_specs_written_before_it() -> None:
    spec = GroupSpec.model_validate({"image": "theseus/busybox:latest", "ports": {"http": 5000}})
    assert spec.init is True
    # The digest this spec had before the key existed: an upgraded server replaces nothing.
    assert spec.version() == "c28f80945c79"
    own_pid_1 = GroupSpec.model_validate({**spec.model_dump(), "init": False})
    assert own_pid_1.version() != spec.version()  # it changes the container: a rollout


def test_pull_is_validated_named_and_restarts_nothing() -> None:
    with pytest.raises(SpecError) as bad:
        parse_deploy_document({"deploy": {"web": {"image": "a", "pull": "never"}}})
    assert bad.value.errors[0]["path"] == "deploy.web.pull"
    plain, always = (
        GroupSpec(image="r.example/a:1"),
        GroupSpec(image="r.example/a:1", pull="always"),
    )
    assert always.pull == "always" and plain.version() == always.version()
    pod = {"containers": [{"name": "a", "image": "r.example/a:1"}]}
    member = {"containers": [{"name": "a", "image": "r.example/a:1", "pull": "always"}]}
    assert GroupSpec.model_validate(pod).version() == GroupSpec.model_validate(member).version()
