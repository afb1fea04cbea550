"""The CLI's contexts around a test bed: ``up`` notes which context was current (and any
context already named ``testbed``) before the bootstrap points the CLI at the test bed's
cluster; ``down`` makes the contexts file say that again.

Called by ``tests.testbed.up`` and ``tests.testbed.down``; the file is ``theseus.cli.contexts``'
(``$THESEUS_CONFIG`` or ``~/.config/theseus/config.json``, the one ``up`` saw), whose tokens
are never printed.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.testbed.plan import CLUSTER_NAME
from tests.testbed.state import ContextBefore
from theseus.cli import contexts
from theseus.cli.contexts import Context


def remember() -> ContextBefore:
    path = contexts.config_path()
    current = contexts.load(path)
    previous = current.contexts.get(CLUSTER_NAME)
    return ContextBefore(
        path=str(path.absolute()),
        current=current.current,
        testbed=previous.model_dump_json() if previous is not None else None,
    )


def environ(before: ContextBefore) -> dict[str, str]:
    """This environment with ``THESEUS_CONFIG`` the file ``up`` saw: the bootstrap and the
    teardown change that file, whatever ``down`` is run with (a terminal's ``down`` of a bed
    a test session made must not touch the terminal's contexts)."""
    return {**os.environ, "THESEUS_CONFIG": before.path}


def restore(before: ContextBefore) -> str:
    """The contexts as they were, in the file ``up`` saw; what was done, for the report."""
    path = Path(before.path)
    if not path.parent.is_dir():
        return f"not restored: {path.parent} is gone"
    now = contexts.load(path)
    if now.current == before.current and (
        (before.testbed is None and CLUSTER_NAME not in now.contexts)
        or (
            before.testbed is not None
            and CLUSTER_NAME in now.contexts
            and now.contexts[CLUSTER_NAME].model_dump_json() == before.testbed
        )
    ):
        return "unchanged"
    if before.testbed is None:
        now.contexts.pop(CLUSTER_NAME, None)
    else:
        now.contexts[CLUSTER_NAME] = Context.model_validate_json(before.testbed)
    now.current = before.current if before.current in now.contexts else None
    contexts.save(now, path)
    return f"current context {before.current or '(none)'} again"
