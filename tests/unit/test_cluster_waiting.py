"""``theseus.cluster.waiting.wait_until``: the value it returns, its deadline and its error."""

from __future__ import annotations

import time

import pytest

from theseus.cluster.waiting import WaitTimeout, wait_until


def test_returns_the_first_truthy_value() -> None:
    answers = iter([None, [], 0, ["found"]])
    assert wait_until(lambda: next(answers), 5, "an answer", interval=0) == ["found"]


def test_names_what_it_waited_for_and_the_last_value_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        wait_until(list, 0.2, "the list to fill", interval=0.05)
    assert 0.2 <= time.monotonic() - started < 2
    assert str(caught.value) == "timed out after 0.2 s waiting for the list to fill (last: [])"
    assert (caught.value.what, caught.value.last) == ("the list to fill", [])
    assert isinstance(caught.value, TimeoutError)


def test_checks_once_even_without_time_and_once_more_at_the_deadline() -> None:
    calls: list[float] = []

    def check() -> bool:
        calls.append(time.monotonic())
        return False

    with pytest.raises(WaitTimeout):
        wait_until(check, 0, "nothing")
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(WaitTimeout):
        wait_until(check, 0.1, "nothing", interval=1.0)  # the interval is cut at the deadline
    assert len(calls) == 2 and calls[1] - calls[0] < 0.5


def test_an_error_of_the_check_ends_the_wait() -> None:
    def check() -> bool:
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until(check, 10, "never")
