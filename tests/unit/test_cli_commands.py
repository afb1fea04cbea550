"""The CLI commands against a fake server (an httpx MockTransport behind ServerClient)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kit.builders import WEB_DOC, make_group_info, make_task_info
from tests.kit.cli import Handler, invoke
from theseus.cli import progress

CREATED = {
    "result": {"status": 200},
    "changes": [{"service": "web", "labels": ["dev"], "action": "created", "instances": 2}],
}


def test_unreachable_server_is_one_line_and_exit_1() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = invoke(refuse, "ps")
    assert result.exit_code == 1
    assert "cannot reach the Theseus server at http://fake:5000" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_api_error_prints_message_and_paths() -> None:
    body = {"message": "invalid deploy document", "details": [{"path": "a.b", "message": "bad"}]}

    def reject(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json=body)

    result = invoke(reject, "scale", "web", "3")
    assert result.exit_code == 1
    assert "invalid deploy document" in result.stderr
    assert "a.b: bad" in result.stderr


def test_ps_table_and_json() -> None:
    seen: list[httpx.Request] = []

    def tasks(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"tasks": [make_task_info().model_dump(mode="json")]})

    result = invoke(tasks, "ps", "ingestor", "-a")
    assert result.exit_code == 0, result.output
    assert "ingestor.0123456789ab" in result.stdout
    assert "api=127.0.0.2:31001" in result.stdout
    assert seen[0].url.params["service"] == "ingestor"
    assert seen[0].url.params["all"] == "true"

    result = invoke(tasks, "ps", "--json")
    assert json.loads(result.stdout)[0]["id"] == "ingestor.0123456789ab"


def test_scale_sends_each_label_whole() -> None:
    bodies: list[Any] = []

    def scale(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        change = {"service": "web", "labels": ["a, b", "c d"], "action": "scaled", "instances": 5}
        return httpx.Response(200, json={"changes": [change]})

    result = invoke(scale, "scale", "web", "5", "--labels", "c d", "--labels", "a, b")
    assert result.exit_code == 0, result.output
    assert bodies == [{"instances": 5, "labels": ["a, b", "c d"]}]
    assert "scaled" in result.stdout


def test_rm_without_labels_removes_every_group() -> None:
    requests: list[httpx.Request] = []

    def remove(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        change = {"service": "web", "labels": ["dev"], "action": "removed"}
        return httpx.Response(200, json={"changes": [change]})

    assert invoke(remove, "rm", "web").exit_code == 0
    assert requests[0].method == "DELETE"
    assert "labels" not in requests[0].url.params
    assert invoke(remove, "rm", "web", "--labels", "dev").exit_code == 0
    assert json.loads(requests[1].url.params["labels"]) == ["dev"]


def fake_server(group_answers: list[list[dict[str, Any]]]) -> tuple[Handler, list[bytes]]:
    posted: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/deploy":
            posted.append(request.content)
            return httpx.Response(200, json=CREATED)
        answer = group_answers.pop(0) if len(group_answers) > 1 else group_answers[0]
        return httpx.Response(200, json={"groups": answer})

    return handle, posted


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.0)


def test_deploy_sends_the_text_as_is_and_follows_until_converged(tmp_path: Path) -> None:
    doc = tmp_path / "web.yaml"
    doc.write_text(WEB_DOC)
    handle, posted = fake_server(
        [
            [],  # the server's cache has not seen the group yet
            [make_group_info("deploying", 1, version="old")],
            [make_group_info("deploying", 1)],
            [make_group_info("converged", 2)],
        ]
    )
    result = invoke(handle, "deploy", "-f", str(doc))
    assert result.exit_code == 0, result.output
    assert posted == [WEB_DOC.encode()]
    assert "created" in result.stdout
    assert "converged" in result.stdout


def test_deploy_stops_on_a_failing_group(tmp_path: Path) -> None:
    doc = tmp_path / "web.yaml"
    doc.write_text(WEB_DOC)
    handle, _ = fake_server(
        [[make_group_info("failing", 0, message="task web.1 exited with code 1")]]
    )
    result = invoke(handle, "deploy", "-f", str(doc))
    assert result.exit_code == 1
    assert "exited with code 1" in result.stderr


def test_deploy_times_out(tmp_path: Path) -> None:
    doc = tmp_path / "web.yaml"
    doc.write_text(WEB_DOC)
    handle, _ = fake_server([[make_group_info("deploying", 1)]])
    result = invoke(handle, "deploy", "-f", str(doc), "--timeout", "0")
    assert result.exit_code == 1
    assert "not converged" in result.stderr


def test_deploy_detach_does_not_poll(tmp_path: Path) -> None:
    doc = tmp_path / "web.yaml"
    doc.write_text(WEB_DOC)
    handle, _ = fake_server([])  # any GET /v1/groups would fail with IndexError
    result = invoke(handle, "deploy", "-f", str(doc), "--detach")
    assert result.exit_code == 0, result.output


def test_deploy_rejects_a_bad_document_before_sending(tmp_path: Path) -> None:
    doc = tmp_path / "bad.yaml"
    doc.write_text("deploy:\n  web:\n    image: x\n    cpu: 1\n")
    handle, posted = fake_server([])
    result = invoke(handle, "deploy", "-f", str(doc))
    assert result.exit_code == 1
    assert "deploy.web.cpu: unknown key; did you mean 'cpus'?" in result.stderr
    assert posted == []


def test_logs_of_a_service_are_prefixed_per_task() -> None:
    tasks = [make_task_info(id="web.a", service="web"), make_task_info(id="web.b", service="web")]

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/tasks":
            return httpx.Response(200, json={"tasks": [t.model_dump(mode="json") for t in tasks]})
        task_id = request.url.path.split("/")[3]
        return httpx.Response(200, text=f"hello from {task_id}\n")

    result = invoke(handle, "logs", "web")
    assert result.exit_code == 0, result.output
    assert "web.a | hello from web.a" in result.stdout
    assert "web.b | hello from web.b" in result.stdout

    result = invoke(handle, "logs", "web.b")
    assert result.stdout == "hello from web.b\n"


def test_logs_of_an_unknown_name() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"tasks": []})

    result = invoke(handle, "logs", "nope")
    assert result.exit_code == 1
    assert "no task or service named 'nope'" in result.stderr
