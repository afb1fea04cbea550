"""An OOM kill, from the driver's notice to what users see: the runner's report carries it,
the server's status keeps it, ``theseus ps`` says it."""

from __future__ import annotations

import dataclasses

from tests.kit.builders import NOW, make_assignment, make_task_info
from tests.kit.fake_driver import FakeDriver
from tests.kit.runner import settled
from theseus.agent.drivers.base import OOM_MESSAGE, Owner
from theseus.agent.reports import ReportQueue
from theseus.agent.runner import TaskRunner
from theseus.api.schemas import TaskReport
from theseus.cli.output import format_state
from theseus.server.reports import next_status


async def test_an_oom_notice_is_reported_as_such() -> None:
    driver = FakeDriver()
    runner = TaskRunner(driver, Owner("n1", "127.0.0.2", "cluster-1"), ReportQueue())
    runner.apply([make_assignment("t1")])
    await settled(runner)
    notice = dataclasses.replace(driver.die("t1", 137), oom_killed=True, message=OOM_MESSAGE)
    runner.observe_exit(notice)
    report = runner.reports._pending[-1]
    assert (report.state, report.exit_code, report.oom_killed) == ("exited", 137, True)
    assert report.message == OOM_MESSAGE


def test_the_status_keeps_it_and_ps_shows_it() -> None:
    report = TaskReport(task_id="t1", state="exited", exit_code=137, oom_killed=True, at=NOW)
    status = next_status(None, report)
    assert status.oom_killed and status.exit_code == 137
    task = make_task_info(state="exited", exit_code=137, oom_killed=True, message=OOM_MESSAGE)
    assert format_state(task, NOW).startswith("exited (OOM-killed, code 137)")
    plain = make_task_info(state="exited", exit_code=1)
    assert format_state(plain, NOW).startswith("exited (code 1)")
