"""Control plane at scale with the ``sim`` driver: H hollow nodes, then T tasks in S services
deployed at once; time until all are placed and reported running, and what it cost.

    .venv/bin/python bench/scale.py [--nodes 1000] [--tasks 10000] [--services 100] \
        [--workers 4] [--timeout 120] [--etcd-max-txn-ops 1024]

Starts everything itself, on free loopback ports, in a temporary directory, and stops it all
at the end: one etcd member, ONE ``theseus server`` process (its CPU and RSS are read from
/proc/<pid>), and ``--workers`` processes of hollow nodes (bench/hollow.py: real agents as
coroutines with the ``sim`` driver, each talking to the server over HTTP). Once every node is
ready (and, with ``--settle-leases Q``, once the server has replaced no node's lease for Q
seconds: the tail of the registrations, see ``scrapes.wait_for_leases_to_settle``) it sends the
deploy: one document may change at most 64 groups (the server's
``MAX_GROUP_CHANGES``), so S services go as ceil(S / 64) documents back to back. Then it polls
``GET /v1/groups`` every ``--poll-interval`` seconds (0.5) until the services'
``running_current`` add up to T. (At 0.1 s, and with a probe listing every task, the
benchmark's own reads were 19 % of the server's CPU at 2,000 nodes.)

During the run three side clients measure API latency, one request at a time with
``--probe-interval`` seconds between requests: ``GET /v1/tasks/{id}`` (one task, of a 1-task
service deployed before the run), and a small deploy (one 1-task service scaled 1 <-> 2),
twice: reading by index as the CLI does (``X-Theseus-Index``: the write is answered once etcd
has it, the next call waits for the server's view to reach it), and without an index (the
server waits for its view before it answers the write). At rest, once all run,
``GET /v1/tasks`` (every task) and ``GET /v1/nodes`` are timed too, and the server's CPU over
``--rest-window`` seconds (heartbeats, and the leader's passes over a cluster where nothing
changes; ``--py-spy-rest`` profiles that window); then a second server joins and loads the
whole state from etcd, as a restarted server or a new leader does: how long until its view
caught up, and its RSS then (``bench/second_server.py``).
Also measured: when the tasks were created (the placing pass's time) and started (the agents'
clocks), how far the server's view trailed etcd (its answers' ``X-Theseus-Index`` against
etcd's revision, sampled every 0.1 s) and etcd's own answer time, each probe's slowest
answers with when they were sent, the server's CPU seconds and peak RSS (sampled VmRSS every
0.1 s, and the kernel's VmHWM), the requests it answered by route (and their mean answer),
etcd's writes (deltas of its /metrics counters), and the CPU of etcd, of the hollow-node
processes and of this benchmark's own process (its probes, polls and samplers), which all
share the machine's cores with the server. Prints one table and the running
count over time (with the view's lag).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import httpx
from api_probes import (
    PROBE_SERVICE,
    DeployProbe,
    Probe,
    TaskProbe,
    deploy_read_task,
    fmt_ms,
    ready_nodes,
    running_count_and_view,
    slowest,
)
from procs import (
    Process,
    Processes,
    Sampler,
    children_cpu_seconds,
    children_in_temp_dir,
    cpu_seconds,
    etcd_counters,
    listen_overflows,
    machine_cpu,
    memory_mib,
    spread,
    start_etcd,
    start_server,
    wait_until,
)
from profiler import profile_summary, start_profiler, stop_profiler
from scrapes import (
    EtcdRevisions,
    EtcdWatchers,
    api_requests,
    etcd_rows,
    loop_rows,
    registration_answers,
    request_rows,
    scrape,
    slow_rows,
    wait_for_leases_to_settle,
)
from second_server import second_server_rows

from theseus.server.writes import MAX_GROUP_CHANGES
from theseus.store.limits import MAX_TXN_OPS

BENCH_DIR = Path(__file__).resolve().parent
GROUPS_PER_DOCUMENT = MAX_GROUP_CHANGES  # what one document may change


def service_names(count: int) -> list[str]:
    return [f"bench-{i:03d}" for i in range(count)]


def documents(services: list[str], tasks: int) -> list[str]:
    """The deploy documents: T tasks spread over the services, at most 64 groups each."""
    per_service = [
        tasks // len(services) + (i < tasks % len(services)) for i in range(len(services))
    ]
    count = math.ceil(len(services) / GROUPS_PER_DOCUMENT)
    size = math.ceil(len(services) / count)
    docs = []
    for start in range(0, len(services), size):
        deploy = {
            name: {"image": "sim", "instances": per_service[i], "cpus": 0.01, "mem": 1}
            for i, name in enumerate(services[start : start + size], start)
        }
        docs.append(json.dumps({"deploy": deploy}))
    return docs


def start_hollow(
    children: Processes,
    url: str,
    nodes: int,
    workers: int,
    niceness: int = 10,
    gc_policy: str = "freeze",
) -> list[Process]:
    """``workers`` processes of hollow nodes, at ``niceness``: on a real cluster the agents
    run on machines of their own, and here they must not take the cores from the server
    they measure (at 2,000 nodes they used more CPU than the server, which then answered
    their heartbeats too late)."""
    started = []
    per_worker = math.ceil(nodes / workers)
    for w, first in enumerate(range(0, nodes, per_worker)):
        count = min(per_worker, nodes - first)
        argv = ["nice", "-n", str(niceness)] if niceness else []
        argv += [sys.executable, str(BENCH_DIR / "hollow.py"), "--server", url]
        argv += ["--first", str(first), "--count", str(count)]
        argv += ["--state-root", str(children.log_dir / "hollow"), "--gc", gc_policy]
        started.append(children.start(f"hollow-{w}", argv, role="agent"))
    return started


def log_count(logs: list[Path], needle: str) -> int:
    total = 0
    for path in logs:
        with path.open(errors="replace") as lines:
            total += sum(1 for line in lines if needle in line)
    return total


def run(args: argparse.Namespace, children: Processes) -> int:
    rows: list[tuple[str, str]] = []
    etcd, etcd_port = start_etcd(children, args.etcd_max_txn_ops)
    server, url = start_server(children, etcd_port, log_level=args.server_log_level)
    print(f"server pid {server.pid} at {url}; etcd pid {etcd.pid}; logs in {children.log_dir}")
    http = httpx.Client(base_url=url, timeout=60.0)
    etcd_http = httpx.Client(base_url=f"http://127.0.0.1:{etcd_port}", timeout=5.0)

    # 1. hollow nodes register and become ready
    t_nodes = time.monotonic()
    workers = start_hollow(
        children, url, args.nodes, args.workers, args.hollow_nice, args.hollow_gc
    )

    def all_ready() -> bool:
        children.check_alive()
        return bool(ready_nodes(http) >= args.nodes)

    wait_until(all_ready, args.timeout, f"{args.nodes} nodes ready", interval=0.5)
    ready_after = time.monotonic() - t_nodes
    rows.append((f"{args.nodes} hollow nodes registered and ready", f"{ready_after:.1f} s"))
    answered = registration_answers(api_requests(scrape(http)))
    rows.append(
        (
            "registrations answered: 200 / 429 (come back later) / other",
            f"{answered['200']:,} / {answered['429']:,} / "
            f"{sum(n for code, n in answered.items() if code not in ('200', '429')):,}"
            if answered
            else "not known: /metrics did not answer 200",
        )
    )

    if args.settle_leases:
        waited, grants = wait_for_leases_to_settle(http, args.settle_leases, args.timeout)
        rows.append(("--settle-leases: leases replaced, waited", f"{grants:,} in {waited:.0f} s"))
    # 2. idle load: heartbeats only
    time.sleep(1.0)
    worker_logs = [w.log for w in workers]
    lost_idle = log_count(worker_logs, "does not know node")
    cpu_idle, wall_idle, machine_idle = cpu_seconds(server.pid), time.monotonic(), machine_cpu()
    time.sleep(args.idle_window)
    window = time.monotonic() - wall_idle
    idle_cores = (cpu_seconds(server.pid) - cpu_idle) / window
    idle_busy = (machine_cpu()[0] - machine_idle[0]) / window
    lost_idle = log_count(worker_logs, "does not know node") - lost_idle
    rows.append(
        (
            f"server CPU, {args.nodes} idle nodes (heartbeats)",
            f"{idle_cores:.2f} cores (machine: {idle_busy:.2f} of {os.cpu_count()} busy; "
            f"{lost_idle} leases lost in {window:.0f} s)",
        )
    )
    rows.append(
        (f"server RSS, {args.nodes} nodes, no tasks", f"{memory_mib(server.pid)[0]:.0f} MiB")
    )

    # 3. the deploy, and first the one task the TaskProbe reads during it
    read_task = deploy_read_task(http, args.timeout)
    services = service_names(args.services)
    wanted = set(services)
    docs = documents(services, args.tasks)
    lost_before = log_count(worker_logs, "does not know node")
    fenced_before = log_count(worker_logs, "(fenced)")
    overflows_before = listen_overflows()
    machine_before = machine_cpu()
    before = etcd_counters(etcd_port)
    scraped_before, etcd_scraped_before = scrape(http), scrape(etcd_http)
    cpu_before = {c.name: cpu_seconds(c.pid) for c in [server, etcd, *workers]}
    # This process's own CPU, without the children it waits for (py-spy, with --py-spy).
    own_before = time.process_time()
    children_before = children_cpu_seconds(server.pid)
    probes: list[Probe] = []
    probe_url = url
    if args.probe_second_server:  # a user's API served apart from the agents' traffic
        probe_url = start_server(children, etcd_port, name="server-api")[1]
        rows.append(("probes sent to a second server (not the leader)", probe_url))
    if args.probe_interval > 0:
        probes = [
            TaskProbe("GET /v1/tasks/{id} (one task)", args.probe_interval, task_id=read_task),
            DeployProbe("POST /deploy (1 service, scale 1<->2)", args.probe_interval),
            DeployProbe(
                "  the same, no index: the server waits for its view",
                args.probe_interval,
                by_index=False,
                service=PROBE_SERVICE + "-waited",
            ),
        ]
    profile = children.log_dir / (
        "server.py-spy.json" if args.py_spy_timeline else "server.py-spy.raw"
    )
    rest_profile = children.log_dir / "server-at-rest.py-spy.raw"
    profiler = (
        start_profiler(children, server.pid, profile, args.py_spy_seconds, args.py_spy_timeline)
        if args.py_spy or args.py_spy_timeline
        else None
    )
    if profiler is not None:
        print(f"py-spy started at {time.strftime('%H:%M:%S')}, writing {profile}")
    timeline: list[tuple[float, int, float]] = []  # (seconds, running, view's lag)
    converged_after: float | None = None
    running = 0
    refused_polls = 0  # GET /v1/groups answered other than 200 while following the deploy
    views: list[tuple[float, int]] = []  # (time, revision of the server's view)
    revisions = EtcdRevisions(etcd_port)
    watchers = EtcdWatchers(etcd_port, interval=0.25)
    with Sampler(server.pid) as sampler, watchers, revisions:
        for probe in probes:
            probe.start(probe_url)
        t0_wall, t0 = time.time(), time.monotonic()
        deploy_answers = []
        for doc in docs:
            sent = time.monotonic()
            headers = {"Content-Type": "application/json"}
            http.post("/deploy", content=doc, headers=headers).raise_for_status()
            deploy_answers.append(time.monotonic() - sent)
        next_mark = 0.0
        # More than a wait (``wait_until``): it records the running count over time.
        while time.monotonic() - t0 < args.timeout:
            counted, view = running_count_and_view(http, wanted)
            refused_polls += counted is None
            if view:
                views.append((time.monotonic(), view))
            running = running if counted is None else counted
            elapsed = time.monotonic() - t0
            if running >= args.tasks:
                converged_after = elapsed
                timeline.append((elapsed, running, revisions.lag_of(views[-1:])))
                break
            if elapsed >= next_mark:
                timeline.append((elapsed, running, revisions.lag_of(views[-1:])))
                next_mark = math.floor(elapsed / args.mark) * args.mark + args.mark
            children.check_alive()
            time.sleep(args.poll_interval)
        for probe in probes:
            probe.stop()
    if profiler is not None:
        stop_profiler(profiler)
    wall = time.monotonic() - t0
    machine_busy = (machine_cpu()[0] - machine_before[0]) / wall
    after = etcd_counters(etcd_port)
    scraped_after, etcd_scraped_after = scrape(http), scrape(etcd_http)
    cpu_used = {c.name: cpu_seconds(c.pid) - cpu_before[c.name] for c in [server, etcd, *workers]}
    children_used = children_cpu_seconds(server.pid) - children_before
    own_used = time.process_time() - own_before
    _, hwm = memory_mib(server.pid)
    lost = log_count(worker_logs, "does not know node") - lost_before
    # An agent that reached no server for too long stops its tasks (the leader replaces them).
    fenced = log_count(worker_logs, "(fenced)") - fenced_before
    overflows = listen_overflows() - overflows_before
    step_downs = log_count([server.log], "stepping down")

    # 4. at rest: when the tasks were created and started (agents' clocks), the read APIs
    steady: dict[str, list[float]] = {"/v1/tasks": [], "/v1/tasks?limit=500": [], "/v1/nodes": []}
    created: list[float] = []
    started: list[float] = []
    for path, values in steady.items():
        for _ in range(3):
            t = time.perf_counter()
            response = http.get(path)
            values.append(time.perf_counter() - t)
            if path == "/v1/tasks" and response.status_code == 200:  # not a loaded 503
                tasks = [x for x in response.json()["tasks"] if x["service"] in wanted]
                created = [x["created_at"] - t0_wall for x in tasks]
                started = [x["started_at"] - t0_wall for x in tasks if x["started_at"]]
    # The server's CPU once everything runs: heartbeats, and the leader's passes (at least one
    # a second) over a cluster where nothing changes.
    rest_profiler = (
        start_profiler(children, server.pid, rest_profile, args.rest_window)
        if args.py_spy_rest
        else None
    )
    rest_cpu, rest_wall = cpu_seconds(server.pid), time.monotonic()
    time.sleep(args.rest_window)
    rest_cores = (cpu_seconds(server.pid) - rest_cpu) / (time.monotonic() - rest_wall)
    if rest_profiler is not None:
        stop_profiler(rest_profiler)
    joined = second_server_rows(children, etcd_port, url, args.timeout)
    http.close()

    # 5. the table
    answered = ", ".join(f"{1000 * s:,.0f} ms" for s in deploy_answers)
    rows.append(
        (
            f"deploy: {args.tasks} tasks in {args.services} services",
            f"{len(docs)} document(s) back to back, answered in {answered}",
        )
    )
    rows += revisions.rows(views)
    if created:
        rows.append(("tasks created (created_at): p10 / p50 / p90 / last", spread(created)))
    if len(started) >= args.tasks:
        rows.append(("tasks started on their nodes (agents' started_at): same", spread(started)))
    if converged_after is not None:
        rows.append(
            (f"all {args.tasks} reported running (GET /v1/groups)", f"{converged_after:.2f} s")
        )
        rows.append(
            (
                "placements per second (T / time to all running)",
                f"{args.tasks / converged_after:,.0f}",
            )
        )
    else:
        rows.append(
            (f"NOT converged within {args.timeout:.0f} s", f"{running} of {args.tasks} running")
        )
    rows.append(
        (
            "server CPU during the run (of it, its passes' child processes)",
            f"{cpu_used['server']:.1f} s ({cpu_used['server'] / wall:.2f} cores; "
            f"children {children_used:.1f} s)",
        )
    )
    rows.append(
        ("server peak RSS (sampled VmRSS / VmHWM)", f"{sampler.peak_rss:.0f} / {hwm:.0f} MiB")
    )
    child_rss = re.findall(r"child processes: peak RSS (\d+) MiB", server.log.read_text())
    rows.append(
        (
            "its reconcile passes' child processes: peak RSS (pages shared with it included)",
            f"{max(int(x) for x in child_rss)} MiB" if child_rss else "not logged (no slow pass)",
        )
    )
    rows.append(("etcd CPU during the run", f"{cpu_used['etcd']:.1f} s"))
    rows.append(
        ("machine CPU busy during the run", f"{machine_busy:.2f} of {os.cpu_count()} cores")
    )
    hollow_cpu = sum(v for k, v in cpu_used.items() if k.startswith("hollow-"))
    rows.append((f"hollow nodes' CPU ({len(workers)} processes)", f"{hollow_cpu:.1f} s"))
    rows.append(("this benchmark's own CPU (its probes, polls and scrapes)", f"{own_used:.1f} s"))
    rows.append(("node leases lost during the run (re-registrations)", f"{lost:,}"))
    rows.append(("leader step-downs (whole server life)", f"{step_downs}"))
    rows.append(("agents that fenced their tasks (no server reached)", f"{fenced:,}"))
    rows.append(("connections dropped: listen backlog full (machine-wide)", f"{overflows:,}"))
    rows.append(("polls of GET /v1/groups refused (non-200)", f"{refused_polls}"))
    rows.append(
        (
            "etcd: seconds with a slow watcher / most watch events pending",
            f"{watchers.slow_seconds:.0f} s / {watchers.peak_pending:,.0f}",
        )
    )
    if watchers.unapplied:
        backlog = sorted(watchers.unapplied)
        rows.append(
            (
                "etcd: proposals committed, not yet applied (4 samples a second): p50 / max",
                f"{backlog[len(backlog) // 2]:,.0f} / {backlog[-1]:,.0f} "
                f"(of {len(backlog)} samples, {sum(b > 0 for b in backlog)} above 0)",
            )
        )
    rows += loop_rows(scraped_before, scraped_after)
    rows += slow_rows(scraped_before, scraped_after, etcd_scraped_before, etcd_scraped_after)

    rows += etcd_rows(before, after)
    rows += request_rows(scraped_before, scraped_after, args.tasks)
    for probe in probes:
        errors = ", ".join(f"{n} x {kind}" for kind, n in probe.errors.items())
        rows.append(
            (
                f"during the run: {probe.name}",
                fmt_ms(probe.latencies) + (f"; errors: {errors}" if errors else ""),
            )
        )
    for probe in probes:
        if probe.latencies:
            rows.append((f"  slowest: {probe.name.strip()}", slowest(probe, t0)))
    for probe in probes:
        for kind, message in probe.messages.items():
            rows.append((f"  {probe.name}: first {kind}", message.replace("\n", " ")))
    for path, values in steady.items():
        rows.append((f"all running, at rest: GET {path}", fmt_ms(values)))
    rows.append(
        (
            f"all running, at rest: server CPU ({args.rest_window:.0f} s)",
            f"{rest_cores:.2f} cores",
        )
    )
    rows += joined

    print()
    print(
        f"control plane at scale: {args.nodes} hollow nodes ({len(workers)} processes), "
        f"{args.tasks} tasks in {args.services} services, etcd --max-txn-ops "
        f"{args.etcd_max_txn_ops}, {os.cpu_count()} cores"
    )
    width = max(len(label) for label, _ in rows) + 2
    print(f"{'measure':<{width}}value")
    for label, value in rows:
        print(f"{label:<{width}}{value}")
    print()
    print(
        "running over time (the server's view behind etcd): "
        + ", ".join(f"{t:.1f}s={n} ({lag:.1f})" for t, n, lag in timeline)
    )
    if profiler is not None and profile.exists() and not args.py_spy_timeline:
        print()
        print(profile_summary(profile))
    if rest_profile.exists():
        print()
        print("at rest, all running:", profile_summary(rest_profile))
    return 0 if converged_after is not None else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4, help="hollow-node processes")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds, per phase")
    parser.add_argument(
        "--hollow-nice", type=int, default=10, help="the hollow nodes' niceness (0: as the server)"
    )
    parser.add_argument(
        "--hollow-gc",
        choices=("freeze", "default"),
        default="freeze",
        help="the hollow nodes' garbage collection: the server's policy, or Python's default",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.5, help="seconds between convergence polls"
    )
    parser.add_argument(
        "--probe-interval", type=float, default=1.0, help="seconds between probe requests; 0: none"
    )
    parser.add_argument(
        "--rest-window", type=float, default=10.0, help="seconds of server CPU at rest, all running"
    )
    parser.add_argument("--idle-window", type=float, default=3.0)
    parser.add_argument(
        "--settle-leases", type=float, default=0, help="first, seconds without a lease granted"
    )
    parser.add_argument("--mark", type=float, default=2.0, help="timeline step, seconds")
    parser.add_argument("--etcd-max-txn-ops", type=int, default=MAX_TXN_OPS)
    parser.add_argument("--server-log-level", default="info")
    parser.add_argument("--py-spy", action="store_true", help="profile the server's deploy phase")
    parser.add_argument(
        "--py-spy-seconds", type=float, default=0, help="profile only the first N seconds"
    )
    parser.add_argument(
        "--py-spy-timeline",
        action="store_true",
        help="profile the deploy phase in Chrome's trace format, each sample timed (needs --keep)",
    )
    parser.add_argument(
        "--py-spy-rest",
        action="store_true",
        help="profile the server at rest, all running (the --rest-window)",
    )
    parser.add_argument(
        "--probe-second-server",
        action="store_true",
        help="send the probes to a second server, started before the deploy",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    with children_in_temp_dir("theseus-scale-", args.keep) as children:
        code = run(args, children)
    sys.exit(code)


if __name__ == "__main__":
    main()
