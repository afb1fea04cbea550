"""What the bed's hosts logged about the tasks a failed check names, for its failure message.

CI keeps a failed test's output and nothing of the bed, which its session takes down at the
end: a chaos violation naming a task (``bravo.d75db860a49f``) was all there was to go on.
``evidence`` collects, from every host's Theseus logs (where ``theseus.provision.layout`` puts
them under the host's prefix), the last lines that name one of those tasks. Called by
``tests/integration/test_partitions.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from tests.testbed.plan import HostPlan
from theseus.provision.layout import SERVICES, Layout

TASK_ID = re.compile(r"\b[a-z][a-z0-9-]*\.[0-9a-f]{12}\b")
LINES_PER_FILE = 30


def task_ids(texts: Iterable[str]) -> set[str]:
    """The task ids ``texts`` name."""
    return {found for text in texts for found in TASK_ID.findall(text)}


def evidence(
    hosts: Iterable[HostPlan], texts: Iterable[str], per_file: int = LINES_PER_FILE
) -> str:
    """The last ``per_file`` lines of each host's service logs that name a task ``texts``
    name."""
    ids = task_ids(texts)
    if not ids:
        return ""
    parts: list[str] = []
    for host in hosts:
        for service, log in host_logs(host):
            about = [line for line in _lines(log) if any(task_id in line for task_id in ids)]
            if about:
                parts.append(f"--- {host.name} {service}")
                parts.extend(about[-per_file:])
    return "\n".join(parts)


def host_logs(host: HostPlan) -> list[tuple[str, Path]]:
    """Each Theseus service's log on ``host`` that exists, with the service's name."""
    layout = Layout(PurePosixPath(host.paths.prefix), cluster="")  # the logs' paths only
    logs = [(service, Path(layout.log_file(service))) for service in SERVICES]
    return [(service, log) for service, log in logs if log.is_file()]


def _lines(log: Path) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()
    except OSError:
        return []
