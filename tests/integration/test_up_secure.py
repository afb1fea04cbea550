"""``theseus up --secure`` end to end, as a new user runs it: one command brings up the secure
model (CA, TLS everywhere, tokens, agents joined by token, etcd requiring certificates), and the
CLI then works with no flags through the context it saved: deploy, ps, scale, logs, rm. The
development cluster's anonymous access is gone: a plain request gets 401.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kit.wait import wait_until
from tests.kit.workloads import LOOPING
from theseus.cluster.ports import free_port, free_port_pair

pytestmark = pytest.mark.integration


class Cli:
    def __init__(self, config: Path) -> None:
        self.env = {**os.environ, "THESEUS_CONFIG": str(config)}
        for name in ("THESEUS_SERVER", "THESEUS_TOKEN", "THESEUS_CA_CERT", "THESEUS_CONTEXT"):
            self.env.pop(name, None)

    def __call__(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "theseus", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
        )
        assert result.returncode == expect, f"{args}: {result.stdout}\n{result.stderr}"
        return result


@pytest.fixture
def up_secure(tmp_path: Path, busybox_image: str) -> Iterator[tuple[Cli, int, Path]]:
    cli = Cli(tmp_path / "config.json")
    state = tmp_path / "state"
    port, etcd = free_port(), free_port_pair()
    try:
        said = cli(
            "up", "--secure", "--nodes", "2", "--driver", "docker", "--port", str(port),
            "--etcd-port", str(etcd), "--state-dir", str(state),
        ).stdout  # fmt: skip
        assert "saved the CLI context local-secure" in said
        yield cli, port, state
    finally:
        if state.exists():
            cli("down", "--state-dir", str(state), "--purge")


def test_up_secure_then_the_cli_needs_no_flags(
    up_secure: tuple[Cli, int, Path], tmp_path: Path
) -> None:
    cli, port, state = up_secure
    with pytest.raises(httpx.HTTPError):  # TLS only: plain HTTP gets no answer
        httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
    assert "node-1" in cli("nodes").stdout
    spec = {**LOOPING, "command": "echo up-secure-hello; while true; do sleep 0.1; done"}
    (tmp_path / "app.json").write_text(json.dumps({"deploy": {"guarded": spec}}))
    cli("deploy", "-f", str(tmp_path / "app.json"))
    cli("scale", "guarded", "2")

    def running_ids() -> list[str] | None:
        rows = json.loads(cli("ps", "--json").stdout)
        ids = [r["id"] for r in rows if r["state"] == "running"]
        return ids if len(ids) == 2 else None

    task = wait_until(running_ids, 60, "two running tasks")[0]
    wait_until(lambda: "up-secure-hello" in cli("logs", task).stdout, 30, "the task's logs")
    trust = ssl.create_default_context(cafile=state / "pki" / "ca.pem")
    anonymous = httpx.get(f"https://127.0.0.1:{port}/v1/tasks", verify=trust, timeout=5)
    assert anonymous.status_code == 401
    assert (state / "pki" / "admin.token").stat().st_mode & 0o077 == 0
    cli("rm", "guarded")
