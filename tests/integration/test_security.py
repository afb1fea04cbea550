"""The secure model with real processes: a CA, TLS, API tokens with scopes, agents joined with
join tokens and talking mutual TLS (``theseus up --secure``'s model, from
``tests/kit/cluster.py``'s ``start_secure_cluster``).

One secure cluster for the module: two docker agents at 127.0.0.5-6 (the session's dev cluster
uses 127.0.0.2-4); rogue agents come and go at 127.0.0.7-9.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kit.cluster import Cluster, start_secure_cluster
from tests.kit.wait import wait_until
from tests.kit.workloads import LOOPING, wait_running
from theseus.api.access_client import AccessApi
from theseus.api.client import ApiError
from theseus.security import pki
from theseus.security.files import PkiDir
from theseus.security.tls import client_context
from theseus.security.tokens import Scope, new_join_token

pytestmark = pytest.mark.integration

NODES = {"secure-1": "127.0.0.5", "secure-2": "127.0.0.6"}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Cluster]:
    agents = {
        name: {"address": address, "cpus": 1.0, "mem": 1024} for name, address in NODES.items()
    }
    cluster = start_secure_cluster(Path(tmp_path_factory.mktemp("secure")), agents)
    yield cluster
    with cluster.client() as client:
        for service in {g.service for g in client.groups().groups}:
            client.remove(service)
        wait_until(lambda: not client.tasks().tasks, 60, "the secure cluster's tasks removed")
    cluster.stop()


def _raw(cluster: Cluster, method: str, path: str, **kwargs: object) -> httpx.Response:
    assert cluster.pki is not None
    with httpx.Client(verify=client_context(cluster.pki), timeout=10) as http:
        return http.request(method, cluster.server_url + path, **kwargs)  # type: ignore[arg-type]


def _token(cluster: Cluster, name: str, scopes: list[Scope], ttl: float | None = None) -> str:
    with cluster.client() as client:
        return AccessApi(client).create_token(name, scopes, ttl).token


def test_deploy_scale_and_logs_through_mutual_tls(secure: Cluster) -> None:
    """The admin deploys; the agents, joined by token, run it; the server reads a task's
    logs from its agent over mutual TLS."""
    spec = {**LOOPING, "command": "echo secure-hello; while true; do sleep 0.1; done"}
    with secure.client() as client:
        client.deploy(json.dumps({"deploy": {"vault": spec}}), "application/json")
        tasks = wait_running(client, "vault", 1)
        client.scale("vault", 2)
        wait_running(client, "vault", 2)

        def said_hello() -> str | None:
            text = "\n".join(client.logs(tasks[0].id))
            return text if "secure-hello" in text else None

        logs = wait_until(said_hello, 30, "the task's output through the server")
        assert "secure-hello" in logs
        client.remove("vault")


def test_requests_without_a_valid_token_get_401_and_never_500(secure: Cluster) -> None:
    assert _raw(secure, "GET", "/v1/health").status_code == 200  # public
    anonymous = _raw(secure, "GET", "/v1/tasks")
    assert anonymous.status_code == 401
    assert "requires an API token" in anonymous.json()["message"]
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    garbage = _raw(secure, "GET", "/v1/tasks", headers={"Authorization": "Bearer nonsense"})
    assert garbage.status_code == 401
    assert "nonsense" not in garbage.text
    forged = "ths-aaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    assert _raw(secure, "GET", "/v1/tasks", headers={"X-Theseus-Token": forged}).status_code == 401
    # Refused before the body is read: an anonymous deploy gets 401, and a 20 MB body 413
    # (the size is checked first, by its Content-Length), neither costing the server a parse.
    small = _raw(secure, "POST", "/deploy", content=b"{}")
    assert small.status_code == 401
    big = _raw(secure, "POST", "/deploy", content=b"x" * 20_000_000)
    assert big.status_code == 413


def test_scopes_read_cannot_write_and_admin_can_manage_tokens(secure: Cluster) -> None:
    reader = _token(secure, "dashboard", [Scope.READ])
    writer = _token(secure, "ci", [Scope.WRITE])
    with secure.client(token=reader) as client:
        assert client.tasks().tasks is not None
        with pytest.raises(ApiError) as refused:
            client.deploy(json.dumps({"deploy": {"nope": LOOPING}}), "application/json")
        assert refused.value.status == 403
        assert "write scope" in refused.value.message and "dashboard" in refused.value.message
        assert "nope" not in {g.service for g in client.groups().groups}
    with secure.client(token=writer) as client, pytest.raises(ApiError) as refused:
        AccessApi(client).tokens()
    assert refused.value.status == 403 and "admin scope" in refused.value.message
    with secure.client() as client:
        listed = {t.name for t in AccessApi(client).tokens().tokens}
        assert {"bootstrap", "dashboard", "ci"} <= listed
        assert "secret" not in json.dumps(
            [t.model_dump() for t in AccessApi(client).tokens().tokens]
        )
        reader_id = next(t.id for t in AccessApi(client).tokens().tokens if t.name == "dashboard")
        AccessApi(client).revoke_token(reader_id)
    with secure.client(token=reader) as client, pytest.raises(ApiError) as revoked:
        client.tasks()
    assert revoked.value.status == 401


def test_an_expired_token_is_refused(secure: Cluster) -> None:
    short = _token(secure, "brief", [Scope.READ], ttl=1.0)

    def refused() -> bool:
        with secure.client(token=short) as client:
            try:
                client.tasks()
            except ApiError as exc:
                return exc.status == 401 and "expired" in exc.message
        return False

    wait_until(refused, 10, "the one-second token to expire")


def test_bootstrap_works_once(secure: Cluster) -> None:
    again = _raw(secure, "POST", "/v1/acl/bootstrap")
    assert again.status_code == 409


def test_writes_are_audited_with_the_tokens_name(secure: Cluster) -> None:
    writer = _token(secure, "auditee", [Scope.WRITE])
    with secure.client(token=writer) as client:
        client.deploy(json.dumps({"deploy": {"audited": LOOPING}}), "application/json")
        client.remove("audited")
    with secure.client() as client:
        api = AccessApi(client)

        def recorded() -> list[str] | None:
            mine = [r for r in api.audit().records if r.who == "token:auditee"]
            return [f"{r.method} {r.path} {r.status}" for r in mine] if len(mine) >= 2 else None

        lines = wait_until(recorded, 10, "the audit records")
    assert lines[0] == "POST /deploy 200" and lines[1].startswith("DELETE /v1/groups/audited")


def _exits_saying(secure: Cluster, name: str, text: str, timeout: float = 30) -> str:
    process = secure.processes[name]
    wait_until(lambda: not process.alive(), timeout, f"rogue agent {name} to give up")
    log = process.log.read_text()
    assert text in log, log[-2000:]
    return log


def test_an_agent_without_a_token_is_not_admitted(secure: Cluster) -> None:
    secure.start_agent("rogue-1", "127.0.0.7", join_token="", may_exit=True)
    _exits_saying(secure, "rogue-1", "has no certificate")
    with secure.client() as client:
        assert "rogue-1" not in {n.name for n in client.nodes().nodes}


def test_an_agent_refuses_a_server_whose_ca_the_token_does_not_pin(
    secure: Cluster, tmp_path: Path
) -> None:
    other_ca = pki.create_ca("another cluster")
    token = str(new_join_token(pki.ca_fingerprint(other_ca.cert)))
    secure.start_agent("rogue-2", "127.0.0.8", join_token=token, may_exit=True)
    _exits_saying(secure, "rogue-2", "does not match the join token")
    assert not PkiDir(secure.root / "agents" / "rogue-2" / "pki").has("agent")


def test_expired_revoked_and_unknown_join_tokens_are_refused(secure: Cluster) -> None:
    assert secure.pki is not None
    pin = pki.ca_fingerprint(secure.pki.read_ca())
    with secure.client() as client:
        api = AccessApi(client)
        expiring = api.create_join_token(ttl=1.0)
        revoked = api.create_join_token(ttl=3600)
        api.revoke_join_token(revoked.info.id)
    wait_until(lambda: time.time() > expiring.info.expires_at, 5, "the join token to expire")
    cases = {
        "rogue-3": (expiring.token, "has expired"),
        "rogue-4": (revoked.token, "unknown or revoked join token"),
        "rogue-5": (str(new_join_token(pin)), "unknown or revoked join token"),
    }
    for name, (token, _) in cases.items():
        secure.start_agent(name, "127.0.0.9", join_token=token, may_exit=True)
        _exits_saying(secure, name, cases[name][1])


def test_a_live_nodes_name_cannot_be_claimed(secure: Cluster) -> None:
    """Another machine (another state directory, no certificate) joining as secure-1."""
    secure.start_agent("secure-1", "127.0.0.7", may_exit=True, process_name="impostor")
    _exits_saying(secure, "impostor", "is alive")


def _agent_call(secure: Cluster, files: PkiDir, method: str, path: str) -> httpx.Response:
    with httpx.Client(verify=client_context(files, "agent"), timeout=10) as http:
        return http.request(method, secure.server_url + path)


def test_agents_act_for_their_own_node_only_and_a_removed_one_is_shut_out(
    secure: Cluster,
) -> None:
    secure.start_agent("secure-3", "127.0.0.8")
    secure.wait_nodes_ready()
    files = PkiDir(secure.root / "agents" / "secure-3" / "pki")
    assert pki.identity(files.cert("agent").read_bytes()).role == "agent"
    # After joining, the agent starts again without its token: it has its certificate.
    secure.processes["secure-3"].stop()
    secure.start_agent("secure-3", "127.0.0.8", join_token="")
    secure.wait_nodes_ready()

    other = _agent_call(secure, files, "POST", "/v1/agent/secure-1/heartbeat")
    assert other.status_code == 403 and "secure-1" in other.json()["message"]
    assert _agent_call(secure, files, "GET", "/v1/tasks").status_code == 403
    assert _agent_call(secure, files, "POST", "/v1/agent/secure-3/heartbeat").status_code == 200

    with secure.client() as client:
        AccessApi(client).remove_node("secure-3")
        revoked = _agent_call(secure, files, "POST", "/v1/agent/secure-3/heartbeat")
        assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]
        # Its agent keeps trying, and keeps being refused: the node stays gone.
        log = secure.processes["secure-3"].log
        wait_until(lambda: "revoked" in log.read_text(), 30, "the agent to be refused")
        assert "secure-3" not in {n.name for n in client.nodes().nodes}
    secure.processes["secure-3"].stop()
    del secure.nodes["secure-3"]


def test_the_agents_endpoint_answers_servers_only(secure: Cluster) -> None:
    with secure.client() as client:
        node = client.node("secure-1")
    assert secure.pki is not None
    base = f"https://{node.address}:{node.agent_port}"
    logs, registry = f"{base}/v1/tasks/any/logs", f"{base}/v1/registry/web"
    agent_files = PkiDir(secure.root / "agents" / "secure-2" / "pki")
    with httpx.Client(verify=client_context(secure.pki), timeout=10) as anonymous:
        assert anonymous.get(f"{base}/v1/health").status_code == 200
        assert anonymous.get(logs).status_code == 401
        assert anonymous.get(registry).status_code == 401
    with httpx.Client(verify=client_context(agent_files, "agent"), timeout=10) as agent:
        assert agent.get(logs).status_code == 403
    with httpx.Client(verify=client_context(secure.pki, "server"), timeout=10) as server:
        assert server.get(logs).status_code == 404  # allowed; no such task


def test_the_cli_needs_no_flags_once_a_context_is_saved(secure: Cluster, tmp_path: Path) -> None:
    assert secure.pki is not None and secure.admin_token is not None
    env = {**os.environ, "THESEUS_CONFIG": str(tmp_path / "config.json")}
    env.pop("THESEUS_SERVER", None)

    def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "theseus", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert result.returncode == expect, f"{args}: {result.stdout}\n{result.stderr}"
        return result

    cli("ps", expect=1)  # no context yet: the default development address, nothing there
    cli(
        "context", "set", "lab", "--server", secure.server_url,
        "--ca-cert", str(secure.pki.ca_cert), "--token", secure.admin_token,
    )  # fmt: skip
    assert (tmp_path / "config.json").stat().st_mode & 0o077 == 0
    spec = {**LOOPING, "command": "echo from-cli; while true; do sleep 0.1; done"}
    (tmp_path / "app.json").write_text(json.dumps({"deploy": {"clied": spec}}))
    cli("deploy", "-f", str(tmp_path / "app.json"))
    assert "clied" in cli("ps").stdout
    cli("scale", "clied", "2")
    with secure.client() as client:
        task = wait_running(client, "clied", 2)[0]
    wait_until(lambda: "from-cli" in cli("logs", task.id).stdout, 30, "logs through the CLI")
    assert "token" in cli("token", "whoami").stdout
    cli("rm", "clied")


def test_agent_certificates_are_renewed_before_they_expire(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str
) -> None:
    """Certificates of 20 s: renewed at 10-16 s, and the node stays ready past their end."""
    root = Path(tmp_path_factory.mktemp("renewal"))
    cluster = start_secure_cluster(
        root, {"short-1": {"address": "127.0.0.9", "driver": "process"}}, agent_cert_days=20 / 86400
    )
    try:
        files = PkiDir(root / "agents" / "short-1" / "pki")
        first = pki.identity(files.cert("agent").read_bytes())
        renewed = wait_until(
            lambda: (
                (now := pki.identity(files.cert("agent").read_bytes())).serial != first.serial
                and now
            ),
            30,
            "the agent's certificate to be renewed",
        )
        assert renewed.not_after > first.not_after
        # Past the first certificate's end by more than the liveness timeout (4 s): the node
        # is only still ready if its heartbeats went on with the renewed one.
        ended = first.not_after.timestamp() + 6
        wait_until(lambda: time.time() > ended, 30, "the first certificate to be long over")
        with cluster.client() as client:
            assert client.node("short-1").status == "ready"
    finally:
        cluster.stop()
