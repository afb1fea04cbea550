"""What a process loads before it does anything: every ``theseus`` command imports the CLI, and
the server and agents are started as ``theseus server`` and ``theseus agent``.

The CLI itself must not load the agent's runtime (aiohttp, uvicorn), the bootstrap's SSH
(asyncssh) or the server (FastAPI): those took 0.7 of a command's 1.4 s of imports here. The
server must not load the agent's runtime or SSH either. Checked in a fresh interpreter, as a
test run has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "aiohttp",
    "asyncssh",
    "uvicorn",
    "fastapi",
    "theseus.agent.agent",
    "theseus.provision.run",
    "theseus.server.serve",
)


def loaded_after(module: str) -> set[str]:
    code = (
        f"import json, sys; import {module}; "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


def test_the_cli_loads_no_agent_server_or_ssh() -> None:
    assert loaded_after("theseus.cli.main") == set()


def test_the_server_loads_no_agent_or_ssh() -> None:
    assert loaded_after("theseus.server.serve") == {"fastapi", "uvicorn", "theseus.server.serve"}


def test_the_agent_loads_no_server_or_ssh() -> None:
    assert loaded_after("theseus.agent.agent") == {"aiohttp", "uvicorn", "theseus.agent.agent"}
