"""Theseus's local images against the real Docker Engine: ``theseus images build`` builds
busybox, python-base and example (the second time without rebuilding anything); python-base's
Python runs the standard library (every extension module loads: its shared libraries are all
there) and imports Theseus's guest modules; the example image logs its identity, answers HTTP
with its container name, reports a watched service's change through ``watch_methods`` (from a
fake discovery endpoint on the default unix socket) and exits 0 at once on ``docker stop``.

Every container is labelled ``theseus.test=images`` and force-removed after its test, also
when the test fails. Nothing is pulled and nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from tests.kit.fake_agent import FakeAgent
from tests.kit.wait import wait_until
from theseus.images.build import BuiltImage, build_images
from theseus.images.tags import EXAMPLE_IMAGE, PYTHON_BASE_IMAGE

pytestmark = pytest.mark.integration

LABEL = {"theseus.test": "images"}


async def build_all() -> list[BuiltImage]:
    return [image async for image in build_images()]


@pytest.fixture(scope="module")
def built(docker_client: docker.DockerClient) -> list[BuiltImage]:
    return asyncio.run(build_all())


Run = Callable[..., Container]


@pytest.fixture
def run_container(docker_client: docker.DockerClient) -> Iterator[Run]:
    """Start a detached container (labelled, uniquely named); all are removed afterwards."""
    started: list[Container] = []

    def run(image: str, command: list[str] | None = None, **kwargs: Any) -> Container:
        container = docker_client.containers.run(
            image,
            command,
            detach=True,
            labels=LABEL,
            name=f"theseus-images-test-{uuid.uuid4().hex[:10]}",
            **kwargs,
        )
        started.append(container)
        return container

    yield run
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def finish(container: Container, timeout: float = 60) -> tuple[int, str]:
    """Wait for ``container`` to exit; its exit code and its log (stdout and stderr)."""
    status = container.wait(timeout=timeout)
    return int(status["StatusCode"]), container.logs().decode()


def logs_contain(container: Container, text: str) -> str | None:
    logs = container.logs().decode()
    return logs if text in logs else None


def test_build_all_three_then_nothing_to_do(built: list[BuiltImage]) -> None:
    assert [image.name for image in built] == ["busybox", "python-base", "example"]
    assert all(image.id.startswith("sha256:") for image in built)
    python_base = built[1]
    assert 20_000_000 < python_base.size < 100_000_000, python_base.size
    started = time.monotonic()
    again = asyncio.run(build_all())
    assert [image.id for image in again] == [image.id for image in built]
    assert not [image.name for image in again if image.built]
    assert time.monotonic() - started < 10


def test_python_base_runs_the_standard_library(built: list[BuiltImage], run_container: Run) -> None:
    script = """
import http.client, http.server, json, logging, socket, threading, sys
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="log %(message)s")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
connection.request("GET", "/ping")
answer = json.loads(connection.getresponse().read())
assert answer == {"path": "/ping"}, answer
assert socket.gethostbyname("localhost") == "127.0.0.1"
logging.info("http %s", answer["path"])
server.shutdown()
print("stdlib ok", sys.version_info[:2])
"""
    container = run_container(PYTHON_BASE_IMAGE, ["python3", "-c", script])
    code, logs = finish(container)
    assert code == 0, logs
    assert "log http /ping" in logs
    assert "stdlib ok (3, 11)" in logs


def test_python_base_loads_every_extension_module(
    built: list[BuiltImage], run_container: Run
) -> None:
    script = """
import importlib, os, ssl, sqlite3, hashlib
names = sorted({n.split(".")[0] for n in os.listdir("/usr/lib/python3.11/lib-dynload")})
for name in names:
    importlib.import_module(name)
print(len(names), "extension modules;", ssl.OPENSSL_VERSION, "; sqlite", sqlite3.sqlite_version)
print(hashlib.sha256(b"theseus").hexdigest()[:12])
"""
    code, logs = finish(run_container(PYTHON_BASE_IMAGE, ["python3", "-c", script]))
    assert code == 0, logs
    assert "extension modules; OpenSSL" in logs
    assert "3b2dd181b910" in logs  # sha256(b"theseus"), through OpenSSL


def test_python_base_has_the_guest_modules_and_a_shell(
    built: list[BuiltImage], run_container: Run
) -> None:
    script = "import guestutils, watcher; print(guestutils.__file__, watcher.__file__)"
    code, logs = finish(run_container(PYTHON_BASE_IMAGE, ["python3", "-c", script]))
    assert code == 0, logs
    assert "/opt/theseus/lib/guestutils.py /opt/theseus/lib/watcher.py" in logs
    # `python3 -m watcher` with nothing to watch says so and exits 0.
    code, logs = finish(run_container(PYTHON_BASE_IMAGE, ["python3", "-m", "watcher"]))
    assert code == 0, logs
    assert "WATCHES is not set" in logs
    shell = 'echo "$PYTHONPATH $PYTHONUNBUFFERED $(id -un)"; ls /bin/sh /usr/bin/python3'
    code, logs = finish(run_container(PYTHON_BASE_IMAGE, ["sh", "-c", shell]))
    assert code == 0, logs
    assert "/opt/theseus/lib 1 root" in logs


def test_example_logs_identity_serves_watches_and_stops_gracefully(
    built: list[BuiltImage], run_container: Run
) -> None:
    with tempfile.TemporaryDirectory(prefix="theseus-img-") as socket_dir:
        agent = FakeAgent(str(Path(socket_dir) / "agent.sock"))
        agent.set_instances("ingestor", "ingestor-1")
        agent.start()
        try:
            container = run_container(
                EXAMPLE_IMAGE,
                environment={
                    "SERVICE_NAME": "web",
                    "CONTAINER_NAME": "web-1",
                    "CONTAINER_HOST_ADDRESS": "127.0.0.2",
                    "WATCHES": "ingestor,ghost",
                },
                volumes={socket_dir: {"bind": "/run/theseus", "mode": "rw"}},
                ports={"5000/tcp": ("127.0.0.1", None)},
            )
            wait_until(
                lambda: logs_contain(container, "started service=web container=web-1"),
                20,
                "the example logged its identity",
            )
            wait_until(
                lambda: logs_contain(container, "get_node_list('ingestor') = ['10.0.0.1']"),
                10,
                "the example logged the ingestor nodes",
            )
            # A service with no instances yet: minimum=0, so an empty list rather than an error.
            assert logs_contain(container, "get_node_list('ghost') = []")
            wait_until(lambda: logs_contain(container, "watching ingestor,ghost"), 10, "watching")

            container.reload()
            host_port = container.ports["5000/tcp"][0]["HostPort"]

            def answer() -> str | None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=2) as r:
                        return str(r.read().decode())
                except OSError:
                    return None

            assert wait_until(answer, 10, "the example answers HTTP") == "web-1\n"

            agent.wait_for_poll(timeout=10)
            agent.set_instances("ingestor", "ingestor-1", "ingestor-2", "ingestor-3")
            logs = wait_until(
                lambda: logs_contain(container, "service_change('ingestor', 2) at "),
                10,
                "watch_methods logged the change",
            )
            line = next(x for x in logs.splitlines() if x.startswith("service_change('ingestor'"))
            stamp = float(line.rsplit(" at ", 1)[1])
            assert abs(stamp - time.time()) < 60

            started = time.monotonic()
            container.stop(timeout=10)
            stopped_in = time.monotonic() - started
            code, logs = finish(container, timeout=10)
        finally:
            agent.stop()
    assert code == 0, logs
    assert stopped_in < 3, f"docker stop took {stopped_in:.1f}s"
    assert "stopping (signal)" in logs


def test_example_without_theseus_still_starts_and_stops(
    built: list[BuiltImage], run_container: Run
) -> None:
    """Outside Theseus (no variables, no discovery endpoint) every lookup fails and is logged;
    the container keeps running and stops cleanly."""
    container = run_container(EXAMPLE_IMAGE, environment={"WATCHES": "ingestor"})
    wait_until(lambda: logs_contain(container, "serving HTTP on port 5000"), 20, "serving")
    logs = container.logs().decode()
    assert "get_service_name() failed" in logs
    assert "get_node_list('ingestor') failed" in logs
    started = time.monotonic()
    container.stop(timeout=10)
    code, logs = finish(container, timeout=10)
    assert code == 0, logs
    assert time.monotonic() - started < 3
