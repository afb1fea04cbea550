"""Where a server's event loop was while it ran late: its stack, sampled from a thread.

A late event loop is the server's worst latency: every request, heartbeat and watch event
waits behind whatever holds it. ``theseus.server.stall.StallWatch`` notices how late the loop
came round; this module says what held it. ``LoopSampler`` is a daemon thread that wakes
every ``period`` (50 ms) and, whenever the loop has not come round for longer than ``after``
(200 ms), reads the loop thread's current Python stack (``sys._current_frames``) and counts
it. When the loop comes round again, the watch takes the counts (``take``) and logs them with
the lateness, so a stall in the log says where it was spent.

Reading another thread's frames needs the GIL, which this thread gets within the process's
switch interval (``theseus.server.serve``) unless the holder is inside one long C call; the
sample then shows the loop thread where it was once that call returned, and a loop thread
that only waited (for the GIL, another thread's work) is seen at the line it waited on. The
thread costs 20 wake-ups a second, a comparison each, while the loop keeps up.

``describe`` (pure) turns a stack into one line: the innermost frame, and the innermost few
of Theseus's own frames above it. Created and started by ``theseus.server.app`` for servers
on a real etcd; tests drive ``look`` and ``take`` directly.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType

PERIOD = 0.05  # seconds between two looks at the loop
AFTER = 0.2  # the loop is sampled once it has not come round for this long
OWN_FRAMES = 3  # Theseus's frames named per stack, innermost first
SHOWN = 3  # stacks named per late tick in the log

_PACKAGE = "theseus"


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename.replace("\\", "/")
    if f"/{_PACKAGE}/" in path:
        path = _PACKAGE + "/" + path.rsplit(f"/{_PACKAGE}/", 1)[1]
    else:
        path = path.rsplit("/", 1)[-1]
    return f"{code.co_qualname} ({path}:{frame.f_lineno})"


def _own(frame: FrameType) -> bool:
    return f"/{_PACKAGE}/" in frame.f_code.co_filename.replace("\\", "/")


def describe(frame: FrameType | None, own_frames: int = OWN_FRAMES) -> str:
    """One line for a stack: its innermost frame, then up to ``own_frames`` of Theseus's
    own frames from the inside out (``<`` reads "called from")."""
    if frame is None:
        return "(no Python frame)"
    parts = [_where(frame)]
    seen = 1 if _own(frame) else 0
    caller = frame.f_back
    while caller is not None and seen < own_frames:
        if _own(caller):
            parts.append(_where(caller))
            seen += 1
        caller = caller.f_back
    return " < ".join(parts)


def summary(counts: Counter[str], shown: int = SHOWN) -> str:
    """The most sampled stacks, each with its share of the samples."""
    total = sum(counts.values())
    if not total:
        return ""
    return "; ".join(
        f"{100 * count // total}% in {stack}" for stack, count in counts.most_common(shown)
    )


class LoopSampler:
    """Samples the stack of the thread ``loop_thread`` while ``last_seen`` (the monotonic
    time the loop last came round) is more than ``after`` seconds old."""

    def __init__(
        self,
        loop_thread: int,
        last_seen: Callable[[], float],
        period: float = PERIOD,
        after: float = AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop_thread = loop_thread
        self._last_seen = last_seen
        self._period = period
        self._after = after
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.look()

    def look(self) -> None:
        """Sample the loop thread if the loop is late (what the thread does every period)."""
        if self._clock() - self._last_seen() > self._after:
            self.sample()

    def sample(self) -> None:
        """Count where the loop thread is now."""
        frame = sys._current_frames().get(self._loop_thread)
        stack = describe(frame)
        with self._lock:
            self._counts[stack] += 1

    def take(self) -> Counter[str]:
        """The stacks counted since the last take (the loop came round: this lateness is
        over), and a fresh count for the next."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        return counts
