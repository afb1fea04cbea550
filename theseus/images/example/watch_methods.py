"""The example image's watch methods: the watcher calls ``service_change`` in-process whenever
a service in ``WATCHES`` changes.

Each call prints exactly one line, in a fixed format that tests and benchmarks parse::

    service_change('ingestor', 2) at 1764000000.123456

(the service and the delta as the watcher passed them, then the wall-clock time of the call in
seconds since the epoch, with microseconds).
"""

from __future__ import annotations

import sys
import threading
import time

_lock = threading.Lock()


def service_change(service: object, delta: object) -> None:
    """Log one change of a watched service (``delta``: the change in its instance count)."""
    now = time.time()
    line = f"service_change({service!r}, {delta!r}) at {now:.6f}\n"
    with _lock:  # one write per line, so that concurrent watches never interleave
        sys.stdout.write(line)
        sys.stdout.flush()
