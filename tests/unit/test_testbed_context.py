"""The test bed puts the CLI's contexts back as they were (``tests/testbed/context.py``): the
context current before ``up``, and a context named ``testbed`` that was there before, or none.
The file is the test run's own (``THESEUS_CONFIG``, set by ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed import context
from theseus.cli import contexts
from theseus.cli.contexts import Context


@pytest.fixture(autouse=True)
def own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("THESEUS_CONFIG", str(tmp_path / "config.json"))
    yield


def bootstrap_points_the_cli_at_the_testbed() -> None:
    contexts.set_context("testbed", Context(servers=["https://198.18.0.11:5000"], token="t2"))


def test_the_context_current_before_is_current_again_and_testbed_goes() -> None:
    contexts.set_context("local", Context(servers=["http://127.0.0.1:5000"]))
    before = context.remember()
    bootstrap_points_the_cli_at_the_testbed()
    assert contexts.load().current == "testbed"

    context.restore(before)

    after = contexts.load()
    assert after.current == "local"
    assert set(after.contexts) == {"local"}


def test_a_testbed_context_there_before_is_put_back() -> None:
    old = Context(servers=["https://198.18.0.11:5000"], token="old")
    contexts.set_context("testbed", old, make_current=False)
    contexts.set_context("local", Context(servers=["http://127.0.0.1:5000"]))
    before = context.remember()
    bootstrap_points_the_cli_at_the_testbed()

    context.restore(before)

    after = contexts.load()
    assert after.current == "local"
    assert after.contexts["testbed"] == old


def test_no_contexts_before_means_none_current_after() -> None:
    before = context.remember()
    bootstrap_points_the_cli_at_the_testbed()
    context.restore(before)
    assert contexts.load().current is None
    assert contexts.load().contexts == {}
    assert context.restore(before) == "unchanged"


def test_contexts_are_restored_in_the_file_up_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A terminal's down of a bed that a test session (with its own THESEUS_CONFIG) made
    leaves the terminal's contexts alone."""
    contexts.set_context("local", Context(servers=["http://127.0.0.1:5000"]))
    before = context.remember()
    bootstrap_points_the_cli_at_the_testbed()
    assert context.environ(before)["THESEUS_CONFIG"] == before.path
    monkeypatch.setenv("THESEUS_CONFIG", str(tmp_path / "terminal.json"))
    contexts.set_context("mine", Context(servers=["http://127.0.0.1:6000"]))

    context.restore(before)

    assert contexts.load().current == "mine"
    assert contexts.load(Path(before.path)).current == "local"
