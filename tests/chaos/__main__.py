"""``python -m tests.chaos`` (or ``scripts/chaos``): start a cluster of real processes on
loopback (etcd, server, 3 agents with the Docker driver), run ``tests.chaos.run.Chaos`` for
``--duration`` seconds, print each round and a JSON summary, stop everything, and exit 1 if
any invariant was violated. Needs what the integration tests need (etcd, dockerd, images).

``--testbed``: the same on the test bed's hosts (``scripts/testbed``; root), with a cluster of
three server hosts, partitions and whole-host deaths among the faults
(``tests.chaos.testbed``). A bed already up is used (its cluster made afresh if it has another
shape) and left up; one this run brought up is taken down at its end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tests.chaos.cluster import chaos_cluster
from tests.chaos.run import Chaos, ChaosReport
from tests.chaos.testbed import SERVERS, TestbedChaos
from tests.testbed.fixture import TestbedSession, testbed_plan


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of chaos")
    parser.add_argument("--round-seconds", type=float, default=10.0)
    parser.add_argument("--settle-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--etcd-members", type=int, default=3, choices=(1, 3))
    parser.add_argument("--report", type=Path, help="also write the JSON summary here")
    parser.add_argument(
        "--testbed",
        action="store_true",
        help="on the test bed's hosts, with partitions and host deaths (needs root)",
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the processes' logs and data in this (new) directory"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4))
    if args.testbed:
        print(f"chaos on the test bed: seed {seed}, {args.duration:g}s, servers on {SERVERS}")
        report = run_on_testbed(args, seed)
    else:
        report = run_on_loopback(args, seed)
    summary = {"seed": seed, **report.summary()}
    print(json.dumps(summary, indent=2))
    for violation in report.violations:
        print(f"violation: {violation}")
    if args.report:
        args.report.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if report.violations else 0


def run_on_loopback(args: argparse.Namespace, seed: int) -> ChaosReport:
    print(
        f"chaos: seed {seed}, {args.duration:g}s, {args.servers} servers, "
        f"{args.etcd_members} etcd members, 3 agents"
    )
    if args.keep:
        args.keep.mkdir(parents=True)
    with (
        tempfile.TemporaryDirectory(prefix="theseus-chaos-") as scratch,
        chaos_cluster(args.keep or Path(scratch), args.servers, args.etcd_members) as (
            cluster,
            agents,
        ),
    ):
        chaos = Chaos(
            cluster,
            agents,
            seed,
            round_seconds=args.round_seconds,
            settle_seconds=args.settle_seconds,
        )
        try:
            return chaos.run(args.duration)
        finally:
            chaos.close()


def run_on_testbed(args: argparse.Namespace, seed: int) -> ChaosReport:
    if os.geteuid() != 0:
        raise SystemExit("--testbed needs root (network namespaces, bridges, iptables)")
    session = TestbedSession(testbed_plan())
    try:
        bed = session.with_cluster(SERVERS)
        hosts_file = bed.hosts_file(bed.plan.host_names, servers=SERVERS)
        chaos = TestbedChaos(
            bed,
            hosts_file,
            seed,
            round_seconds=args.round_seconds,
            settle_seconds=args.settle_seconds,
        )
        try:
            return chaos.run(args.duration)
        finally:
            chaos.remove_services()
            chaos.close()
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())
