"""``page_of_tasks`` (pure): the pages of ``GET /v1/tasks`` put together are the whole list, in
its order (service, creation time, id), whatever the page size; filters apply to every page;
a page ends the list when nothing follows it."""

from __future__ import annotations

import pytest

from tests.kit.builders import make_group, make_status, make_task
from theseus.model.state import ClusterState
from theseus.model.tasks import Desired, TaskRecord, TaskState
from theseus.server.routes.tasks import PageKey, page_of_tasks


def _state() -> ClusterState:
    state = ClusterState(revision=1)
    state.alive["n1"] = 1
    for service in ("web", "api", "db"):
        group = make_group(service)
        for n in range(4):
            # Same creation times across services, and twice within one: the id decides.
            task = make_task(group, created_at=float(n // 2), id=f"{service}.{n}")
            if n == 3:  # stopped for good: listed only with include_stopped
                task = task.model_copy(update={"desired": Desired.STOP})
                state.statuses[task.id] = make_status(task, TaskState.STOPPED)
            state.tasks[task.id] = task
            state.index_task(None, task)
    return state


def _walk(
    state: ClusterState, limit: int, service: str | None, include_stopped: bool
) -> list[TaskRecord]:
    walked: list[TaskRecord] = []
    start: PageKey | None = None
    for _ in range(len(state.tasks) + 1):  # never more pages than tasks
        page, start = page_of_tasks(state, service, None, include_stopped, start, limit)
        assert len(page) <= limit
        walked += page
        if start is None:
            return walked
    pytest.fail("the pages never ended")


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 11, 12, 13])
@pytest.mark.parametrize("service", [None, "api"])
@pytest.mark.parametrize("include_stopped", [False, True])
def test_pages_put_together_are_the_whole_list_in_order(
    limit: int, service: str | None, include_stopped: bool
) -> None:
    state = _state()
    whole, last = page_of_tasks(state, service, None, include_stopped, None, None)
    assert last is None
    assert [t.id for t in whole] == sorted(
        (t.id for t in whole), key=lambda i: (i.split(".")[0], int(i.split(".")[1]) // 2, i)
    )
    expected = 9 if not include_stopped else 12
    assert len(whole) == (expected if service is None else expected // 3)
    assert [t.id for t in _walk(state, limit, service, include_stopped)] == [t.id for t in whole]


def test_a_page_that_ends_the_list_says_so_even_when_it_is_full() -> None:
    state = _state()
    page, following = page_of_tasks(state, None, None, False, None, 9)  # all nine
    assert len(page) == 9 and following is None
    page, following = page_of_tasks(state, None, None, False, None, 8)
    assert following == (page[-1].service, page[-1].created_at, page[-1].id)
