"""The docker driver's exec command line, run here with the host's shell: the command's exit
code and output come through, and a hanging command is killed at its (rounded-up) deadline."""

from __future__ import annotations

import os
import subprocess
import time

from theseus.agent.drivers.docker_config import exec_argv


def test_exit_code_and_output_come_through() -> None:
    done = subprocess.run(exec_argv("echo hi; exit 4", 2.0), capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (4, "hi\n")


def test_a_hanging_command_is_killed_at_its_deadline() -> None:
    started = time.monotonic()
    done = subprocess.run(exec_argv("sleep 30", 0.3), capture_output=True, timeout=10)
    assert done.returncode in (137, -9)  # SIGKILL, as the shell or as a signal
    assert time.monotonic() - started < 5


def test_without_timeout_in_the_image_the_command_still_runs() -> None:
    env = {**os.environ, "PATH": "/nonexistent"}  # no `timeout` to be found
    done = subprocess.run(
        exec_argv("echo plain; exit 3", 1.0), capture_output=True, text=True, env=env
    )
    assert (done.returncode, done.stdout) == (3, "plain\n")
