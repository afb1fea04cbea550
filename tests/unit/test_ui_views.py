"""The dashboard's view models (``theseus.server.ui.views``): counts, why tasks wait,
ports as links, pages of a long list, and every dashboard route has its policy entry."""

from __future__ import annotations

from tests.kit.builders import make_group, make_node, make_state, make_status, make_task
from theseus.model.tasks import TaskState
from theseus.server.app import create_app
from theseus.server.config import ServerConfig
from theseus.server.policy import FALLBACK, decide
from theseus.server.ui import actions, live, pages, views


def test_overview_counts_desired_running_and_healthy_and_nodes_by_status() -> None:
    group = make_group("web", instances=3, ports={"http": 80})
    a = make_task(group, "n1")
    b = make_task(group, "n2")
    waiting = make_task(group, None, pending_reason="no node has 0.1 free cpus")
    state = make_state(
        [group],
        [make_node("n1"), make_node("n2")],
        [a, b, waiting],
        [make_status(a, TaskState.RUNNING), make_status(b, TaskState.STARTING)],
        lost={"n2"},
    )
    page = views.overview(state, [])
    (row,) = page["groups"]
    assert (row["desired"], row["running"], row["healthy"], row["pending"]) == (3, 1, 1, 1)
    assert not row["ok"]
    assert page["nodes"] == {"lost": 1, "ready": 1}


def test_group_page_counts_why_tasks_wait_and_links_ports() -> None:
    group = make_group("web", instances=3, ports={"http": 80})
    placed = make_task(group, "n1", host_ports={"http": 31005})
    reason = "no node has 0.1 free cpus"
    waiting = [make_task(group, None, pending_reason=reason) for _ in range(2)]
    state = make_state([group], [make_node("n1")], [placed, *waiting], [])
    page = views.group_page(state, group.group_key.key, now=61.0)
    assert page is not None
    assert page["waiting"] == [(reason, 2)]
    row = next(t for t in page["tasks"] if t["id"] == placed.id)
    assert row["links"] == [{"name": "http", "url": "http://127.0.0.2:31005"}]
    assert row["age"] == "1m"
    assert views.group_page(state, "nope/[]", 0.0) is None


def test_long_lists_page() -> None:
    group = make_group("web", instances=250)
    tasks = [make_task(group, "n1") for _ in range(250)]
    state = make_state([group], [make_node("n1")], tasks, [])
    page = views.group_page(state, group.group_key.key, 0.0, page=3)
    assert page is not None
    assert len(page["tasks"]) == 50 and page["pager"].pages == 3
    last = views.group_page(state, group.group_key.key, 0.0, page=99)
    assert last is not None and last["pager"].number == 3


def test_ages_read_shortly() -> None:
    assert [views.age(s) for s in (5, 125, 7300, 200000, -3)] == ["5s", "2m", "2h", "2d", "0s"]


def test_every_dashboard_route_has_an_explicit_policy_entry() -> None:
    create_app(ServerConfig())  # the app includes these routers
    routes = [*pages.router.routes, *actions.router.routes, *live.router.routes]
    paths = {
        (method, getattr(route, "path", ""))
        for route in routes
        for method in getattr(route, "methods", None) or ()
    }
    assert len(paths) > 20
    for method, path in paths:
        concrete = path.replace("{", "").replace("}", "")
        assert decide(method, concrete).rule != FALLBACK, (method, path)


def test_group_counts_are_counted_again_only_when_the_group_or_its_tasks_changed() -> None:
    group = make_group("web", instances=2)
    task = make_task(group, "n1")
    state = make_state([group], [make_node("n1")], [task], [make_status(task, TaskState.STARTING)])
    index = {group.group_key.key: 5}
    memo = views.CountsMemo(index, lambda: 1)
    assert memo(state, group.group_key.key, group)["running"] == 0
    state.statuses[task.id] = make_status(task, TaskState.RUNNING)
    # Nothing told the memo: the cache moves group_index along with every task change.
    assert memo(state, group.group_key.key, group)["running"] == 0
    index[group.group_key.key] = 6
    assert memo(state, group.group_key.key, group)["running"] == 1
    scaled = make_group("web", instances=3)
    assert memo(state, group.group_key.key, scaled)["desired"] == 3


def test_a_chart_scales_its_points_to_the_highest_value_and_skips_gaps() -> None:
    drawn = views.chart([0.0, None, 2.0, 1.0])
    assert drawn is not None
    assert drawn["latest"] == 1.0 and drawn["max"] == 2.0
    xs = [float(p.split(",")[0]) for p in drawn["points"].split()]
    ys = [float(p.split(",")[1]) for p in drawn["points"].split()]
    assert xs == [0.0, 200.0, 300.0]  # the gap leaves no point
    assert ys[1] == 1.0 and ys[0] == views.CHART_HEIGHT - 1  # the top, and the bottom
    assert views.chart([None, None]) is None
