"""The agent's next step per task (pure), as a table over desired × local state."""

from __future__ import annotations

import pytest

from theseus.agent.decide import DesiredState, Local, Phase, Step, next_step, plan

P = Phase
S = Step

TABLE: list[tuple[DesiredState, Local, Step | None]] = [
    # desired run
    ("run", Local(P.NEW), S.START),
    ("run", Local(P.RUNNING, True, "running"), None),
    ("run", Local(P.RUNNING, True, None), S.REPORT),  # adopted: tell the server, don't restart
    ("run", Local(P.RUNNING, True, "starting"), S.REPORT),
    ("run", Local(P.EXITED, True, "running"), S.REPORT),  # died: report the exit
    ("run", Local(P.EXITED, True, "exited"), None),  # never restarted, container kept for logs
    ("run", Local(P.EXITED, False, "exited"), None),
    ("run", Local(P.FAILED, False, "failed"), None),  # failed starts are not retried here
    ("run", Local(P.FAILED, False, "starting"), S.REPORT),
    # desired stop
    ("stop", Local(P.NEW), S.STOP),  # never started: still needs a terminal report
    ("stop", Local(P.RUNNING, True, "running"), S.STOP),
    ("stop", Local(P.RUNNING, True, None), S.STOP),
    ("stop", Local(P.EXITED, True, "running"), S.REPORT),  # the exit first, then remove
    ("stop", Local(P.EXITED, True, "exited"), None),  # kept for its logs until discarded
    ("stop", Local(P.EXITED, False, "exited"), None),
    ("stop", Local(P.STOPPED, True, "stopped"), S.REMOVE),  # removal failed last time
    ("stop", Local(P.STOPPED, False, "stopped"), None),
    ("stop", Local(P.FAILED, False, "failed"), None),
    # not assigned any more
    (None, Local(P.RUNNING, True, "running"), S.DISCARD),
    (None, Local(P.EXITED, True, "exited"), S.DISCARD),
    (None, Local(P.RUNNING, True, None), S.DISCARD),  # adopted, not ours: no report
    (None, Local(P.STOPPED, False, "stopped"), S.FORGET),
    (None, Local(P.FAILED, False, "failed"), S.FORGET),
]


@pytest.mark.parametrize(("desired", "local", "expected"), TABLE)
def test_next_step(desired: DesiredState, local: Local, expected: Step | None) -> None:
    assert next_step(desired, local) is expected


def test_plan_covers_both_sides_and_leaves_out_settled_tasks() -> None:
    desired: dict[str, DesiredState] = {"new": "run", "up": "run", "bye": "stop"}
    local = {
        "up": Local(P.RUNNING, True, "running"),
        "bye": Local(P.RUNNING, True, "running"),
        "orphan": Local(P.RUNNING, True, None),
    }
    assert plan(desired, local) == {"new": S.START, "bye": S.STOP, "orphan": S.DISCARD}


def test_plan_is_stable_once_converged() -> None:
    desired: dict[str, DesiredState] = {"a": "run", "b": "stop"}
    local = {"a": Local(P.RUNNING, True, "running"), "b": Local(P.STOPPED, False, "stopped")}
    assert plan(desired, local) == {}
