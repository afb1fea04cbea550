"""The CLI's contexts around a test bed: ``up`` notes which context was current (and any
context already named ``testbed``) before the bootstrap points the CLI at the test bed's
cluster; ``down`` makes the contexts file say that again.

Called by ``tests.testbed.up`` and ``tests.testbed.down``; the file is ``theseus.cli.contexts``'
(``$THESEUS_CONFIG`` or ``~/.config/theseus/config.json``), whose tokens are never printed.
"""

from __future__ import annotations

from tests.testbed.plan import CLUSTER_NAME
from tests.testbed.state import ContextBefore
from theseus.cli import contexts
from theseus.cli.contexts import Context


def remember() -> ContextBefore:
    current = contexts.load()
    previous = current.contexts.get(CLUSTER_NAME)
    return ContextBefore(
        current=current.current,
        testbed=previous.model_dump_json() if previous is not None else None,
    )


def restore(before: ContextBefore) -> str:
    """The contexts as they were; what was done, for the report."""
    now = contexts.load()
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
    contexts.save(now)
    return f"current context {before.current or '(none)'} again"
