"""``theseus deployments``, ``history``, ``rollback`` and ``deploy`` following its deployment,
against a fake server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.kit.builders import NOW, WEB_DOC, WEB_VERSION, make_group_info
from tests.kit.cli import invoke
from theseus.cli import progress


def deployment(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": "d-0000abcd",
        "group": 'web/["dev"]',
        "service": "web",
        "labels": ["dev"],
        "kind": "update",
        "from_version": 1,
        "to_version": 2,
        "digest": WEB_VERSION,
        "instances": 2,
        "status": "running",
        "started_at": NOW - 30,
        "updated_at": NOW,
        "deadline": NOW + 600,
        "progress_deadline_seconds": 600,
        "auto_revert": True,
        "ready": 1,
        "best": 1,
        "message": "rolling out version 2",
    }
    fields.update(overrides)
    return fields


def test_deployments_table_and_all() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.params))
        failed = deployment(id="d-00000001", status="failed", message="no progress for 8s")
        return httpx.Response(200, json={"deployments": [deployment(), failed]})

    result = invoke(handler, "deployments", "--all")
    assert result.exit_code == 0, result.output
    assert seen == ["all=true"]
    assert "d-0000abcd" in result.output and "1→2" in result.output
    assert "1/2" in result.output and "no progress for 8s" in result.output
    result = invoke(handler, "deployments", "--json")
    assert json.loads(result.output)[0]["id"] == "d-0000abcd"


def test_cancel_sends_force_and_prints_the_outcome() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        message = "cancelled (forced): the group stays at version 2"
        return httpx.Response(200, json=deployment(status="cancelled", message=message))

    result = invoke(handler, "deployments", "cancel", "d-0000abcd", "--force")
    assert result.exit_code == 0, result.output
    assert requests[0].method == "DELETE" and requests[0].url.path == "/v1/deployments/d-0000abcd"
    assert requests[0].url.params["force"] == "true"
    assert "d-0000abcd cancelled: cancelled (forced)" in result.output


def test_history_marks_the_current_version() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["labels"] == '["dev"]'
        spec = {"image": "theseus/busybox:latest", "instances": 2}
        versions = [
            {
                "number": n,
                "digest": f"digest{n}",
                "created_at": NOW,
                "deployment": f"d-{n:08x}",
                "current": n == 2,
                "images": ["theseus/busybox:latest"],
                "instances": 2,
                "spec": spec,
            }
            for n in (2, 1)
        ]
        body = {"service": "web", "labels": ["dev"], "current": 2, "versions": versions}
        return httpx.Response(200, json=body)

    result = invoke(handler, "history", "web", "--labels", "dev")
    assert result.exit_code == 0, result.output
    assert "2*" in result.output and "digest1" in result.output


def test_rollback_sends_the_version() -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/groups/web/rollback"
        bodies.append(json.loads(request.content))
        change = {"service": "web", "labels": ["dev"], "action": "updated", "instances": 2}
        change["deployment"] = "d-0000beef"
        return httpx.Response(200, json={"changes": [change]})

    result = invoke(handler, "rollback", "web", "1")
    assert result.exit_code == 0, result.output
    assert bodies == [{"version": 1, "labels": None}]
    assert "deployment d-0000beef" in result.output


def test_deploy_stops_when_its_deployment_fails_and_says_it_was_reverted(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.0)
    document = tmp_path / "web.yaml"
    document.write_text(WEB_DOC)
    message = "no progress for 8s: 0 of 2 new tasks ready; reverted to version 1 (d-0000beef)"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/deploy":
            change = {"service": "web", "labels": ["dev"], "action": "updated", "instances": 2}
            return httpx.Response(200, json={"changes": [{**change, "deployment": "d-0000abcd"}]})
        if request.url.path == "/v1/groups":
            return httpx.Response(
                200, json={"groups": [make_group_info("deploying", 0, version="old")]}
            )
        failed = deployment(status="failed", message=message)
        return httpx.Response(200, json={"deployments": [failed]})

    result = invoke(handler, "deploy", "-f", str(document))
    assert result.exit_code == 1
    assert "deployment d-0000abcd" in result.output
    assert "failed" in result.output and "reverted to version 1" in result.output


def test_a_failing_deploy_says_what_its_deployment_will_do(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.0)
    document = tmp_path / "web.yaml"
    document.write_text(WEB_DOC)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/deploy":
            change = {"service": "web", "labels": ["dev"], "action": "updated", "instances": 2}
            return httpx.Response(200, json={"changes": [{**change, "deployment": "d-0000abcd"}]})
        if request.url.path == "/v1/groups":
            failing = make_group_info("failing", 1, message="task web.1 exited with code 1")
            return httpx.Response(200, json={"groups": [failing]})
        running = deployment(progress_deadline_seconds=60)
        return httpx.Response(200, json={"deployments": [running]})

    result = invoke(handler, "deploy", "-f", str(document))
    assert result.exit_code == 1
    assert "is failing: task web.1 exited with code 1" in result.output
    assert "deployment d-0000abcd goes on" in result.output
    assert "reverted to version 1 after 60s" in result.output
