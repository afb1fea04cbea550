"""What ``bench/scale.py`` reads from the server's and etcd's ``/metrics``: requests by route,
garbage-collector pauses, late event-loop ticks, how long heartbeats took; and, sampled
through the run, whether etcd had a slow watcher (a client that reads its watch stream slower
than etcd writes: the server's cache falling behind etcd, BENCHMARKS.md, issue 17's sixth
session)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from api_probes import fmt_ms
from procs import Periodic, percentile
from prometheus_client.parser import text_string_to_metric_families

Scrape = list[tuple[str, dict[str, str], float]]  # (sample name, labels, value)


def scrape(http: httpx.Client) -> Scrape:
    """The server's /metrics, every sample; empty when it did not answer 200."""
    response = http.get("/metrics")
    if response.status_code != 200:
        return []
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def api_requests(samples: Scrape) -> Counter[tuple[str, str, str]]:
    """Every request the server answered so far, by (method, route template, status)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for name, labels, value in samples:
        if name == "theseus_api_requests_total":
            counts[labels["method"], labels["route"], labels["status"]] += int(value)
    return counts


def gc_pauses(samples: Scrape) -> Counter[str]:
    """The server's garbage-collector pauses so far: seconds (``<gen> s``), collections
    (``<gen> n``) and the unreachable objects they freed (``<gen> found``), by generation."""
    pauses: Counter[str] = Counter()
    for name, labels, value in samples:
        if name == "theseus_gc_pause_seconds_sum":
            pauses[f"{labels['generation']} s"] += value
        elif name == "theseus_gc_pause_seconds_count":
            pauses[f"{labels['generation']} n"] += value
        elif name == "python_gc_objects_collected_total":  # cyclic garbage found
            pauses[f"{labels['generation']} found"] += value
    return pauses


def passes(samples: Scrape) -> Counter[str]:
    """The leader's reconcile passes so far, by where they ran and their scope
    (``child all``, ``child changed``, ``thread all``, ``thread changed``)."""
    counted: Counter[str] = Counter()
    for name, labels, value in samples:
        if name == "theseus_reconcile_passes_total":
            counted[f"{labels['where']} {labels['scope']}"] += value
    return counted


LATE_TICKS = ("0.1", "0.25", "1.0")  # the loop-lag buckets the table counts ticks beyond


def late_ticks(samples: Scrape) -> Counter[str]:
    """Ticks of the server's event-loop watch so far (``all``), and how many came within each
    of ``LATE_TICKS`` seconds of lateness (histogram buckets)."""
    ticks: Counter[str] = Counter()
    for name, labels, value in samples:
        if name == "theseus_event_loop_lag_seconds_count":
            ticks["all"] += value
        elif name == "theseus_event_loop_lag_seconds_bucket" and labels["le"] in LATE_TICKS:
            ticks[labels["le"]] += value
    return ticks


HEARTBEAT_ROUTE = "/v1/agent/{node}/heartbeat"


def heartbeat_times(samples: Scrape) -> Counter[str]:
    """The server's heartbeat answers so far: how many (``n``), their total seconds (``s``),
    how many took over a second (``slow``), and the same total for the lease refresh in
    each (``refresh s``, ``refresh n``): a heartbeat waited for its etcd lease refresh, before
    issue 17's twenty-fourth session; and the leases granted or TTLs changed since (``grants``:
    a node's registration, or its lease replaced by one of the TTL
    the cluster's size calls for)."""
    times: Counter[str] = Counter()
    for name, labels, value in samples:
        if labels.get("route") == HEARTBEAT_ROUTE:
            if name == "theseus_api_request_duration_seconds_count":
                times["n"] += value
                times["slow"] += value
            elif name == "theseus_api_request_duration_seconds_sum":
                times["s"] += value
            elif name == "theseus_api_request_duration_seconds_bucket" and labels["le"] == "1.0":
                times["slow"] -= value
        elif labels.get("operation") == "refresh_lease":
            if name == "theseus_etcd_request_duration_seconds_count":
                times["refresh n"] += value
            elif name == "theseus_etcd_request_duration_seconds_sum":
                times["refresh s"] += value
        elif (
            labels.get("operation") == "grant_lease"
            and name == "theseus_etcd_request_duration_seconds_count"
        ) or name == "theseus_node_ttl_changes_total":
            times["grants"] += value
    return times


SLOW = ("0.1", "0.25")  # seconds: the bounds a histogram's slow share is counted beyond


def durations(samples: Scrape, family: str, label: str, value: str) -> Counter[str]:
    """One series of a duration histogram so far: how many (``n``), their seconds (``s``),
    and how many took at most each of ``SLOW`` (by bound)."""
    times: Counter[str] = Counter()
    for name, labels, sample in samples:
        if labels.get(label) != value:
            continue
        if name == f"{family}_count":
            times["n"] += sample
        elif name == f"{family}_sum":
            times["s"] += sample
        elif name == f"{family}_bucket" and labels["le"] in SLOW:
            times[labels["le"]] += sample
    return times


def slow_rows(before: Scrape, after: Scrape, etcd_before: Scrape, etcd_after: Scrape) -> Rows:
    """Where a write's time went between two scrapes: the server's etcd commits (plans,
    reports, users' writes alike) as the server timed them and as etcd did (its gRPC handling
    time of a ``Txn``, from ``--metrics extensive``: the difference is the time the request
    and its answer spent in the server's process, the gRPC client and the loop), and its
    answers to ``POST /deploy`` (timed from the route's start to its answer: what a client
    waited beyond it was the loop's queue and the network)."""
    rows: Rows = []
    for measure, times in (
        (
            "etcd commits, server side",
            delta(before, after, "theseus_etcd_request_duration_seconds", "operation", "commit"),
        ),
        (
            "etcd commits, etcd side (Txn)",
            delta(etcd_before, etcd_after, "grpc_server_handling_seconds", "grpc_method", "Txn"),
        ),
        (
            "POST /deploy answers, server side",
            delta(before, after, "theseus_api_request_duration_seconds", "route", "/deploy"),
        ),
    ):
        n = times["n"]
        over = " / ".join(f"{n - times[bound]:,.0f}" for bound in SLOW)
        rows.append(
            (
                f"{measure} during the run: mean / over 0.1 / over 0.25 s",
                f"{times['s'] / max(1, n) * 1000:,.0f} ms / {over} of {n:,.0f}",
            )
        )
    return rows


def delta(before: Scrape, after: Scrape, family: str, label: str, value: str) -> Counter[str]:
    """``durations`` of one series between two scrapes."""
    times = durations(after, family, label, value)
    times.subtract(durations(before, family, label, value))
    return times


def wait_for_leases_to_settle(
    http: httpx.Client, quiet: float, timeout: float
) -> tuple[float, int]:
    """Until the server has granted no lease for ``quiet`` seconds, at most ``timeout``: the
    tail of a registration storm, in which a node registered while the cluster was smaller
    has its lease replaced by a longer one at a heartbeat (``theseus.server.heartbeats``).
    Seconds waited, and the leases granted meanwhile."""
    started = changed_at = time.monotonic()
    first = last = heartbeat_times(scrape(http))["grants"]
    while time.monotonic() - started < timeout and time.monotonic() - changed_at < quiet:
        time.sleep(1.0)
        grants = heartbeat_times(scrape(http))["grants"]
        if grants != last:
            last, changed_at = grants, time.monotonic()
    return time.monotonic() - started, int(last - first)


def requests_by_route(answered: Counter[tuple[str, str, str]]) -> Counter[str]:
    """``api_requests`` by method and route: the difference over the deploy says what each
    task costs in requests."""
    routes: Counter[str] = Counter()
    for (method, route, _), n in answered.items():
        routes[f"{method} {route}"] += n
    return routes


def seconds_by_route(samples: Scrape) -> Counter[str]:
    """The seconds the server's answers took so far, in all, by method and route (its
    request-duration histogram's sums; a long-poll's include its wait)."""
    seconds: Counter[str] = Counter()
    for name, labels, value in samples:
        if name == "theseus_api_request_duration_seconds_sum" and "route" in labels:
            seconds[f"{labels.get('method', '')} {labels['route']}"] += value
    return seconds


def abandoned_by_route(answered: Counter[tuple[str, str, str]]) -> Counter[str]:
    """``api_requests``: agents' requests left undone because their agent had hung up by their
    turn (status 499, ``theseus.server.routes.agent``), by route."""
    counts: Counter[str] = Counter()
    for (method, route, status), n in answered.items():
        if status == "499":
            counts[f"{method} {route}"] += n
    return counts


def registration_answers(answered: Counter[tuple[str, str, str]]) -> Counter[str]:
    """``api_requests``: how agents' registrations were answered, by status."""
    return Counter(
        {status: n for (_, route, status), n in answered.items() if route == "/v1/agent/register"}
    )


Rows = list[tuple[str, str]]  # (measure, value), as bench/scale.py prints them


def loop_rows(before: Scrape, after: Scrape) -> Rows:
    """What happened to the server's event loop between two scrapes: garbage collections,
    late ticks, and how long heartbeats took."""
    pauses = gc_pauses(after)
    pauses.subtract(gc_pauses(before))
    ticks = late_ticks(after)
    ticks.subtract(late_ticks(before))
    beyond = [ticks["all"] - ticks[bound] for bound in LATE_TICKS]
    beats = heartbeat_times(after)
    beats.subtract(heartbeat_times(before))
    mean_beat = beats["s"] / max(1, beats["n"]) * 1000
    mean_refresh = beats["refresh s"] / max(1, beats["refresh n"]) * 1000
    ran = passes(after)
    ran.subtract(passes(before))
    return [
        (
            "leader passes during the run: in a child, over all / scoped; in the thread, same",
            f"{ran['child all']:,.0f} / {ran['child changed']:,.0f}; "
            f"{ran['thread all']:,.0f} / {ran['thread changed']:,.0f}",
        ),
        (
            "server GC pauses during the run, generation 0 / 1 / 2",
            " / ".join(f"{pauses[f'{g} s']:.1f} s in {pauses[f'{g} n']:,.0f}" for g in "012"),
        ),
        (
            "  unreachable objects they freed (cyclic garbage), generation 0 / 1 / 2",
            " / ".join(f"{pauses[f'{g} found']:,.0f}" for g in "012"),
        ),
        (
            "event-loop ticks (every 100 ms) late by > 0.1 / 0.25 / 1 s",
            f"{' / '.join(f'{n:,.0f}' for n in beyond)} of {ticks['all']:,.0f}",
        ),
        (
            "heartbeats: mean answer / over 1 s / mean etcd lease refresh / leases granted",
            f"{mean_beat:,.0f} ms / {beats['slow']:,.0f} of {beats['n']:,.0f} / "
            f"{mean_refresh:,.0f} ms / {beats['grants']:,.0f}",
        ),
    ]


def request_rows(before: Scrape, after: Scrape, tasks: int) -> Rows:
    """The requests the server answered between two scrapes: in all, per task, the five
    routes with most, and those left undone because the agent had hung up."""
    answered_before, answered_after = api_requests(before), api_requests(after)
    by_route_before = requests_by_route(answered_before)
    requests = {
        route: n - by_route_before.get(route, 0)
        for route, n in requests_by_route(answered_after).items()
        if n > by_route_before.get(route, 0)
    }
    abandoned = abandoned_by_route(answered_after) - abandoned_by_route(answered_before)
    seconds = seconds_by_route(after)
    seconds.subtract(seconds_by_route(before))
    total = sum(requests.values())
    rows = [
        (
            "server requests during the run (per task; mean answer, a long-poll's with its wait)",
            f"{total:,} ({total / tasks:.2f})",
        )
    ]
    for route, n in sorted(requests.items(), key=lambda item: -item[1])[:5]:
        rows.append((f"  {route}", f"{n:,} ({1000 * seconds[route] / n:,.0f} ms)"))
    rows.append(
        (
            "  of those, left undone: the agent had hung up (499)",
            ", ".join(f"{route} {n:,}" for route, n in sorted(abandoned.items())) or "0",
        )
    )
    return rows


@dataclass
class EtcdWatchers(Periodic):
    """Samples etcd's slow watchers and pending watch events every ``interval`` seconds in a
    thread: the seconds it had a slow watcher, and the most events pending at once; and its
    proposals committed but not yet applied (``unapplied``: what a linearizable read, and a
    write's answer, wait behind)."""

    port: int
    interval: float = 1.0
    slow_seconds: float = 0.0
    peak_pending: float = 0.0
    unapplied: list[float] = field(default_factory=list)

    def sample(self) -> None:
        try:
            text = self.http.get(f"http://127.0.0.1:{self.port}/metrics").text
        except httpx.HTTPError:
            return
        committed = applied = 0.0
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "etcd_debugging_mvcc_slow_watcher_total" and float(value) > 0:
                self.slow_seconds += self.interval
            elif name == "etcd_debugging_mvcc_pending_events_total":
                self.peak_pending = max(self.peak_pending, float(value))
            elif name == "etcd_server_proposals_committed_total":
                committed = float(value)
            elif name == "etcd_server_proposals_applied_total":
                applied = float(value)
        self.unapplied.append(committed - applied)


@dataclass
class EtcdRevisions(Periodic):
    """Samples etcd's current revision every ``interval`` seconds in a thread (a count-only
    range through its HTTP gateway: one small read): with the revisions the server's answers
    carry (``X-Theseus-Index``), how far behind etcd the server's view was (``view_lags``)."""

    port: int
    interval: float = 0.1
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, revision)
    durations: list[float] = field(default_factory=list)  # seconds each read took

    def sample(self) -> None:
        body = {"key": "YmVuY2gtcmV2aXNpb24=", "count_only": True}  # "bench-revision"
        sent = time.monotonic()
        try:
            answer = self.http.post(f"http://127.0.0.1:{self.port}/v3/kv/range", json=body)
            revision = int(answer.json()["header"]["revision"])
        except (httpx.HTTPError, KeyError, ValueError):
            return
        self.durations.append(time.monotonic() - sent)
        self.samples.append((time.monotonic(), revision))

    def lag_of(self, views: list[tuple[float, int]]) -> float:
        """How far behind etcd the last of ``views`` was, in seconds (0 with none)."""
        return view_lags(self.samples, views[-1:])[0] if views else 0.0

    def rows(self, views: list[tuple[float, int]]) -> Rows:
        """The server's view behind etcd over ``views``, and etcd's own answer time."""
        rows: Rows = []
        lags = view_lags(self.samples, views)
        if lags:
            marks = [percentile(lags, q) for q in (0.5, 0.9)] + [max(lags)]
            rows.append(
                (
                    "the server's view behind etcd, in its GET /v1/groups: p50 / p90 / max",
                    " / ".join(f"{m:.2f}" for m in marks) + " s",
                )
            )
        if self.durations:
            rows.append(("etcd answering a read of the benchmark's", fmt_ms(self.durations)))
        return rows


def view_lags(etcd: list[tuple[float, int]], views: list[tuple[float, int]]) -> list[float]:
    """For each (time, revision) the server's view had: seconds since etcd first held a
    newer revision than that one (0 when etcd held none then), the view's lag behind etcd
    to within the sampling interval. Both lists in time order."""
    lags = []
    for at, view in views:
        newer = next((t for t, revision in etcd if revision > view), None)
        lags.append(0.0 if newer is None or newer > at else at - newer)
    return lags


def etcd_rows(before: dict[str, float], after: dict[str, float]) -> Rows:
    """What etcd's counters (``procs.ETCD_COUNTERS``) say of the run: keys and transactions,
    bytes, and its disk."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    puts, deletes = int(delta("etcd_mvcc_put_total")), int(delta("etcd_mvcc_delete_total"))
    rows: Rows = [
        ("etcd keys written (put + deleted)", f"{puts + deletes:,} ({puts:,} + {deletes:,})"),
        (
            "etcd revisions / txns / raft proposals",
            f"{delta('etcd_debugging_mvcc_current_revision'):,.0f} / "
            f"{delta('etcd_mvcc_txn_total'):,.0f} / "
            f"{delta('etcd_server_proposals_committed_total'):,.0f}",
        ),
        # What the records' size costs: its WAL, and its answers to gRPC clients (the
        # servers' commits and lease refreshes, and its own HTTP gateway, which serves the
        # servers' watches).
        (
            "etcd: WAL bytes written / bytes sent to gRPC clients",
            f"{delta('etcd_disk_wal_write_bytes_total') / 1e6:,.1f} MB / "
            f"{delta('etcd_network_client_grpc_sent_bytes_total') / 1e6:,.1f} MB",
        ),
    ]
    # etcd's own disk: whether its writes waited on the machine's disk or on its CPU.
    disk = []
    for what in ("wal_fsync", "backend_commit"):
        count = int(delta(f"etcd_disk_{what}_duration_seconds_count"))
        seconds = delta(f"etcd_disk_{what}_duration_seconds_sum")
        disk.append(f"{count:,} in {seconds:.1f} s ({1000 * seconds / max(count, 1):.1f} ms each)")
    rows.append(("etcd: WAL fsyncs / backend commits", " / ".join(disk)))
    return rows
