"""The pure rules of image pulls (``theseus.agent.drivers.pull_rules``): Docker's rule for a
registry host, when to pull, the reasons a failed pull shows (from Docker's own messages, as
measured against docker-registry 2.8 and dockerd 20.10), and progress sums over layers."""

from __future__ import annotations

import pytest

from theseus.agent.drivers.pull_rules import (
    PullProgress,
    RegistryAuth,
    pull_failure,
    registry_host,
    should_pull,
    timed_out,
)
from theseus.api.access import registry_host_problem


@pytest.mark.parametrize(
    ("image", "host"),
    [
        ("registry.example:5000/app:1", "registry.example:5000"),
        ("198.18.0.2:5000/theseus/busybox:latest", "198.18.0.2:5000"),
        ("localhost/app", "localhost"),
        ("localhost:5000/app@sha256:abc", "localhost:5000"),
        ("registry.example/team/app", "registry.example"),
        ("theseus/busybox:latest", None),
        ("busybox", None),
        ("busybox:1.36", None),
        ("library/busybox", None),
    ],
)
def test_a_registry_host_is_named_as_docker_names_it(image: str, host: str | None) -> None:
    assert registry_host(image) == host


def test_what_is_pulled_follows_the_policy_and_the_agents_permission() -> None:
    qualified, short = "r.example:5000/app:1", "theseus/app:1"
    assert should_pull(qualified, "if_not_present", present=False, allow_unqualified=False)
    assert not should_pull(qualified, "if_not_present", present=True, allow_unqualified=False)
    assert should_pull(qualified, "always", present=True, allow_unqualified=False)
    # No registry host: never, unless the agent allows it; then as the policy says.
    assert not should_pull(short, "always", present=False, allow_unqualified=False)
    assert should_pull(short, "if_not_present", present=False, allow_unqualified=True)
    assert not should_pull(short, "if_not_present", present=True, allow_unqualified=True)


IMAGE = "127.0.0.1:5000/theseus/nope:latest"


def test_docker_errors_become_the_reasons_a_task_shows() -> None:
    missing = (
        "manifest for 127.0.0.1:5000/theseus/nope:latest not found: manifest unknown: "
        "manifest unknown"
    )
    assert pull_failure(IMAGE, 404, missing, had_credentials=True) == (
        f"image not found in registry 127.0.0.1:5000: {IMAGE}"
    )
    unauthorized = "unauthorized: authentication required"
    refused = pull_failure(IMAGE, 500, unauthorized, had_credentials=True)
    assert refused == f"registry 127.0.0.1:5000 refused the credentials for {IMAGE}"
    none = pull_failure(IMAGE, 500, unauthorized, had_credentials=False)
    assert "requires credentials" in none and "theseus registry-login 127.0.0.1:5000" in none
    dial = 'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused'
    image = "127.0.0.1:1/theseus/busybox:latest"
    unreachable = pull_failure(image, 500, dial, had_credentials=True)
    assert unreachable == f"registry 127.0.0.1:1 unreachable: {dial}"
    x509 = 'Get "https://198.18.0.2:5000/v2/": x509: certificate signed by unknown authority'
    assert pull_failure("198.18.0.2:5000/a", 500, x509, had_credentials=True).startswith(
        "registry 198.18.0.2:5000 unreachable: "
    )
    assert pull_failure(IMAGE, 500, "something odd", had_credentials=True) == (
        f"pull of {IMAGE} from registry 127.0.0.1:5000 failed: something odd"
    )
    assert timed_out(IMAGE, 300.0) == f"pull of {IMAGE} timed out after 300 s"


def test_a_secret_in_dockers_text_is_scrubbed() -> None:
    reason = pull_failure(
        IMAGE, 500, "weird: s3cr3t-pw echoed", had_credentials=True, secrets=("s3cr3t-pw",)
    )
    assert "s3cr3t-pw" not in reason and "***" in reason


def test_credentials_hide_the_password_from_repr() -> None:
    auth = RegistryAuth("theseus", "s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(auth)
    assert auth.docker_auth() == {"username": "theseus", "password": "s3cr3t-pw"}


def downloading(layer: str, current: int, total: int) -> dict[str, object]:
    detail = {"current": current, "total": total}
    return {"status": "Downloading", "id": layer, "progressDetail": detail}


def test_progress_sums_bytes_over_layers() -> None:
    progress = PullProgress()
    image = "r.example/app:1"
    assert progress.text(image) == f"pulling {image}"
    assert progress.feed({"status": "Pulling fs layer", "id": "a"}) is False
    assert progress.feed(downloading("a", 1_000_000, 4_000_000))
    progress.feed(downloading("b", 500_000, 6_000_000))
    assert (progress.downloaded, progress.size) == (1_500_000, 10_000_000)
    assert progress.text(image) == f"pulling {image}: 1.5 of 10.0 MB"
    progress.feed({"status": "Download complete", "id": "a"})
    assert progress.downloaded == 4_500_000
    # Extraction has its own progressDetail: not downloads.
    assert not progress.feed(
        {"status": "Extracting", "id": "a", "progressDetail": {"current": 10, "total": 99}}
    )
    assert not progress.feed({"status": "Digest: sha256:..."})  # no layer


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("registry.example:5000", True),
        ("198.18.0.2:5000", True),
        ("localhost", True),
        ("registry.example", True),
        ("myhost", False),  # Docker would take myhost/app for a Docker Hub user's image
        ("https://registry.example", False),
        ("a/b", False),
        ("", False),
    ],
)
def test_only_a_registry_host_may_have_a_login(host: str, ok: bool) -> None:
    assert (registry_host_problem(host) is None) is ok
