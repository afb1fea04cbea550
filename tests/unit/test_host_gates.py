"""What a spec may do to a host, the pure rules: protected paths, the volume grammar, what a
spec needs and whether a node allows it, placement by host volumes and privileges, and the
writer's refusal of a kept version that mounts a host path."""

from __future__ import annotations

import pytest

from tests.kit.builders import make_group, make_node, make_spec, make_state
from theseus.api.schemas import NodeRegistration
from theseus.model.hostgates import (
    BASELINE_CAPS,
    HostVolume,
    NodeGates,
    VolumeMount,
    parse_volume,
    protected_reason,
)
from theseus.model.spec import GroupSpec, SpecError, parse_deploy_document
from theseus.model.spec_gates import Needs, host_path_errors, needs_of, unmet
from theseus.reconciler.deploy import GroupChangePlan
from theseus.scheduler.placement import Placement, Placer, Unplaceable
from theseus.server.writes import decide_group_changes

DATA = HostVolume(name="data", path="/srv/data")
LOGS = HostVolume(name="logs", path="/var/log/app", read_only=True)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/etc",
        "/etc/ssl",
        "/proc/1",
        "/sys",
        "/dev/sda",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run",  # holds docker.sock
        "/var",  # holds etcd's data
        "/var/lib/etcd/member",
        "/var/lib/docker",
        "/srv/../etc",
        "relative",
    ],
)
def test_protected_paths_are_never_mountable(path: str) -> None:
    assert protected_reason(path) is not None


@pytest.mark.parametrize("path", ["/srv/data", "/tmp/x", "/var/log/app", "/home/u/data", "/opt"])
def test_ordinary_directories_are_mountable(path: str) -> None:
    assert protected_reason(path) is None


def test_theseus_state_and_what_holds_it_are_protected() -> None:
    state = "/home/u/.local/state/theseus"
    assert protected_reason("/home/u/.local/state/theseus/etcd", [state]) is not None
    assert protected_reason("/home/u", [state]) == f"/home/u holds {state}, which is never mounted"
    assert protected_reason("/home/u/data", [state]) is None


def test_volume_grammar() -> None:
    assert parse_volume("data:/d") == VolumeMount("data", "/d", None)
    assert parse_volume("data:/d:ro") == VolumeMount("data", "/d", "ro")
    assert parse_volume("/srv:/d:rw") == VolumeMount("/srv", "/d", "rw")
    assert parse_volume("/srv:/d:rw").is_host_path  # type: ignore[union-attr]
    for bad in ("data", "data:relative", "da ta:/d", "data:/d:rx", ":/d"):
        assert parse_volume(bad) is None, bad


def test_a_host_path_is_refused_by_validation_but_a_stored_spec_still_reads() -> None:
    # A record stored before the gates existed must read back (the agent refuses to run it).
    assert GroupSpec.model_validate({"image": "i", "volumes": ["/srv:/d"]}).volumes == ["/srv:/d"]
    with pytest.raises(SpecError) as caught:
        parse_deploy_document({"deploy": {"web": {"image": "i", "volumes": ["/:/host:ro"]}}})
    [error] = caught.value.errors
    assert error["path"] == "deploy.web.volumes.0"
    assert "--host-volume NAME=/path" in error["message"]
    assert "/ (the whole host) is never mounted" in error["message"]


def test_new_keys_at_their_defaults_leave_the_version_digest_alone() -> None:
    plain = make_spec()
    assert make_spec(privileged=False, network_mode="bridge", cap_add=[]).version() == (
        plain.version()
    )
    assert make_spec(privileged=True).version() != plain.version()
    assert make_spec(cap_add=["cap_net_admin"]).cap_add == ["NET_ADMIN"]


def test_needs_of_a_pod_reads_every_members_volumes() -> None:
    spec = GroupSpec.model_validate(
        {
            "volumes": ["data:/d:ro"],
            "containers": [
                {"name": "a", "image": "i", "volumes": ["data:/w:rw", "logs:/l"]},
                {"name": "b", "image": "i", "volumes": ["/legacy:/x"]},
            ],
            "pid_mode": "host",
            "cap_add": ["NET_ADMIN"],
        }
    )
    needs = needs_of(spec)
    assert needs.volumes == {"data": True, "logs": False}
    assert needs.host_paths == [("containers.1.volumes.0", "/legacy:/x", "/legacy")]
    assert needs.host_namespaces == ["pid_mode"]
    assert needs.caps == ["NET_ADMIN"]


@pytest.mark.parametrize(
    ("needs", "gates", "reason"),
    [
        (Needs(volumes={"data": False}), NodeGates(), "no host volume 'data' (--host-volume data="),
        (Needs(volumes={"logs": True}), NodeGates(host_volumes=[LOGS]), "'logs' is read-only"),
        (Needs(volumes={"logs": False}), NodeGates(host_volumes=[LOGS]), None),
        (Needs(privileged=True), NodeGates(), "--allow-privileged"),
        (Needs(privileged=True), NodeGates(allow_privileged=True), None),
        (Needs(host_namespaces=["network_mode"]), NodeGates(), "network_mode: host is not"),
        (Needs(host_namespaces=["pid_mode"]), NodeGates(allow_host_namespaces=True), None),
        (Needs(caps=sorted(BASELINE_CAPS)), NodeGates(), None),
        (Needs(caps=["NET_RAW"]), NodeGates(), "cap_add NET_RAW is not allowed (--allow-cap"),
        (Needs(caps=["SYS_ADMIN"]), NodeGates(allow_caps=["SYS_ADMIN"]), None),
        (Needs(host_paths=[("volumes.0", "/:/h", "/")]), NodeGates(), None),  # not placement's
    ],
)
def test_unmet_names_what_is_missing_and_the_flag(
    needs: Needs, gates: NodeGates, reason: str | None
) -> None:
    found = unmet(needs, gates)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_placement_goes_only_to_nodes_that_declare_the_volume() -> None:
    with_data = make_node("n2", gates=NodeGates(host_volumes=[DATA]))
    placer = Placer([make_node("n1"), with_data, make_node("n3")], [])
    spec = make_spec(volumes=["data:/data"])
    placed = [placer.place(f"t{i}", "g", spec) for i in range(3)]
    assert {p.node for p in placed if isinstance(p, Placement)} == {"n2"}
    nowhere = placer.place("t9", "g", make_spec(volumes=["nope:/x"], privileged=True))
    assert isinstance(nowhere, Unplaceable)
    assert nowhere.reason == (
        "0/3 nodes can run it: 3 nodes: no host volume 'nope' (--host-volume nope=/path)"
    )


def test_placement_counts_each_reason_per_node() -> None:
    nodes = [
        make_node("n1", gates=NodeGates(host_volumes=[DATA])),
        make_node("n2", gates=NodeGates(host_volumes=[DATA], allow_privileged=True)),
        make_node("n3"),
    ]
    placer = Placer(nodes, [])
    spec = make_spec(volumes=["data:/data"], privileged=True, cpus=1.5)
    assert isinstance(placer.place("t1", "g", spec), Placement)  # n2, the only one
    second = placer.place("t2", "g", spec)
    assert isinstance(second, Unplaceable)
    assert second.reason == (
        "0/3 nodes can run it: 1 node: insufficient cpus (needs 1.5); "
        "1 node: no host volume 'data' (--host-volume data=/path); "
        "1 node: privileged is not allowed (--allow-privileged)"
    )


def test_the_writer_refuses_a_kept_version_that_mounts_a_host_path() -> None:
    # A rollback or a cancel brings back a version kept from before the gates existed.
    legacy = make_group("old", volumes=["/srv/data:/data"])
    change = GroupChangePlan(legacy.group_key, "updated", legacy, kind="rollback")
    with pytest.raises(SpecError) as caught:
        decide_group_changes(lambda state: [change], make_state(), 100.0)
    [error] = caught.value.errors
    assert error["path"] == "deploy.old.volumes.0"
    assert "--host-volume" in error["message"]
    scaled = GroupChangePlan(legacy.group_key, "scaled", legacy)
    decide_group_changes(lambda state: [scaled], make_state(), 100.0)  # scaling stays possible
    assert host_path_errors("old", make_spec(volumes=["data:/d"])) == []


def test_a_server_refuses_a_registration_that_declares_a_protected_path() -> None:
    base = {"name": "n1", "address": "127.0.0.2", "agent_port": 5051, "cpus": 1, "mem": 512}
    gates = {"host_volumes": [{"name": "root", "path": "/"}]}
    with pytest.raises(ValueError, match="host volume 'root': / \\(the whole host\\)"):
        NodeRegistration.model_validate({**base, "gates": gates})
    ok = NodeRegistration.model_validate({**base, "gates": {"host_volumes": [DATA.model_dump()]}})
    assert ok.gates.host_volumes == [DATA]
