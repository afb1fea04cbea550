"""The watcher: one long-poll for all WATCHES, set differences, no lost events."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.fake_agent import FakeAgent
from tests.kit.wait import wait_until
from theseus import guestutils, watcher

FAST = {"wait": 2.0, "min_backoff": 0.01, "max_backoff": 0.05}
Starter = Callable[..., watcher.WatcherThread]


class Calls:
    """A callback recording ``(service, delta)``; ``wait_for`` blocks with a deadline."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.cond = threading.Condition()

    def __call__(self, service: str, delta: int) -> None:
        with self.cond:
            self.calls.append((service, delta))
            self.cond.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, int]]:
        # Not a poll (``tests/kit/wait.py``): every call notifies ``cond``.
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.calls) >= count, timeout):
                raise AssertionError(f"expected {count} calls, got {self.calls}")
            return list(self.calls)


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAgent]:
    fake = FakeAgent(str(tmp_path / "agent.sock"))
    fake.set_instances("ingestor", "ingestor.1", "ingestor.2")
    fake.start()
    monkeypatch.setenv("THESEUS_DISCOVERY", fake.address)
    yield fake
    fake.stop()


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def start(calls: Calls) -> Iterator[Starter]:
    """``start(services, **options)`` → a started watcher thread, stopped after the test."""
    threads: list[watcher.WatcherThread] = []

    def _start(services: list[str], **options: object) -> watcher.WatcherThread:
        callback = options.pop("callback", calls)
        settings: dict[str, Any] = {**FAST, **options}
        thread = watcher.start_watcher(services, callback, **settings)  # type: ignore[arg-type]
        threads.append(thread)
        return thread

    yield _start
    for thread in threads:
        thread.stop(5)
        assert not thread.is_alive()


def test_watched_services_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHES", " ingestor, ,tester,haproxy,tester,")
    assert watcher.watched_services() == ["ingestor", "tester", "haproxy"]
    monkeypatch.delenv("WATCHES")
    assert watcher.watched_services() == []
    assert (watcher.MIN_BACKOFF, watcher.MAX_BACKOFF) == (0.1, 5.0)


def test_baseline_is_silent_then_adds_and_removes(
    agent: FakeAgent, calls: Calls, start: Starter
) -> None:
    start(["ingestor"])
    agent.wait_for_poll(min_index=2)  # baseline taken, the next long-poll is held
    assert calls.calls == []
    assert agent.watches[0][1] == 0
    agent.set_instances("ingestor", "ingestor.1", "ingestor.2", "ingestor.3", "ingestor.4")
    assert calls.wait_for(1) == [("ingestor", 2)]
    agent.set_instances("ingestor", "ingestor.1", "ingestor.3", "ingestor.4")
    assert calls.wait_for(2) == [("ingestor", 2), ("ingestor", -1)]


def test_added_and_removed_in_one_answer_give_two_calls(
    agent: FakeAgent, calls: Calls, start: Starter
) -> None:
    start(["ingestor"])
    agent.wait_for_poll(min_index=2)
    agent.set_instances("ingestor", "ingestor.1", "ingestor.5", "ingestor.6")  # -2 +2... of 2
    assert calls.wait_for(2) == [("ingestor", 2), ("ingestor", -1)]
    agent.set_instances("ingestor", "ingestor.7", "ingestor.8", "ingestor.9")  # same count
    assert calls.wait_for(4)[2:] == [("ingestor", 3), ("ingestor", -3)]


def test_one_long_poll_for_all_services(agent: FakeAgent, calls: Calls, start: Starter) -> None:
    start(["ingestor", "haproxy"])
    agent.wait_for_poll(min_index=2)
    assert {tuple(services) for services, _, _ in agent.watches} == {("ingestor", "haproxy")}
    agent.set_instances("haproxy", "haproxy.1")
    assert calls.wait_for(1) == [("haproxy", 1)]
    agent.set_groups("other", [])  # an unwatched service changes: nothing
    agent.set_instances("ingestor", "ingestor.1")
    assert calls.wait_for(2) == [("haproxy", 1), ("ingestor", -1)]


def test_unknown_service_then_appears(agent: FakeAgent, calls: Calls, start: Starter) -> None:
    start(["cassandra"])
    agent.wait_for_poll(min_index=2)
    agent.set_instances("cassandra", "c.1", "c.2", "c.3")
    assert calls.wait_for(1) == [("cassandra", 3)]


def test_callback_exception_is_logged_and_the_watcher_goes_on(
    agent: FakeAgent, calls: Calls, start: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    def flaky(service: str, delta: int) -> None:
        calls(service, delta)
        if len(calls.calls) == 1:
            raise RuntimeError("user code broke")

    caplog.set_level(logging.INFO, logger="theseus.watcher")
    start(["ingestor"], callback=flaky)
    agent.wait_for_poll(min_index=2)
    agent.set_instances("ingestor", "ingestor.1", "ingestor.2", "ingestor.3")
    calls.wait_for(1)
    agent.set_instances("ingestor", "ingestor.1")
    assert calls.wait_for(2) == [("ingestor", 1), ("ingestor", -2)]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "service_change('ingestor', 1) raised" in errors[0].getMessage()
    assert "service_change('ingestor', 1)" in [r.getMessage() for r in caplog.records]


def test_agent_restart_loses_no_change(
    agent: FakeAgent, calls: Calls, start: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="theseus.watcher")
    start(["ingestor"])
    agent.wait_for_poll(min_index=2)
    agent.stop()  # the held long-poll is cut; reconnects are refused
    agent.set_instances("ingestor", "ingestor.2", "ingestor.3", "ingestor.4")
    wait_until(
        lambda: any("watch failed" in r.getMessage() for r in caplog.records),
        5,
        "the watcher to notice the agent going away",
        interval=0.01,
    )
    agent.start()
    assert calls.wait_for(2) == [("ingestor", 2), ("ingestor", -1)]
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_http_errors_are_retried(agent: FakeAgent, calls: Calls, start: Starter) -> None:
    agent.errors.extend([500, 503, 400])
    start(["ingestor"])
    agent.wait_for_poll(min_index=2)
    agent.set_instances("ingestor")
    assert calls.wait_for(1) == [("ingestor", -2)]
    assert sum(path.startswith("/v1/registry/watch") for path in agent.paths) >= 5


def test_stop_aborts_a_held_long_poll(agent: FakeAgent, start: Starter) -> None:
    thread = start(["ingestor"], wait=30.0)
    agent.wait_for_poll(min_index=2)
    began = time.monotonic()
    thread.stop(5)
    assert not thread.is_alive() and time.monotonic() - began < 2


def test_default_callback_imports_watch_methods_and_retries(
    agent: FakeAgent,
    start: Starter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = tmp_path / "user"
    code.mkdir()
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, "watch_methods", raising=False)
    start(["ingestor"], callback=None)
    agent.wait_for_poll(min_index=2)
    agent.set_instances("ingestor", "ingestor.1")  # no watch_methods yet: logged, not fatal
    wait_until(
        lambda: any("cannot import watch_methods" in r.getMessage() for r in caplog.records),
        5,
        "the failed import logged",
        interval=0.01,
    )
    (code / "watch_methods.py").write_text(
        "calls = []\ndef service_change(service, delta):\n    calls.append((service, delta))\n"
    )
    agent.set_instances("ingestor", "ingestor.1", "ingestor.2", "ingestor.3")
    wait_until(
        lambda: "watch_methods" in sys.modules and sys.modules["watch_methods"].calls,
        5,
        "watch_methods imported and called",
        interval=0.01,
    )
    assert sys.modules["watch_methods"].calls == [("ingestor", 2)]


def test_main_without_watches_exits_0(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WATCHES", raising=False)
    caplog.set_level(logging.INFO, logger="theseus.watcher")
    assert watcher.main([]) == 0
    assert "WATCHES is not set; not watching anything" in caplog.messages
    monkeypatch.setenv("WATCHES", " , ")
    assert watcher.main([]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "theseus.watcher"],
        env={k: v for k, v in os.environ.items() if k != "WATCHES"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WATCHES is not set; not watching anything" in result.stderr


def test_python_m_watcher_top_level_calls_watch_methods(agent: FakeAgent, tmp_path: Path) -> None:
    """The image way: both files and watch_methods.py in a directory, ``python -m watcher``."""
    image = tmp_path / "image"
    image.mkdir()
    for name in ("guestutils.py", "watcher.py"):
        shutil.copy(Path(guestutils.__file__).parent / name, image / name)
    (image / "watch_methods.py").write_text(
        "def service_change(service, delta):\n    print('change', service, delta, flush=True)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-E", "-s", "-S", "-u", "-m", "watcher"],
        cwd=image,
        env={
            "PATH": os.environ.get("PATH", ""),
            "WATCHES": "ingestor",
            "THESEUS_DISCOVERY": agent.address,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in process.stdout or []:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        agent.wait_for_poll(min_index=2, timeout=10)
        agent.set_instances("ingestor", "ingestor.1", "ingestor.2", "ingestor.3")
        assert lines.get(timeout=5) == "change ingestor 1\n"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "service_change('ingestor', 1)" in stderr
