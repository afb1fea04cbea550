"""What the bed's hosts logged about the tasks a failed check names, for its failure message.

CI keeps a failed test's output and nothing of the bed, which its session takes down at the
end: a chaos violation naming a task (``bravo.d75db860a49f``) was all there was to go on.
``evidence`` collects, from every host's Theseus logs (``root/var/log/theseus/*.log``), the
last lines that name one of those tasks. Called by ``tests/integration/test_partitions.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

TASK_ID = re.compile(r"\b[a-z][a-z0-9-]*\.[0-9a-f]{12}\b")
LINES_PER_FILE = 30


def task_ids(texts: Iterable[str]) -> set[str]:
    """The task ids ``texts`` name."""
    return {found for text in texts for found in TASK_ID.findall(text)}


def evidence(hosts_dir: Path, texts: Iterable[str], per_file: int = LINES_PER_FILE) -> str:
    """The last ``per_file`` lines of each host's log that name a task ``texts`` name."""
    ids = task_ids(texts)
    if not ids:
        return ""
    parts: list[str] = []
    for log in sorted(hosts_dir.glob("*/root/var/log/theseus/*.log")):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        about = [line for line in lines if any(task_id in line for task_id in ids)]
        if about:
            host = log.relative_to(hosts_dir).parts[0]
            parts.append(f"--- {host} {log.name}")
            parts.extend(about[-per_file:])
    return "\n".join(parts)
