"""The CLI's security plumbing without a cluster: a server refusing to serve the network
without TLS, contexts saved and chosen, durations, and a CA made by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from theseus.agent import agent as agent_module
from theseus.cli import agent_cmd, contexts
from theseus.cli.access_cmds import parse_duration
from theseus.cli.main import app
from theseus.security import pki
from theseus.security.files import PkiDir

runner = CliRunner()


def test_a_server_refuses_a_non_loopback_address_without_tls() -> None:
    result = runner.invoke(app, ["server", "--host", "198.18.0.1", "--port", "5999"])
    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())
    assert "not a loopback address" in said and "--pki-dir" in said


def test_a_server_refuses_a_pki_dir_without_its_certificate(tmp_path: Path) -> None:
    PkiDir(tmp_path).write_ca(pki.create_ca("t"))
    result = runner.invoke(app, ["server", "--pki-dir", str(tmp_path), "--port", "5999"])
    said = " ".join(result.output.replace("│", " ").split())  # rich wraps it in a box
    assert result.exit_code == 2 and "server.pem is missing" in said


def test_contexts_are_saved_privately_and_the_current_one_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THESEUS_CONFIG", str(tmp_path / "c" / "config.json"))
    assert contexts.resolve(None) is None
    contexts.set_context("a", contexts.Context(servers=["https://x:1"], token="ths-a.b"))
    contexts.set_context("b", contexts.Context(servers=["https://y:1"]), make_current=False)
    assert (tmp_path / "c" / "config.json").stat().st_mode & 0o077 == 0
    current = contexts.resolve(None)
    assert current is not None and current.servers == ["https://x:1"]
    named = contexts.resolve("b")
    assert named is not None and named.token is None
    with pytest.raises(contexts.ContextError, match="known: a, b"):
        contexts.resolve("c")
    assert runner.invoke(app, ["context", "use", "b"]).exit_code == 0
    listing = runner.invoke(app, ["context", "list"]).output
    assert "* b" in listing and "  a" in listing


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("24h", 86400), ("7d", 604800), ("5", 5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1y", "-1h", "0", "h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


def test_a_ca_and_a_server_certificate_made_by_hand(tmp_path: Path) -> None:
    made = runner.invoke(app, ["ca", "init", "--dir", str(tmp_path), "--cluster", "lab"])
    assert made.exit_code == 0, made.output
    again = runner.invoke(app, ["ca", "init", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "exists already" in again.output
    issued = runner.invoke(
        app,
        ["ca", "issue", "--dir", str(tmp_path), "--role", "server", "--name", "s1",
         "--address", "198.18.0.10", "--address", "srv.example"],
    )  # fmt: skip
    assert issued.exit_code == 0, issued.output
    holder = pki.identity(PkiDir(tmp_path).cert("server").read_bytes())
    assert (holder.name, holder.role) == ("s1", "server")


def test_an_agent_refuses_a_non_loopback_address_without_tls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[object] = []
    # Where the command finds it when it runs (it imports the agent then, not at the top).
    monkeypatch.setattr(agent_module, "run_agent", lambda config: started.append(config))
    refused = runner.invoke(app, ["agent", "--address", "198.18.0.21", "--name", "n1"])
    said = " ".join(refused.output.replace("│", " ").split())
    assert refused.exit_code == 2 and "not a loopback address" in said and "--join" in said
    assert not started
    monkeypatch.setattr(agent_cmd.asyncio, "run", lambda coroutine: coroutine)
    allowed = runner.invoke(app, ["agent", "--address", "198.18.0.21", "--insecure"])
    assert allowed.exit_code == 0, allowed.output
    assert started  # started, having been told
