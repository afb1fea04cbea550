"""A reconcile pass in a forked child: the answer, the child's failures, and the registry
encoding memo filed under the parent's own objects."""

from __future__ import annotations

import os
import signal

import pytest

from tests.kit.builders import apply_plan, make_group, make_node, make_state, plan_of
from theseus.model.registry import group_prefix
from theseus.model.state import ClusterState
from theseus.reconciler.reconcile import reconcile
from theseus.reconciler.registry import EncodingMemo
from theseus.server import pass_process
from theseus.server.pass_process import (
    PassProcessFailed,
    forked_pass,
    run_forked,
    worth_a_child,
)
from theseus.store.keys import task_key


def test_the_child_computes_and_the_parent_gets_the_answer() -> None:
    parent = os.getpid()
    (child, value), peak_rss = run_forked(lambda: (os.getpid(), [1, 2, 3]))
    assert child != parent and value == [1, 2, 3]
    assert peak_rss > 1024 * 1024  # at least a Python interpreter's pages


def test_an_exception_in_the_child_is_raised_in_the_parent() -> None:
    def fails() -> None:
        raise ValueError("no good")

    with pytest.raises(ValueError, match="no good"):
        run_forked(fails)


def test_a_child_that_dies_without_an_answer_is_a_failure() -> None:
    def dies() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(PassProcessFailed, match="without an answer"):
        run_forked(dies)


def running_cluster() -> ClusterState:
    """Two groups whose tasks all run and are registered, as after a deploy."""
    state = make_state(
        groups=[make_group("web", instances=3), make_group("db", instances=2)],
        nodes=[make_node(f"n{i}") for i in range(3)],
    )
    apply_plan(state, plan_of(state))
    state.registry.update(reconcile(state, 100.0).registry_puts)
    return state


def test_a_forked_pass_plans_what_a_pass_in_this_process_plans() -> None:
    state = make_state(groups=[make_group("web", instances=4)], nodes=[make_node("n1")])
    result = forked_pass(state, 100.0, {})
    here = reconcile(state, 100.0)
    assert len(result.plan.task_puts) == len(here.task_puts) == 4
    assert {t.node for t in result.plan.task_puts.values()} == {"n1"}
    # Encoded for the commit, each record behind its key for the cache.
    task_keys = {task_key(task_id) for task_id in result.plan.task_puts}
    assert task_keys <= {op.key for op in result.encoded.ops}
    assert all(
        result.encoded.expected[task_key(t.id)].record is t for t in result.plan.task_puts.values()
    )


def test_a_forked_pass_keeps_the_scope_it_was_given() -> None:
    """Scoped to one group (the other one's registry entries gone from the view, as a full
    pass would see and put back): the child writes the scoped group's entries only, as the
    same pass in this process does."""
    state = running_cluster()
    web, db = make_group("web").group_key, make_group("db").group_key
    state.registry.clear()
    only = frozenset({web.key})
    result = forked_pass(state, 100.0, {}, only=only)
    here = reconcile(state, 100.0, only=only)
    assert result.plan.registry_puts
    assert set(result.plan.registry_puts) == set(here.registry_puts)
    assert all(key.startswith(group_prefix(web)) for key in result.plan.registry_puts)
    full = reconcile(state, 100.0).registry_puts
    assert any(key.startswith(group_prefix(db)) for key in full)


def test_the_memo_comes_back_under_the_parents_objects() -> None:
    state = running_cluster()
    memo: EncodingMemo = {}
    result = forked_pass(state, 100.0, memo)
    assert result.memo_changed and not result.memo_dropped
    # Every entry points at the very records the parent holds: the next pass reuses them.
    assert len(memo) == len(state.tasks) + len(state.groups)
    for encoded in memo.values():
        assert any(
            encoded.source is record for record in (*state.tasks.values(), *state.groups.values())
        )
        assert encoded.node is None or encoded.node is state.nodes[encoded.node.name]
    # So a second pass in the child encodes nothing again, and the memo stays as it was.
    kept = dict(memo)
    again = forked_pass(state, 100.0, memo)
    assert again.memo_changed == {} and again.memo_dropped == []
    assert all(memo[key] is kept[key] for key in kept)


def test_entries_of_tasks_that_are_gone_leave_the_memo() -> None:
    state = running_cluster()
    memo: EncodingMemo = {}
    forked_pass(state, 100.0, memo)
    gone = next(task for task in state.tasks.values() if task.service == "db")
    state.index_task(state.tasks.pop(gone.id), None)
    state.statuses.pop(gone.id)
    result = forked_pass(state, 100.0, memo)
    assert [key for key in result.memo_dropped if gone.id in key]
    assert not [key for key in memo if gone.id in key]


def test_only_a_pass_with_many_placements_to_make_is_worth_a_child() -> None:
    nodes = [make_node(f"n{i}", cpus=1000.0, mem=1e7) for i in range(3)]
    assert worth_a_child(make_state(groups=[make_group("web", instances=500)], nodes=nodes))
    assert not worth_a_child(make_state(groups=[make_group("web", instances=499)], nodes=nodes))
    # Once placed and running, the same group's passes stay in the thread.
    state = make_state(groups=[make_group("web", instances=500)], nodes=nodes)
    apply_plan(state, plan_of(state))
    assert len(state.tasks) == 500 and not worth_a_child(state)
    # A scoped pass counts the unplaced tasks of its own groups only: it places no other.
    api = make_group("api", instances=300)
    state = make_state(groups=[make_group("web", instances=300), api], nodes=nodes)
    unplaced = plan_of(state).task_puts.values()
    for task in unplaced:  # created, not yet placed: what a pass without room leaves
        task = task.model_copy(update={"node": None, "host_ports": {}})
        state.tasks[task.id] = task
        state.index_task(None, task)
    assert worth_a_child(state) and worth_a_child(state, frozenset(state.groups))
    assert not worth_a_child(state, frozenset({api.group_key.key}))


def test_a_pass_that_looks_at_very_many_tasks_is_worth_a_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Placing nothing, a pass over 50,000 tasks still held the GIL for seconds in the
    leader's thread: from ``CHILD_MIN_TASKS`` tasks in its scope looked at in full on, it goes
    to a child."""
    monkeypatch.setattr(pass_process, "CHILD_MIN_TASKS", 400)
    nodes = [make_node(f"n{i}", cpus=1000.0, mem=1e7) for i in range(3)]
    state = make_state(
        groups=[make_group("web", instances=300), make_group("api", instances=200)], nodes=nodes
    )
    apply_plan(state, plan_of(state))
    assert len(state.tasks) == 500
    assert worth_a_child(state)  # a full pass
    key_of = {group.service: key for key, group in state.groups.items()}
    web, api = key_of["web"], key_of["api"]
    assert worth_a_child(state, frozenset({web, api}))
    assert not worth_a_child(state, frozenset({web}))  # 300 tasks: the thread
    # Looked at lightly (only statuses of live tasks changed), a group's tasks do not count,
    # however many started: a deploy's passes that register its started tasks stay in the
    # thread, where they cost a child's fraction (the module's docstring).
    started = frozenset(sorted(state.tasks_by_group[web])[:50])
    assert not worth_a_child(state, frozenset({web, api}), {web: started, api: frozenset()})
    every = {key: frozenset(state.tasks_by_group[key]) for key in (web, api)}
    assert not worth_a_child(state, frozenset({web, api}), every)
    # A group looked at in full beside light ones counts all its tasks.
    monkeypatch.setattr(pass_process, "CHILD_MIN_TASKS", 300)
    assert worth_a_child(state, frozenset({web, api}), {api: every[api]})
    assert not worth_a_child(state, frozenset({web, api}), {web: every[web]})
