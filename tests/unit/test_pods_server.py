"""Pods on the server side: a pod is placed as one unit with its members' summed resources,
its task views and registry entry list the group's named ports, and a plan's diff names the
member that changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.kit.builders import (
    NOW,
    make_group,
    make_node,
    make_state,
    make_status,
    make_task,
    make_task_info,
)
from theseus.cli.output import format_state
from theseus.model.registry import container_value
from theseus.model.spec import parse_deploy_document, parse_document_text
from theseus.model.tasks import TaskState
from theseus.reconciler.preview import spec_diff
from theseus.scheduler.placement import Placement, Placer, Unplaceable
from theseus.server.views import group_info, node_info, task_info

MEMBERS: list[dict[str, Any]] = [
    {"name": "app", "image": "app:1", "cpus": 0.25, "mem": 64},
    {"name": "sidecar", "image": "side:1", "cpus": 0.05, "mem": 32},
]


def pod_group(**overrides: Any) -> Any:
    fields: dict[str, Any] = {"image": None, "cpus": None, "mem": None, "containers": MEMBERS}
    fields.update(overrides)
    return make_group("web", **fields)


def test_a_pod_task_is_viewed_and_registered_with_the_groups_ports() -> None:
    group = pod_group()
    assert group.spec.image is None
    assert (group.spec.cpus, group.spec.mem) == (0.3, 96)
    task = make_task(group, host_ports={"api": 31555})
    node = make_node()
    state = make_state([group], [node], [task], [make_status(task, TaskState.RUNNING)])
    state.index_task(None, task)
    info = task_info(state, task)
    assert info.ports["api"].host_port == 31555
    assert info.ports["api"].container_port == 5000
    assert container_value(task, node)["port_mapping"]["api"]["external"] == [
        "127.0.0.2",
        "31555/tcp",
    ]
    assert group_info(state, group.group_key.key, group).running == 1
    used = node_info(state, "n1")
    assert (used.used_cpus, used.used_mem) == (0.3, 96)


def test_a_plan_diff_names_the_member_that_changed() -> None:
    old = pod_group().spec
    changed = [{**MEMBERS[0], "image": "app:2"}, MEMBERS[1]]
    new = pod_group(containers=changed).spec
    assert spec_diff(old, new) == [("containers.app.image", "app:1", "app:2")]
    added = pod_group(containers=[*MEMBERS, {"name": "log", "image": "l"}]).spec
    diff = dict((field, (a, b)) for field, a, b in spec_diff(old, added))
    assert diff["containers.log"][0] is None
    assert diff["containers.log"][1]["image"] == "l"


def test_ps_says_which_member_ended_a_pod() -> None:
    message = "container 'sidecar' exited with code 1"
    pod = make_task_info(state="exited", exit_code=1, message=message)
    assert format_state(pod, NOW) == f"exited ({message})"
    assert format_state(make_task_info(state="exited", exit_code=1), NOW) == "exited (code 1)"


def test_the_example_pod_is_a_valid_deploy_document() -> None:
    text = (Path(__file__).parents[2] / "examples" / "pod.yaml").read_text()
    (spec,) = parse_deploy_document(parse_document_text(text)).deploy.values()
    assert [c.name for c in spec.containers or []] == ["web", "front"]
    assert (spec.cpus, spec.mem, spec.image) == (0.1, 64, None)


def test_pods_go_only_to_nodes_whose_driver_runs_pods() -> None:
    nodes = [make_node("p1", driver="process"), make_node("d1"), make_node("s1", driver="sim")]
    placer = Placer(nodes, [])
    pod = pod_group().spec
    placed = {
        p.node
        for p in (placer.place(f"t{i}", "g", pod) for i in range(4))
        if isinstance(p, Placement)
    }
    assert placed == {"d1", "s1"}
    only_process = Placer([make_node("p1", driver="process")], []).place("t", "g", pod)
    assert isinstance(only_process, Unplaceable)
    assert only_process.reason == "0/1 nodes can run it: 1 node: pods need the docker driver"
    single = Placer([make_node("p1", driver="process")], []).place("t", "g", make_group().spec)
    assert isinstance(single, Placement)
