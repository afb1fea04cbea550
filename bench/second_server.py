"""``bench/scale.py``'s last measure: a second server joins the cluster at rest.

It starts with nothing and loads the whole state from etcd, as a restarted server, a new
leader after a failover, or any other server of the cluster does: how long until its view has
caught up with the first server's, and its RSS then. The first server's own records were
made by its passes and never parsed, so its RSS does not tell what a loaded state costs.
"""

from __future__ import annotations

import time

import httpx
from procs import Processes, memory_mib, start_server, wait_until

Rows = list[tuple[str, str]]


def second_server_rows(children: Processes, etcd_port: int, first_url: str, timeout: float) -> Rows:
    with httpx.Client(base_url=first_url, timeout=30.0) as http:
        revision = int(http.get("/v1/health").json()["revision"])
    started = time.monotonic()
    server, url = start_server(children, etcd_port, name="server-2")

    def caught_up() -> bool:
        try:  # a slow answer while it loads is asked again, not the end of the benchmark
            answer = httpx.get(f"{url}/v1/health", timeout=10.0)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and int(answer.json()["revision"]) >= revision

    wait_until(caught_up, timeout, "the second server's view to catch up", interval=0.1)
    took = time.monotonic() - started
    rss, hwm = memory_mib(server.pid)
    server.stop()
    return [
        (
            "a second server joins at rest: its view caught up after (process start included)",
            f"{took:.2f} s",
        ),
        ("  its RSS then (VmRSS / VmHWM)", f"{rss:.0f} / {hwm:.0f} MiB"),
    ]
