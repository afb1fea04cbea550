"""``python -m tests.chaos`` (or ``scripts/chaos``): start a cluster of real processes on
loopback (etcd, server, 3 agents with the Docker driver), run ``tests.chaos.run.Chaos`` for
``--duration`` seconds, print each round and a JSON summary, stop everything, and exit 1 if
any invariant was violated. Needs what the integration tests need (etcd, dockerd, images).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tests.chaos.cluster import chaos_cluster
from tests.chaos.run import Chaos


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
        "--keep", type=Path, help="keep the processes' logs and data in this (new) directory"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4))
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
            report = chaos.run(args.duration)
        finally:
            chaos.close()
    summary = {"seed": seed, **report.summary()}
    print(json.dumps(summary, indent=2))
    for violation in report.violations:
        print(f"violation: {violation}")
    if args.report:
        args.report.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
