"""A failed chaos check's message carries what the hosts logged about the tasks it names
(``tests.testbed.evidence``)."""

from __future__ import annotations

from pathlib import Path

from tests.testbed.evidence import evidence, task_ids


def test_the_lines_naming_a_violations_tasks_are_collected_from_every_hosts_logs(
    tmp_path: Path,
) -> None:
    for host, text in {
        "h1": "a: task bravo.d75db860a49f: healthy=True\nb: other alpha.0123456789ab\n",
        "h2": "c: nothing here\n",
    }.items():
        logs = tmp_path / host / "root/var/log/theseus"
        logs.mkdir(parents=True)
        (logs / "agent.log").write_text(text)
    violation = "round 2: bravo: registry 0 [] extra, 1 [bravo.d75db860a49f] missing"
    assert task_ids([violation]) == {"bravo.d75db860a49f"}
    found = evidence(tmp_path, [violation])
    assert found == "--- h1 agent.log\na: task bravo.d75db860a49f: healthy=True"
    assert evidence(tmp_path, ["delta: 1 running of 2 tasks, wants 2"]) == ""
