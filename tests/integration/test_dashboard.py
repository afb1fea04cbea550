"""The dashboard over HTTP against a real secure cluster (TLS, tokens, two process agents):
what a browser gets at ``/`` and what an API client still gets, signing in, pages and their
live fragments, the change stream, a task's logs, actions and their protections (scope,
CSRF token, Origin), a plan and a deploy from the form. The browser itself:
``test_dashboard_browser.py``."""

from __future__ import annotations

import contextlib
import html
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.kit.cluster import Cluster, start_secure_cluster
from tests.kit.wait import wait_until
from theseus.api.access_client import AccessApi
from theseus.security.tls import client_context
from theseus.security.tokens import Scope

pytestmark = pytest.mark.integration

NODES = {"ui-1": "127.0.16.2", "ui-2": "127.0.16.3"}
SPEC = {
    "image": "unused-by-the-process-driver",
    "command": 'echo "hello from $CONTAINER_NAME"; exec sleep 3600',
    "cpus": 0.05,
    "mem": 16,
    "task_kill_grace_period_seconds": 1,
}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    agents = {
        name: {
            "address": address,
            "driver": "process",
            "cpus": 2.0,
            "mem": 1024,
            "stats_interval": 1.0,
        }
        for name, address in NODES.items()
    }
    cluster = start_secure_cluster(Path(tmp_path_factory.mktemp("dashboard")), agents)
    with cluster.client() as client:
        client.deploy(
            json.dumps({"deploy": {"hello": {**SPEC, "instances": 2}}}), "application/json"
        )
        wait_until(
            lambda: sum(t.state == "running" for t in client.tasks("hello").tasks) == 2,
            60,
            "hello running",
        )
    yield cluster
    cluster.stop()


def _token(cluster: Cluster, name: str, scopes: list[Scope]) -> str:
    with cluster.client() as client:
        return AccessApi(client).create_token(name, scopes, None).token


def _browser(cluster: Cluster) -> httpx.Client:
    assert cluster.pki is not None
    return httpx.Client(
        base_url=cluster.server_url,
        verify=client_context(cluster.pki),
        timeout=10,
        headers={"accept": "text/html"},
    )


@contextlib.contextmanager
def _signed_in(cluster: Cluster, token: str) -> Iterator[httpx.Client]:
    with _browser(cluster) as browser:
        answer = browser.post("/ui/login", data={"token": token})
        assert answer.status_code == 303, answer.text
        yield browser


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _group_url(service: str) -> str:
    return f"/ui/group?id={quote(service + '/[]', safe='')}"


def test_a_browser_is_sent_to_the_dashboard_and_an_api_client_is_unaffected(
    secure: Cluster,
) -> None:
    with _browser(secure) as browser:
        home = browser.get("/")
        assert home.status_code == 303 and home.headers["location"] == "/ui/"
        assert browser.get("/ui/").headers["location"] == "/ui/login"
        assert browser.get("/ui/stream").status_code == 401
        api = browser.get("/", headers={"accept": "application/json"})
        assert api.status_code == 404 and api.json()["message"] == "Not Found"


def test_a_page_that_is_not_there_is_an_html_page_saying_so(secure: Cluster) -> None:
    reader = _token(secure, "ui-404", [Scope.READ])
    with _signed_in(secure, reader) as browser:
        for path, reason in (
            ("/ui/tasks/t-nowhere", "no task 't-nowhere'"),
            (_group_url("nowhere"), "no group"),
        ):
            answer = browser.get(path)
            assert answer.status_code == 404, path
            assert answer.headers["content-type"].startswith("text/html"), path
            text = html.unescape(answer.text)
            assert "<h1>Not found</h1>" in text and reason in text, path
            assert 'href="/ui/"' in answer.text  # a way back
            assert "content-security-policy" in answer.headers
        # Scripts and API clients keep the JSON answer.
        fragment = browser.get("/ui/tasks/t-nowhere", headers={"x-fragment": "1"})
        assert fragment.status_code == 404 and fragment.json()["message"] == "no task 't-nowhere'"
        bearer = {"accept": "*/*", "authorization": f"Bearer {reader}"}
        api = browser.get("/v1/tasks/t-nowhere", headers=bearer)
        assert api.status_code == 404 and "message" in api.json()


def test_sign_in_sets_a_strict_httponly_secure_cookie_without_the_token(secure: Cluster) -> None:
    reader = _token(secure, "ui-reader", [Scope.READ])
    with _browser(secure) as browser:
        refused = browser.post("/ui/login", data={"token": reader[:-4] + "AAAA"})
        assert refused.status_code == 401 and 'role="alert"' in refused.text
        assert reader[:-4] not in refused.text  # never repeated
        answer = browser.post("/ui/login", data={"token": reader})
        cookie = answer.headers["set-cookie"]
        for attribute in ("HttpOnly", "SameSite=strict", "Secure"):
            assert attribute.lower() in cookie.lower()
        assert reader.split("-")[-1] not in cookie
        overview = browser.get("/ui/")
        assert overview.status_code == 200 and "hello" in overview.text
        assert "content-security-policy" in overview.headers


def test_a_read_token_sees_no_action_and_cannot_act(secure: Cluster) -> None:
    reader = _token(secure, "ui-reader-2", [Scope.READ])
    with _signed_in(secure, reader) as browser:
        page = browser.get(_group_url("hello"))
        assert page.status_code == 200 and "(read only)" in page.text
        assert 'method="post" action="/ui/group' not in page.text
        assert '"/ui/deploy"' not in page.text
        refused = browser.post(
            "/ui/group/scale",
            data={"id": "hello/[]", "instances": "5", "csrf": _csrf(page.text)},
        )
        # A form's refusal is a page saying why (a script's would be JSON).
        assert refused.status_code == 403 and "write scope" in refused.text
        assert refused.headers["content-type"].startswith("text/html")
    with secure.client() as client:
        assert next(g for g in client.groups().groups if g.service == "hello").instances == 2


def test_writes_need_the_csrf_token_and_this_server_as_origin(secure: Cluster) -> None:
    writer = _token(secure, "ui-writer", [Scope.WRITE])
    with _signed_in(secure, writer) as browser:
        page = browser.get(_group_url("hello"))
        csrf = _csrf(page.text)
        form = {"id": "hello/[]", "instances": "3"}
        assert browser.post("/ui/group/scale", data=form).status_code == 403
        assert browser.post("/ui/group/scale", data={**form, "csrf": "x" * 64}).status_code == 403
        cross = browser.post(
            "/ui/group/scale",
            data={**form, "csrf": csrf},
            headers={"origin": "https://evil.example"},
        )
        assert cross.status_code == 403 and "cross-site" in cross.text
        with secure.client() as client:
            assert next(g for g in client.groups().groups if g.service == "hello").instances == 2
        done = browser.post(
            "/ui/group/scale",
            data={**form, "csrf": csrf},
            headers={"origin": secure.server_url},
        )
        assert done.status_code == 303 and "done=scaled" in done.headers["location"]
    with secure.client() as client:
        assert next(g for g in client.groups().groups if g.service == "hello").instances == 3
        wait_until(
            lambda: sum(t.state == "running" for t in client.tasks("hello").tasks) == 3,
            60,
            "hello scaled to 3",
        )
        client.scale("hello", 2)
        audit = [r for r in AccessApi(client).audit().records if r.path == "/ui/group/scale"]
        assert any(r.who == "token:ui-writer" and r.status == 303 for r in audit), audit


def test_pages_and_their_live_fragments_render(secure: Cluster) -> None:
    with _signed_in(secure, secure.admin_token or "") as browser:
        task_id = next(t.id for t in _tasks(secure) if t.service == "hello")
        for path in (
            "/ui/",
            _group_url("hello"),
            "/ui/nodes",
            f"/ui/tasks/{task_id}",
            "/ui/deployments",
            "/ui/events",
            "/ui/registry",
            "/ui/deploy",
        ):
            page = browser.get(path)
            assert page.status_code == 200, (path, page.text)
            assert page.text.startswith("<!doctype html>"), path
            fragment = browser.get(path, headers={"x-fragment": "1"})
            assert fragment.status_code == 200 and "<html" not in fragment.text, path
        nodes = browser.get("/ui/nodes").text
        assert all(name in nodes for name in NODES) and "Drain" in nodes
        # The group's deployments drawn as a timeline: its create, successful.
        with secure.client() as client:
            found = client.deployments(True).deployments
        [created] = [d for d in found if d.service == "hello" and d.kind == "create"]
        group = browser.get(_group_url("hello")).text
        assert '<svg class="timeline"' in group
        assert f'class="tl-successful" data-deployment="{created.id}"' in group
        assert "v1 create · successful" in group
        registry = browser.get("/ui/registry").text
        assert task_id in registry and "logs" in registry


def _tasks(cluster: Cluster) -> list:  # type: ignore[type-arg]
    with cluster.client() as client:
        return [t for t in client.tasks().tasks if t.state == "running"]


def test_the_stream_says_something_changed_within_a_second(secure: Cluster) -> None:
    seen: list[tuple[float, str]] = []
    with _signed_in(secure, secure.admin_token or "") as browser:

        def read() -> None:
            with browser.stream("GET", "/ui/stream", timeout=30) as stream:
                for line in stream.iter_lines():
                    seen.append((time.monotonic(), line))
                    if sum(line.startswith("event: changed") for _, line in seen) >= 2:
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_until(
            lambda: any(line == "event: changed" for _, line in seen), 10, "the first message"
        )
        with secure.client() as client:
            asked = time.monotonic()
            client.scale("hello", 2)  # a write even when nothing changes: a new revision
            client.deploy(
                json.dumps({"deploy": {"stream-probe": {**SPEC, "instances": 0}}}),
                "application/json",
            )
        reader.join(10)
        changed = [at for at, line in seen if line == "event: changed"]
        assert len(changed) >= 2 and changed[1] - asked < 1.0, seen
        with secure.client() as client:
            client.remove("stream-probe")


def test_a_tasks_logs_come_through_the_session(secure: Cluster) -> None:
    task_id = next(t.id for t in _tasks(secure) if t.service == "hello")
    with _signed_in(secure, secure.admin_token or "") as browser:
        logs = browser.get(f"/ui/tasks/{task_id}/logs", params={"tail": 10})
        assert logs.status_code == 200 and f"hello from {task_id}" in logs.text
    with _browser(secure) as anonymous:
        assert anonymous.get(f"/ui/tasks/{task_id}/logs").status_code == 401
        assert anonymous.get(f"/ui/tasks/{task_id}/charts").status_code == 401


def test_a_tasks_cpu_and_memory_are_drawn_from_its_agents_samples(secure: Cluster) -> None:
    task_id = next(t.id for t in _tasks(secure) if t.service == "hello")
    with _signed_in(secure, secure.admin_token or "") as browser:

        def drawn() -> str | None:
            answer = browser.get(f"/ui/tasks/{task_id}/charts")
            assert answer.status_code == 200, answer.text
            return answer.text if answer.text.count("<polyline") == 2 else None

        charts = wait_until(drawn, 20, "two charts drawn from the samples")
        assert "MiB" in charts and "cores" in charts
        missing = browser.get("/ui/tasks/no-such-task/charts")
        assert missing.status_code == 200 and "No samples: no task" in missing.text


def test_the_deploy_form_plans_names_bad_fields_and_applies(secure: Cluster) -> None:
    with _signed_in(secure, secure.admin_token or "") as browser:
        csrf = _csrf(browser.get("/ui/deploy").text)
        bad = "deploy:\n  formed:\n    image: x\n    instances: -1\n"
        refused = browser.post(
            "/ui/deploy", data={"document": bad, "csrf": csrf, "action": "apply"}
        )
        assert refused.status_code == 422 and "deploy.formed.instances" in refused.text
        document = json.dumps({"deploy": {"formed": {**SPEC, "instances": 1}}})
        plan = browser.post(
            "/ui/deploy", data={"document": document, "csrf": csrf, "action": "plan"}
        )
        assert plan.status_code == 200 and "Plan (nothing applied yet)" in plan.text
        with secure.client() as client:
            assert not [g for g in client.groups().groups if g.service == "formed"]
        applied = browser.post(
            "/ui/deploy", data={"document": document, "csrf": csrf, "action": "apply"}
        )
        assert applied.status_code == 200 and "Applied" in applied.text
    with secure.client() as client:
        wait_until(
            lambda: any(t.state == "running" for t in client.tasks("formed").tasks),
            60,
            "formed running",
        )
        client.remove("formed")


def test_revoking_the_token_ends_its_sessions(secure: Cluster) -> None:
    reader = _token(secure, "ui-revoked", [Scope.READ])
    with _signed_in(secure, reader) as browser:
        assert browser.get("/ui/").status_code == 200
        with secure.client() as client:
            access = AccessApi(client)
            access.revoke_token(
                next(t.id for t in access.tokens().tokens if t.name == "ui-revoked")
            )
        wait_until(lambda: browser.get("/ui/").status_code == 303, 10, "the session refused")
