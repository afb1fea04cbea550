"""The supervisor of one service on a host without systemd (standard library only).

``theseus cluster bootstrap`` starts one per service, detached with ``setsid`` so that it
outlives the SSH session::

    <venv>/bin/python -m theseus.provision.keeper --name agent --pidfile P --child-pidfile C \
        --log L --env-file E [--only-main-process] -- argv...

It does what the systemd unit does where systemd runs (``theseus.provision.units``): runs
``argv`` with the variables of the environment file (read again at each start), its output
appended to the log; restarts it 2 s after it fails (a non-zero exit); on SIGTERM stops it
(SIGTERM, SIGKILL after 20 s) and exits. A stopped child is its whole process group, except
with ``--only-main-process`` (the agent's, as systemd's ``KillMode=process``): then only the
main process, so that whatever else it started keeps running.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

RESTART_DELAY = 2.0
STOP_TIMEOUT = 20.0
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (systemd's ``EnvironmentFile=``); blank lines and ``#`` comments
    skipped, one level of quotes removed."""
    env: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return env
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Keeper:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None

    def _signal_child(self, signum: int) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        try:
            if self.args.only_main_process:
                os.kill(child.pid, signum)
            else:
                os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    def on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self._signal_child(signal.SIGTERM)

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**BASE_ENV, **read_env_file(Path(self.args.env_file))}
        with open(self.args.log, "ab") as log:
            child = subprocess.Popen(
                self.args.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own group: stopped as a whole unless told not to
            )
        _write(Path(self.args.child_pidfile), f"{child.pid}\n")
        return child

    def _note(self, message: str) -> None:
        with open(self.args.log, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} keeper[{self.args.name}]: {message}\n")

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        _write(Path(self.args.pidfile), f"{os.getpid()}\n")
        code = 0
        try:
            while not self.stopping:
                self.child = self._start()
                code = self._wait(self.child)
                if self.stopping or code == 0:
                    break
                self._note(f"exited with {code}; restarting in {RESTART_DELAY:g} s")
                deadline = time.monotonic() + RESTART_DELAY
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            for name in (self.args.child_pidfile, self.args.pidfile):
                Path(name).unlink(missing_ok=True)
        return 0 if self.stopping else code

    def _wait(self, child: subprocess.Popen[bytes]) -> int:
        """The child's exit code; once stopping, SIGKILL after ``STOP_TIMEOUT``."""
        stop_deadline: float | None = None
        while True:
            try:
                return child.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
            if self.stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_TIMEOUT
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                self._signal_child(signal.SIGKILL)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m theseus.provision.keeper")
    parser.add_argument("--name", required=True)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--child-pidfile", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--env-file", required=True)
    parser.add_argument("--only-main-process", action="store_true")
    parser.add_argument("argv", nargs="+")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return Keeper(parse_args(sys.argv[1:] if argv is None else argv)).run()


if __name__ == "__main__":
    sys.exit(main())
