"""``theseus registry-login``, ``registry-logout`` and ``registry-logins`` against a fake
server: the password goes in the request's body only (from stdin; never an argument, never
printed), a host Docker would not take for a registry is refused before anything is sent."""

from __future__ import annotations

import json

import httpx

from tests.kit.cli import invoke

PASSWORD = "s3cret-registry-pw"
INFO = {"host": "r.example:5000", "username": "u", "created_at": 0.0, "created_by": "admin"}


def test_login_sends_the_password_from_stdin_and_never_prints_it() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=INFO)

    result = invoke(
        handler,
        "registry-login", "r.example:5000", "-u", "u", "--password-stdin",
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    (request,) = seen
    assert (request.method, request.url.path) == ("PUT", "/v1/acl/registry-logins/r.example:5000")
    assert json.loads(request.content) == {"username": "u", "password": PASSWORD}


def test_login_without_a_terminal_needs_password_stdin() -> None:
    result = invoke(lambda r: httpx.Response(500), "registry-login", "r.example:5000", "-u", "u")
    assert result.exit_code == 1
    assert "--password-stdin" in result.output


def test_a_host_docker_would_not_take_for_a_registry_is_refused() -> None:
    result = invoke(
        lambda r: httpx.Response(500), "registry-login", "myhost", "-u", "u", "--password-stdin",
        input="pw\n",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "would not be taken for a registry" in result.output


def test_logins_are_listed_without_passwords() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/acl/registry-logins"
        return httpx.Response(200, json={"logins": [INFO]})

    result = invoke(handler, "registry-logins")
    assert result.exit_code == 0 and "r.example:5000" in result.output
    result = invoke(lambda r: httpx.Response(200, json=INFO), "registry-logout", "r.example:5000")
    assert (
        result.exit_code == 0 and "removed the login for registry r.example:5000" in result.output
    )
