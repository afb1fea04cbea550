"""What the server's reads of a big state cost, pure code (no I/O): every group's view as
``GET /v1/groups`` makes it, counted from the tasks or from the counts the cache keeps
(``theseus.server.group_tally``), what keeping them costs per status change, and a copy of
the state (``ClusterState.copy``, what a snapshot costs), and the tasks of ``GET /v1/tasks``,
whole or a page (``theseus.server.routes.tasks.page_of_tasks``).

    .venv/bin/python bench/group_views.py [--nodes 5000] [--groups 500] [--per-group 100]

Every group's view is made again each round (the memo of the server's route would keep the
unchanged ones: during a deploy every group changes between two reads). Prints the median of
7 rounds.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from reconcile_pass import build, timed

from theseus.model.state import ClusterState
from theseus.model.tasks import TaskState, TaskStatus
from theseus.reconciler.reconcile import reconcile
from theseus.server.group_tally import GroupTallies
from theseus.server.routes.tasks import page_of_tasks
from theseus.server.views import group_info
from theseus.store import keys

ROUNDS = 7
CHANGES = 20_000
PAGE = 500


class Holder:
    def __init__(self, state: ClusterState) -> None:
        self.state = state


def median_ms(call: Callable[[], object]) -> float:
    return 1000 * timed(call, ROUNDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--per-group", type=int, default=100)
    args = parser.parse_args()
    state = build(args.nodes, args.groups, args.per_group)
    state.tasks.update(reconcile(state, 100.0).task_puts)
    for task in state.tasks.values():
        state.statuses[task.id] = TaskStatus(
            task_id=task.id, state=TaskState.RUNNING, started_at=99.0, updated_at=99.0
        )
        state.index_task(None, task)
    tallies = GroupTallies(Holder(state))
    tallies.reloaded(state.revision)
    groups = sorted(state.groups.items())

    def counted() -> list[str]:
        return [group_info(state, g, group).model_dump_json() for g, group in groups]

    def kept() -> list[str]:
        return [group_info(state, g, group, tallies.of(g)).model_dump_json() for g, group in groups]

    assert counted() == kept()
    tasks = len(state.tasks)
    print(f"{args.nodes} nodes, {tasks} running tasks in {args.groups} groups")
    print(f"  every group's view, counted from the tasks: {median_ms(counted):8.1f} ms")
    print(f"  every group's view, from the kept counts:   {median_ms(kept):8.1f} ms")
    ids = list(state.tasks)
    started = time.perf_counter()
    for n in range(CHANGES):  # reports as the cache applies them: starting <-> running
        task_id = random.choice(ids)
        before = state.statuses[task_id]
        after = TaskStatus(
            task_id=task_id,
            state=TaskState.RUNNING if n % 2 else TaskState.STARTING,
            started_at=99.0,
            updated_at=100.0 + n,
        )
        state.statuses[task_id] = after
        tallies.changed(keys.status_key(task_id), n, before, after, None)
    per_change = (time.perf_counter() - started) / CHANGES
    assert counted() == kept()
    print(f"  keeping the counts, per status change:      {per_change * 1e6:8.1f} µs")
    print(f"  a copy of the state (a snapshot):           {median_ms(state.copy):8.1f} ms")
    middle = sorted(state.tasks.values(), key=lambda t: (t.service, t.created_at, t.id))[
        len(state.tasks) // 2
    ]
    place = (middle.service, middle.created_at, middle.id)

    def whole_list() -> object:
        return page_of_tasks(state, None, None, False, None, None)

    def first_page() -> object:
        return page_of_tasks(state, None, None, False, None, PAGE)

    def middle_page() -> object:
        return page_of_tasks(state, None, None, False, place, PAGE)

    print(f"  GET /v1/tasks, the whole list, sorted:      {median_ms(whole_list):8.1f} ms")
    print(f"  GET /v1/tasks, the first page of {PAGE}:      {median_ms(first_page):8.1f} ms")
    print(f"  GET /v1/tasks, a page of {PAGE} in the middle: {median_ms(middle_page):8.1f} ms")


if __name__ == "__main__":
    main()
