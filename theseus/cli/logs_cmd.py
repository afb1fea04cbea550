"""``theseus logs SERVICE|TASK``: a task's output, or every task of a service interleaved.

Registered by ``theseus.cli.main``. Each task is read by its own thread through
``ServerClient.logs`` (the server proxies the agent's stream); the main thread prints lines as
they arrive, prefixed with the task id in a colour that stays the same from run to run.
"""

from __future__ import annotations

import queue
import threading
import zlib
from typing import Annotated

import typer
from rich.markup import escape

from theseus.api.client import ApiError, ServerUnreachable
from theseus.api.schemas import TaskInfo
from theseus.cli.output import CliState, connect, console, err_console, fail, state_of

PALETTE = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_red",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_blue",
)


def task_colour(task_id: str) -> str:
    """crc32, not hash(): Python salts str hashes per process, colours must not change."""
    return PALETTE[zlib.crc32(task_id.encode()) % len(PALETTE)]


def select_tasks(target: str, active: list[TaskInfo], history: list[TaskInfo]) -> list[TaskInfo]:
    """A task id names that task; otherwise the service's active tasks, or, when none is
    active (a crashed service), its most recent history."""
    for task in history:
        if task.id == target:
            return [task]
    chosen = [t for t in active if t.service == target]
    return chosen or [t for t in history if t.service == target]


# Messages between the reader threads and the printer: (task id, line, is_error); a None
# line means that reader has finished.
Message = tuple[str, str | None, bool]


def _reader(
    state: CliState,
    task_id: str,
    follow: bool,
    tail: int | None,
    container: str | None,
    out: queue.Queue[Message],
) -> None:
    try:
        # One client per thread: a streaming response holds its connection for its lifetime.
        with state.client() as client:
            for line in client.logs(task_id, follow=follow, tail=tail, container=container):
                out.put((task_id, line, False))
    except ServerUnreachable as exc:
        out.put((task_id, f"cannot reach the Theseus server at {exc.address}", True))
    except ApiError as exc:
        out.put((task_id, exc.message, True))
    finally:
        out.put((task_id, None, False))


def register(app: typer.Typer) -> None:
    @app.command()
    def logs(
        ctx: typer.Context,
        target: Annotated[str, typer.Argument(help="A task id, or a service (all its tasks).")],
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming.")] = False,
        tail: Annotated[
            int | None, typer.Option("--tail", "-n", min=0, help="Only the last N lines.")
        ] = None,
        container: Annotated[
            str | None,
            typer.Option("--container", "-c", help="Only this container of a pod (docs/pods.md)."),
        ] = None,
    ) -> None:
        """Show the output (stdout and stderr) of a task or of every task of a service."""
        state = state_of(ctx)
        with connect(ctx) as client:
            active = client.tasks().tasks
            history = client.tasks(include_stopped=True).tasks
        tasks = select_tasks(target, active, history)
        if not tasks:
            fail(f"no task or service named {target!r} (see `theseus ps -a`)")
        placed = [t for t in tasks if t.node is not None]
        if not placed:
            fail(f"no task of {target!r} has been placed on a node yet")
        prefix = len(placed) > 1 or placed[0].id != target
        out: queue.Queue[Message] = queue.Queue()
        for task in placed:
            threading.Thread(
                target=_reader, args=(state, task.id, follow, tail, container, out), daemon=True
            ).start()
        remaining, failed = len(placed), False
        try:
            while remaining:
                task_id, line, is_error = out.get()
                if line is None:
                    remaining -= 1
                elif is_error:
                    failed = True
                    err_console.print(f"[bold red]error:[/] {task_id}: {escape(line)}")
                elif prefix:
                    console.print(
                        f"[{task_colour(task_id)}]{task_id}[/] | {escape(line)}", soft_wrap=True
                    )
                else:
                    print(line, flush=True)  # a single task's output stays byte-exact
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        if failed:
            raise typer.Exit(1)
