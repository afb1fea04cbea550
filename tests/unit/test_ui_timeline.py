"""The group page's deployment timeline (pure): lanes, bars on one time axis, labels."""

from __future__ import annotations

from typing import Any

from theseus.model.deployments import DeploymentRecord
from theseus.server.ui.timeline import BARS, LANE, MIN_BAR, deployment_timeline, duration


def record(id: str, start: float, end: float, **fields: Any) -> DeploymentRecord:
    values: dict[str, Any] = {
        "id": id,
        "group": "web/[]",
        "service": "web",
        "labels": [],
        "kind": "update",
        "from_version": 1,
        "to_version": 2,
        "digest": "abc",
        "instances": 2,
        "status": "successful",
        "started_at": start,
        "updated_at": end,
        "deadline": end + 60,
        "progress_deadline_seconds": 60,
        "auto_revert": True,
    }
    return DeploymentRecord(**(values | fields))


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (4.4, 190, 7500)] == ["4s", "3m10s", "2h05m"]


def test_one_lane_per_deployment_oldest_on_top_on_one_axis() -> None:
    created = record("d-1", 0.0, 10.0, kind="create", from_version=None, to_version=1)
    failed = record("d-2", 50.0, 60.0, status="failed", message="no progress for 8s")
    revert = record("d-3", 60.0, 0.0, kind="revert", status="running", from_version=2)
    drawn = deployment_timeline([revert, created, failed], now=100.0)
    assert drawn is not None
    first, second, third = drawn["bars"]
    assert [b["id"] for b in drawn["bars"]] == ["d-1", "d-2", "d-3"]
    assert [b["y"] for b in drawn["bars"]] == [b * LANE + 5 for b in range(3)]
    assert (first["x"], first["width"]) == (0.0, BARS * 0.1)  # 10 s of the 100 s axis
    assert second["x"] == BARS * 0.5 and second["status"] == "failed"
    # A running deployment reaches now.
    assert third["x"] + third["width"] == BARS and third["status"] == "running"
    assert first["label"] == "v1 create · successful · 10s"
    assert second["label"] == "v1→v2 update · failed · 10s"
    assert third["label"] == "v2→v2 revert · running · 40s"
    assert second["title"] == "d-2: no progress for 8s" and first["title"] == "d-1"
    assert drawn["since"] == "1m40s"


def test_a_short_deployment_is_still_visible_and_only_the_latest_are_drawn() -> None:
    many = [record(f"d-{i:02d}", i * 1000.0, i * 1000.0 + 0.2) for i in range(15)]
    drawn = deployment_timeline(many, now=15_000.0, most=10)
    assert drawn is not None and [b["id"] for b in drawn["bars"]][0] == "d-05"
    assert all(b["width"] == MIN_BAR for b in drawn["bars"])
    assert all(b["x"] + b["width"] <= BARS for b in drawn["bars"])
    assert drawn["height"] == 10 * LANE + 18
    assert deployment_timeline([], now=1.0) is None
