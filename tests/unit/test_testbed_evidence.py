"""A failed chaos check's message carries what the hosts logged about the tasks it names
(``tests.testbed.evidence``)."""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath

from tests.testbed.evidence import evidence, task_ids
from tests.testbed.plan import TestbedPlan, make_plan
from theseus.provision.layout import Layout


def test_the_lines_naming_a_violations_tasks_are_collected_from_every_hosts_logs() -> None:
    # A short directory: a bed's plan refuses one too deep for its engines' unix sockets.
    with tempfile.TemporaryDirectory(prefix="bed") as workdir:
        collected(make_plan(Path(workdir), 2))


def collected(plan: TestbedPlan) -> None:
    texts = {
        "h1": "a: task bravo.d75db860a49f: healthy=True\nb: other alpha.0123456789ab\n",
        "h2": "c: nothing here\n",
    }
    for host in plan.hosts:
        log = Path(Layout(PurePosixPath(host.paths.prefix), "").log_file("agent"))
        log.parent.mkdir(parents=True)
        log.write_text(texts[host.name])
    violation = "round 2: bravo: registry 0 [] extra, 1 [bravo.d75db860a49f] missing"
    assert task_ids([violation]) == {"bravo.d75db860a49f"}
    found = evidence(plan.hosts, [violation])
    assert found == "--- h1 agent\na: task bravo.d75db860a49f: healthy=True"
    assert evidence(plan.hosts, ["delta: 1 running of 2 tasks, wants 2"]) == ""
