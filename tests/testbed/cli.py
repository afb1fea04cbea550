"""The command line of ``scripts/testbed`` (``python -m tests.testbed``): ``up``, ``down``,
``status`` and ``registry``. Parses, calls ``tests.testbed.up``/``down``, and turns their
errors into one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tests.testbed import down, engines, processes, state, up
from tests.testbed.plan import PlanError, TestbedPlan, make_plan

DEFAULT_HOSTS = 3


def workdir() -> Path:
    return up.repo_root() / ".testbed"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/testbed", description="A multi-host test bed on this machine."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("up", help="make the test bed and bootstrap a cluster on it")
    make.add_argument("--hosts", type=int, default=DEFAULT_HOSTS, help="how many hosts (1-16)")
    make.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="only the hosts, engines, sshds and registry: no Theseus cluster on them (a later "
        "up without this flag bootstraps the bed that is up)",
    )
    commands.add_parser("down", help="remove everything up made (also after a crash)")
    commands.add_parser("status", help="what is up and whether it runs")
    commands.add_parser("registry", help="print the registry's address")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            plan = make_plan(workdir(), args.hosts)
            up.up(plan, bootstrap=not args.no_bootstrap)
            return 0
        if args.command == "down":
            report = down.down(workdir())
            return 1 if report.left else 0
        if args.command == "registry":
            return _registry()
        return _status()
    except BrokenPipeError:  # `scripts/testbed status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (PlanError, up.UpError, state.StateError) as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a step of up failed: say which, and how to undo what was made
        print(f"testbed: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.command == "up" and (workdir() / "state.json").exists():
            print("testbed: scripts/testbed down removes what was made", file=sys.stderr)
        return 1


def _registry() -> int:
    current = state.load(workdir() / "state.json")
    if current is None or not current.registry_host:
        print("testbed: error: no test bed is up (scripts/testbed up)", file=sys.stderr)
        return 1
    print(current.registry_host)
    return 0


def _status() -> int:
    current = state.load(workdir() / "state.json")
    if current is None:
        print("no test bed is up")
        return 1
    plan = make_plan(workdir(), current.hosts)
    complete = "up" if current.up_complete else "partly made (scripts/testbed down)"
    cluster = (
        "bootstrapped"
        if current.bootstrap_done
        else "bootstrap failed or running"
        if current.bootstrap_started
        else "not bootstrapped"
    )
    print(f"test bed: {current.hosts} hosts, {complete}; cluster {cluster}")
    print(f"registry: {current.registry_host or '-'}")
    for host in plan.hosts:
        print(_host_line(plan, host.name, current))
    for entry in current.processes:
        running = "running" if processes.alive(entry) else "NOT RUNNING"
        print(f"  {entry.name:<14} pid {entry.pid:<8} {running}")
    if current.timings:
        print("timings: " + ", ".join(f"{k} {v:g} s" for k, v in current.timings.items()))
    stopped = up.not_running(current)
    return 1 if stopped or not current.up_complete else 0


def _host_line(plan: TestbedPlan, name: str, current: state.TestbedState) -> str:
    host = plan.host(name)
    engine = "answers" if engines.answers(host) else "does not answer"
    made = host.netns in current.netns
    return (
        f"{host.name}: {host.address} ({host.role}) namespace {host.netns}"
        f"{'' if made else ' (not made)'}; engine {host.docker_host} {engine}"
    )
