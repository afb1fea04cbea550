"""Several server addresses on the command line: the CLI's global option / THESEUS_SERVER and
``theseus agent --server`` (repeatable, comma-separated)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from theseus.agent import agent as agent_module
from theseus.agent.config import AgentConfig
from theseus.cli.main import app
from theseus.cli.output import CliState

runner = CliRunner()


def test_the_cli_moves_on_from_a_server_that_does_not_answer() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        if request.url.host == "down":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"nodes": []})

    state = CliState(transport=httpx.MockTransport(handler))
    result = runner.invoke(
        app, ["nodes"], obj=state, env={"THESEUS_SERVER": "http://down:5000,http://up:5001"}
    )
    assert result.exit_code == 0, result.output
    assert asked == ["down", "up"]


@pytest.fixture
def agent_config(monkeypatch: pytest.MonkeyPatch) -> list[AgentConfig]:
    """The config ``theseus agent`` would run with (the agent itself is not started)."""
    seen: list[AgentConfig] = []

    async def capture(config: AgentConfig) -> None:
        seen.append(config)

    monkeypatch.setattr(agent_module, "run_agent", capture)  # the command imports it there
    return seen


def run_agent_cli(*args: str, **env: Any) -> None:
    result = runner.invoke(app, ["agent", "--name", "n", *args], env=env)
    assert result.exit_code == 0, result.output


def test_agent_servers_repeat_or_come_comma_separated(agent_config: list[AgentConfig]) -> None:
    run_agent_cli("--server", "http://a:5000", "--server", "b:5001,http://c:5002/")
    assert agent_config[-1].server == "http://a:5000,http://b:5001,http://c:5002"


def test_agent_servers_from_the_environment(agent_config: list[AgentConfig]) -> None:
    run_agent_cli(THESEUS_SERVER="http://a:5000,http://b:5001")
    assert agent_config[-1].server == "http://a:5000,http://b:5001"
