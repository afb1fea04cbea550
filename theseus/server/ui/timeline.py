"""A group's deployments drawn as a timeline (pure): one lane per deployment, oldest at the
top, each a bar from its start to its end (now, while it runs) on one time axis, coloured by
its status, labelled with its versions, kind, status and duration. The group page renders it
as an SVG (``templates/group.html``) above the table of the same deployments.

The axis is linear from the first drawn deployment's start to now, so the gaps between
rollouts show; a bar too short to see is drawn ``MIN_BAR`` wide (its label gives the
duration). Called by ``theseus.server.ui.views.group_page``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from theseus.model.deployments import DeploymentRecord

MOST = 10  # the latest deployments drawn (the table below lists every kept one)
WIDTH = 640  # the SVG's viewBox: bars on the left, their labels in a column on the right
BARS = 380
LANE = 22
BAR_HEIGHT = 12
AXIS = 18  # the time labels under the lanes
MIN_BAR = 3.0


def duration(seconds: float) -> str:
    """``45s``, ``3m10s``, ``2h05m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def deployment_timeline(
    records: Iterable[DeploymentRecord], now: float, most: int = MOST
) -> dict[str, Any] | None:
    """The drawing of the latest ``most`` deployments; ``None`` without any."""
    chosen = sorted(records, key=lambda d: (d.started_at, d.id))[-most:]
    if not chosen:
        return None
    start = chosen[0].started_at
    span = max(now - start, 1.0)
    bars = []
    for lane, record in enumerate(chosen):
        end = now if record.running else max(record.updated_at, record.started_at)
        x = (record.started_at - start) / span * BARS
        width = max(MIN_BAR, (end - record.started_at) / span * BARS)
        x = min(x, BARS - width)  # a bar that starts just now still shows whole
        versions = (
            f"v{record.from_version}→v{record.to_version}"
            if record.from_version
            else f"v{record.to_version}"
        )
        took = duration(end - record.started_at)
        top = lane * LANE + (LANE - BAR_HEIGHT) // 2
        bars.append(
            {
                "id": record.id,
                "status": record.status,
                "x": round(x, 1),
                "y": top,
                "width": round(width, 1),
                "text_y": top + BAR_HEIGHT - 2,
                "label": f"{versions} {record.kind} · {record.status} · {took}",
                "title": f"{record.id}: {record.message}" if record.message else record.id,
            }
        )
    lanes = len(chosen) * LANE
    return {
        "width": WIDTH,
        "height": lanes + AXIS,
        "bars": bars,
        "bar_area": BARS,
        "label_x": BARS + 8,
        "axis_y": lanes + AXIS - 5,
        "since": duration(now - start),
        "bar_height": BAR_HEIGHT,
    }
