"""Bad and large input on a real server (uvicorn, etcd): a body over the default limit
(4 MiB) is refused with 413 before it is read, whether its length is declared or it is sent
in chunks; a large valid document is decoded while other calls are answered; a registry
watch of no service is a 400 naming ``services``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import yaml

from tests.kit.cluster import Cluster
from tests.kit.wait import wait_until

LIMIT = 4 * 1024 * 1024


def test_a_body_over_the_limit_is_refused_before_it_is_read(cluster: Cluster) -> None:
    declared = b'{"deploy": {"x": {"image": "' + b"x" * (20 * 1024 * 1024) + b'"}}}'
    with httpx.Client(base_url=cluster.server_url, timeout=30) as client:
        answer = client.post("/deploy", content=declared)
        assert answer.status_code == 413
        assert set(answer.json()) == {"message", "details"}
        assert f"at most {LIMIT} bytes" in answer.json()["message"]
        streamed = client.post("/deploy", content=chunks(LIMIT + 1))
        assert streamed.status_code == 413, streamed.text
        assert f"at most {LIMIT} bytes" in streamed.json()["message"]
        assert client.get("/v1/health").status_code == 200
        assert client.get("/v1/groups").json()["groups"] == []


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body without a Content-Length (httpx sends it chunked)."""
    yield b'{"deploy": {"x": {"image": "'
    sent = 0
    while sent < total:
        sent += size
        yield b"x" * size
    yield b'"}}}'


def test_health_is_answered_while_a_large_document_is_decoded(cluster: Cluster) -> None:
    # About 1.5 MiB of block-style YAML, all valid: groups removed that do not exist.
    remove = {f"service-{i:04d}": {"labels": [f"l-{i}-{j}" for j in range(80)]} for i in range(999)}
    document = yaml.safe_dump({"remove": remove}).encode()
    assert len(document) > 1_000_000
    outcome: dict[str, object] = {}

    def deploy() -> None:
        with httpx.Client(base_url=cluster.server_url, timeout=120) as client:
            started = time.monotonic()
            answer = client.post(
                "/deploy", content=document, headers={"content-type": "application/x-yaml"}
            )
            outcome["took"] = time.monotonic() - started
            outcome["status"] = answer.status_code

    deploying = threading.Thread(target=deploy)
    latencies: list[float] = []
    with httpx.Client(base_url=cluster.server_url, timeout=120) as client:
        deploying.start()

        def health_answered_until_deployed() -> bool:
            started = time.monotonic()
            assert client.get("/v1/health").status_code == 200
            latencies.append(time.monotonic() - started)
            return not deploying.is_alive()

        wait_until(health_answered_until_deployed, 120, "the deploy to be answered")
    deploying.join()
    assert outcome["status"] == 200
    took = outcome["took"]
    assert isinstance(took, float)
    print(f"deploy {took:.2f}s, {len(latencies)} health calls, max {max(latencies):.3f}s")
    # Decoded on the server's loop, a health call sent while it decodes would wait for the
    # whole decoding: most of the deploy's time. Off the loop, none waits anywhere near it.
    assert len(latencies) >= 3
    assert max(latencies) < took / 2


def test_a_registry_watch_of_no_service_is_a_400_naming_services(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.server_url, timeout=10) as client:
        answer = client.get("/v1/registry/watch", params={"index": 10172, "services": ""})
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("services:")
