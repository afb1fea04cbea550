"""Logging of Theseus's own processes (``theseus.cli.logsetup``): the JSON lines, the
redaction of tokens, the rotated file staying under its bound, and the commands' options."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from theseus.cli.logsetup import JsonFormatter, TextFormatter, configure_logging
from theseus.cli.main import app
from theseus.provision.hosts import parse
from theseus.provision.services import keeper_argv, layout_of, services_of
from theseus.security.tokens import new_api_token, new_join_token, redact_tokens


@pytest.fixture
def restored_root() -> Iterator[None]:
    """Put the root logger back as pytest had it."""
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, sys.excepthook
    yield
    sys.excepthook = hook
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord(
        "theseus.server.app", logging.WARNING, __file__, 1, message, args, exc_info
    )
    record.created = 1_764_848_100.25
    record.msecs = 250.0
    return record


def test_json_lines_have_time_level_logger_message_and_exception() -> None:
    line = JsonFormatter().format(_record("node %s lost after %.1fs", "n1", 3.0))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2025-12-04T11:35:00.250Z",
        "level": "WARNING",
        "logger": "theseus.server.app",
        "message": "node n1 lost after 3.0s",
    }
    failed = json.loads(JsonFormatter().format(_record("it failed", exc=True)))
    assert failed["message"] == "it failed"
    assert "Traceback" in failed["exception"] and "ValueError: boom" in failed["exception"]


def test_tokens_secrets_never_reach_a_log_line() -> None:
    api, join = new_api_token(), new_join_token("pin")
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(_record("got %s and %s", str(api), str(join)))
        assert api.secret not in line and join.secret not in line
        assert f"ths-{api.id}.<redacted>" in line  # which token it was stays
    assert redact_tokens("nothing secret here") == "nothing secret here"


def test_a_rotated_log_file_stays_under_its_bound(tmp_path: Path, restored_root: None) -> None:
    path = tmp_path / "logs" / "server.log"
    configure_logging("info", path, max_bytes=4096, backups=2, log_format="json")
    log = logging.getLogger("theseus.test")
    for i in range(2000):
        log.info("line %d of a chatty server, padded to make it longer than it needs to be", i)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["server.log", "server.log.1", "server.log.2"]
    assert all((path.parent / f).stat().st_size <= 4096 for f in files)
    last = path.read_text().splitlines()[-1]
    assert json.loads(last)["message"].startswith("line 1999 ")


def test_the_commands_refuse_an_unknown_log_format() -> None:
    for command in ("server", "agent"):
        result = CliRunner().invoke(app, [command, "--log-format", "xml"])
        assert result.exit_code == 2
        assert "--log-format" in result.output


HOSTS = """
cluster: prod
hosts:
  - {name: s1, advertise: 198.18.0.11, role: both}
"""


def test_the_keeper_starts_theseus_processes_writing_their_own_rotated_log() -> None:
    """Without systemd, the keeper appends its child's output to var/log/theseus/<svc>.log:
    the server and the agent write their log there themselves, rotated; etcd does not."""
    hosts = parse(HOSTS, Path("/cfg/hosts.yaml"))
    host = hosts.host("s1")
    layout = layout_of(hosts, host)
    for service in services_of(hosts, host):
        argv = keeper_argv(service, layout)
        child = argv[argv.index("--") + 1 :]
        log = str(layout.log_file(service.name))
        assert argv[argv.index("--log") + 1] == log
        if service.name == "etcd":
            assert "--log-file" not in child
        else:
            assert child[child.index("--log-file") + 1] == log
        assert "--log-file" not in service.argv  # under systemd, the journal keeps it
