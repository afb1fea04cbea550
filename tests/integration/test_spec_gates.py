"""What a spec may do to a host, and what containers see, on the real cluster (issue 12,
points 6 and 7): the host-path deploy refused at the API with its field's path and nothing
applied; the same spec written straight into etcd refused by the agent, nothing started; no
container can read another task's logs (or its variables) through its node's discovery
socket; every container runs with no-new-privileges and without NET_RAW; privileges wait for a
node that allows them; an agent that declares a protected path never starts."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.kit.cluster import Cluster, free_port
from tests.kit.wait import wait_until
from tests.kit.workloads import etcd_dump, etcd_put, wait_running
from theseus.api.client import ServerClient
from theseus.api.schemas import TaskInfo
from theseus.cluster.argv import AgentProcess

pytestmark = pytest.mark.integration

LOOP = "while true; do sleep 0.2; done"
BUSYBOX: dict[str, Any] = {"image": "theseus/busybox:latest", "cpus": 0.05, "mem": 32}
SHADOW = {"volumes": ["/:/host:ro"], "command": "head /host/etc/shadow; " + LOOP}


def cluster_containers(docker_client: docker.DockerClient, cluster_id: str) -> list[Any]:
    label = f"theseus.cluster={cluster_id}"
    return list(docker_client.api.containers(all=True, filters={"label": label}))


def test_a_host_path_deploy_is_refused_with_its_path_and_nothing_applied(
    cluster: Cluster,
) -> None:
    document = {
        "deploy": {
            "fine": {**BUSYBOX, "command": LOOP},
            "shadow": {**BUSYBOX, **SHADOW},
            "root": {
                "containers": [
                    {
                        "name": "app",
                        "image": "theseus/busybox:latest",
                        "volumes": ["/var/run/docker.sock:/var/run/docker.sock"],
                    }
                ]
            },
        }
    }
    with cluster.client() as client:
        before = client.groups().groups
    for dry_run in ("false", "true"):
        answer = httpx.post(
            f"{cluster.server_url}/deploy", params={"dry_run": dry_run}, json=document, timeout=10
        )
        assert answer.status_code == 422, answer.text
        details = {d["path"]: d["message"] for d in answer.json()["details"]}
        assert set(details) == {"deploy.shadow.volumes.0", "deploy.root.containers.0.volumes.0"}
        assert "theseus agent --host-volume NAME=/path" in details["deploy.shadow.volumes.0"]
        assert "/ (the whole host) is never mounted" in details["deploy.shadow.volumes.0"]
        docker_sock = details["deploy.root.containers.0.volumes.0"]
        assert "/var/run/docker.sock is never mounted" in docker_sock
    with cluster.client() as client:
        assert client.groups().groups == before  # not even the valid group was applied
        assert not client.tasks(include_stopped=True).tasks


def test_the_agent_refuses_a_host_path_written_straight_into_etcd(
    cluster: Cluster, cluster_id: str, docker_client: docker.DockerClient
) -> None:
    with cluster.client() as client:
        client.deploy(
            json.dumps({"deploy": {"smuggled": {**BUSYBOX, "instances": 0, "command": LOOP}}}),
            "application/json",
        )
        [(key, value, _)] = etcd_dump(cluster, "/theseus/groups/smuggled/")
        record = json.loads(base64.b64decode(value))
        # What the API refuses, written where the leader reads it (an older server, or
        # anyone with etcd access, could): the leader places it, the agent must refuse it.
        record["spec"].update({**SHADOW, "instances": 1})
        etcd_put(cluster, base64.b64decode(key).decode(), json.dumps(record))

        def refused() -> TaskInfo | None:
            tasks = client.tasks("smuggled", include_stopped=True).tasks
            return next((t for t in tasks if t.state == "failed" and t.message), None)

        task = wait_until(refused, 60, "the agent to refuse the smuggled task")
        assert task.message is not None
        assert task.message.startswith(f"refused by node {task.node}: volumes.0: '/:/host:ro'")
        assert "--host-volume NAME=/path" in task.message
        assert task.message.endswith("nothing was started")
        assert task.container_id is None
    for container in cluster_containers(docker_client, cluster_id):
        assert container["Labels"].get("theseus.service") != "smuggled", container


# Run inside a container: what its node's discovery socket answers to a few requests.
PROBE = """
import json, socket, sys, time
def ask(method, path):
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/theseus/agent.sock")
    s.sendall(f"{method} {path} HTTP/1.0\\r\\nHost: agent\\r\\n\\r\\n".encode())
    answer = b"".join(iter(lambda: s.recv(65536), b"")).decode(errors="replace")
    return answer.split(" ", 2)[1], answer.partition("\\r\\n\\r\\n")[2]
found = {
    "logs": ask("GET", "/v1/tasks/" + sys.argv[1] + "/logs?tail=all"),
    "health": ask("GET", "/v1/health"),
    "scale": ask("POST", "/v1/groups/secret/scale"),
    "registry": ask("GET", "/v1/registry/secret"),
}
print("PROBE " + json.dumps(found), flush=True)
while True:
    time.sleep(1)
"""


def test_a_container_cannot_read_another_tasks_logs_through_its_socket(
    cluster: Cluster, example_image: str
) -> None:
    with cluster.client() as client:
        secret = {
            **BUSYBOX,
            "command": "echo TOPSECRET-42; " + LOOP,
            "environment": {"DB_PASSWORD": "hunter2-xyz"},
        }
        client.deploy(json.dumps({"deploy": {"secret": secret}}), "application/json")
        [task] = wait_running(client, "secret", 1)
        wait_until(lambda: "TOPSECRET-42" in "".join(client.logs(task.id)), 30, "its output")
        snoop = {
            "image": "theseus/python-base:latest",
            "cpus": 0.05,
            "mem": 64,
            "args": ["/usr/bin/python3", "-c", PROBE, task.id],
            "constraints": [["hostname", "IS", task.node]],  # the secret's own node
        }
        client.deploy(json.dumps({"deploy": {"snoop": snoop}}), "application/json")
        [probe] = wait_running(client, "snoop", 1)
        output = wait_until(lambda: probe_line(client, probe), 30, "the probe's answers")
    found = json.loads(output)
    assert found["logs"][0] == "404" and "TOPSECRET" not in found["logs"][1]
    assert "answers only GET /v1/registry" in found["logs"][1]
    assert found["health"][0] == "404"
    assert found["scale"][0] in ("404", "405")
    assert found["registry"][0] == "200"  # discovery still works
    assert json.loads(found["registry"][1])["service"] == "secret"
    assert "hunter2-xyz" not in found["registry"][1]  # not another group's variables


def probe_line(client: ServerClient, task: TaskInfo) -> str | None:
    for line in client.logs(task.id):
        if line.startswith("PROBE "):
            return line.removeprefix("PROBE ").strip()
    return None


def test_every_container_runs_without_new_privileges_and_net_raw(
    cluster: Cluster, cluster_id: str, docker_client: docker.DockerClient
) -> None:
    status = "grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status; " + LOOP
    with cluster.client() as client:
        document = {
            "single": {**BUSYBOX, "command": status},
            "pod": {"containers": [{"name": "app", "image": BUSYBOX["image"], "command": status}]},
        }
        client.deploy(json.dumps({"deploy": document}), "application/json")
        [single] = wait_running(client, "single", 1)
        wait_running(client, "pod", 1)

        def status_lines() -> list[str] | None:
            lines = list(client.logs(single.id))
            return lines if any(line.startswith("CapBnd") for line in lines) else None

        lines = wait_until(status_lines, 30, "the status lines")
    inside = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    assert inside["NoNewPrivs"].strip() == "1"
    assert not int(inside["CapBnd"], 16) & (1 << 13)  # CAP_NET_RAW is bit 13
    checked = 0
    for listed in cluster_containers(docker_client, cluster_id):
        host = docker_client.api.inspect_container(listed["Id"])["HostConfig"]
        assert "no-new-privileges" in (host["SecurityOpt"] or []), listed["Names"]
        assert "NET_RAW" in (host["CapDrop"] or []), listed["Names"]
        checked += 1
    assert checked >= 3  # the single container, the pod's infrastructure container and member


def test_privileges_wait_for_a_node_that_allows_them(cluster: Cluster) -> None:
    # No node of the session cluster allows anything beyond the defaults.
    waiting = {
        "priv": ({"privileged": True}, "3 nodes: privileged is not allowed (--allow-privileged)"),
        "hostnet": (
            {"network_mode": "host", "pid_mode": "host"},
            "3 nodes: network_mode: host and pid_mode: host is not allowed "
            "(--allow-host-namespaces)",
        ),
        "admin": (
            {"cap_add": ["sys_admin"]},
            "3 nodes: cap_add SYS_ADMIN is not allowed (--allow-cap SYS_ADMIN)",
        ),
    }
    document = {
        name: {**BUSYBOX, **fields, "command": LOOP} for name, (fields, _) in waiting.items()
    }
    document["baseline"] = {**BUSYBOX, "cap_add": ["CHOWN", "NET_BIND_SERVICE"], "command": LOOP}
    with cluster.client() as client:
        client.deploy(json.dumps({"deploy": document}), "application/json")
        wait_running(client, "baseline", 1)  # Baseline capabilities need no flag

        def reasons() -> dict[str, str] | None:
            found = {
                t.service: t.pending_reason or ""
                for t in client.tasks().tasks
                if t.service in waiting and t.state == "pending"
            }
            return found if len(found) == len(waiting) else None

        found = wait_until(reasons, 30, "each group pending with its reason")
    for name, (_, reason) in waiting.items():
        assert found[name] == f"0/3 nodes can run it: {reason}", found[name]


def test_an_agent_declaring_a_protected_path_does_not_start(
    cluster: Cluster, tmp_path: Path
) -> None:
    for declared, fragment in [
        ("root=/", "/ (the whole host) is never mounted"),
        ("sock=/run", "/run holds /run/docker.sock"),
        (f"state={cluster.root}", "holds"),  # the cluster's own state: etcd's data, agents'
    ]:
        agent = AgentProcess(
            servers=(cluster.server_url,),
            name="rogue",
            address="127.0.0.9",
            port=free_port("127.0.0.9"),
            state_dir=tmp_path / "agents" / "rogue",
            host_volumes=(declared,),
        )
        done = subprocess.run(agent.argv(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done
        assert f"--host-volume {declared}: refused" in done.stderr
        assert fragment in done.stderr, done.stderr
    with cluster.client() as client:
        assert "rogue" not in {n.name for n in client.nodes().nodes}  # it never registered
