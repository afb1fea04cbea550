"""``next_status`` builds a task's status from a report, and ``changes`` compares two statuses
without pydantic's ``==``: both must give what the pydantic way gives, for any report after any
status (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from theseus.api.schemas import TaskReport
from theseus.model.tasks import TaskState, TaskStatus
from theseus.server.reports import changes, next_status

_TEXT = st.none() | st.sampled_from(["", "exited", "HTTP 500", "é ✓"])
_CONTAINERS = st.none() | st.sampled_from(["c1", "c2"])
_TIMES = st.sampled_from([0, 1, 10.0, 10.5, 1e9])  # ints too: a JSON body may send them

reports = st.builds(
    TaskReport,
    task_id=st.just("t1"),
    state=st.sampled_from(["starting", "running", "exited", "failed", "stopped"]),
    exit_code=st.none() | st.integers(-1, 255),
    oom_killed=st.booleans(),
    message=_TEXT,
    container_id=_CONTAINERS,
    healthy=st.none() | st.booleans(),
    health_message=_TEXT,
    at=_TIMES,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(reports, min_size=1, max_size=4))
def test_a_status_is_what_validation_would_make_of_it(batch: list[TaskReport]) -> None:
    previous: TaskStatus | None = None
    for report in batch:
        status = next_status(previous, report)
        validated = TaskStatus.model_validate(status.model_dump())
        assert status == validated
        assert status.model_dump_json() == validated.model_dump_json()  # the types too
        assert isinstance(status.state, TaskState)
        assert changes(previous, status) == (status != previous)
        previous = status


def test_changes_sees_any_field() -> None:
    status = TaskStatus(task_id="t1", state=TaskState.RUNNING, updated_at=1.0)
    assert changes(None, status)
    assert not changes(status, status.model_copy())
    for field, value in [("healthy", True), ("updated_at", 2.0), ("was_healthy", True)]:
        assert changes(status, status.model_copy(update={field: value}))


def test_an_exit_code_beyond_32_bits_is_refused_by_name() -> None:
    # Task lists are written by orjson, which refuses integers beyond 64 bits: one agent's
    # wild report must not make them fail.
    with pytest.raises(ValidationError) as refused:
        TaskReport(task_id="t1", state="exited", exit_code=2**70, at=1.0)
    assert refused.value.errors()[0]["loc"] == ("exit_code",)
    assert TaskReport(task_id="t1", state="exited", exit_code=-9, at=1.0).exit_code == -9
