"""The dashboard in a real browser: Playwright driving Debian's chromium (Playwright's own
browser download is not used; ``scripts/setup`` installs the ``chromium`` package) against a
secure cluster of two process agents. Through the page: sign in, deploy a document and watch
the running count rise without a reload, scale and restart with the buttons, follow a task's
logs without pulling a reader who scrolled up back down, drain a node and see its tasks move,
and a read token sees no button. Every page loads without a script error or a refused resource.

``THESEUS_SCREENSHOTS=docs/dashboard`` saves a screenshot of each page there (the
pictures of docs/dashboard.md)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.cluster import Cluster, start_secure_cluster
from tests.kit.wait import wait_until
from theseus.api.access_client import AccessApi
from theseus.security.tokens import Scope

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CHROMIUM = Path("/usr/bin/chromium")
NODES = {"ui-b-1": "127.0.16.12", "ui-b-2": "127.0.16.13"}
SPEC: dict[str, Any] = {
    "image": "unused-by-the-process-driver",
    "command": 'i=0; while :; do i=$((i+1)); echo "line $i of $CONTAINER_NAME"; sleep 0.1; done',
    "cpus": 0.05,
    "mem": 16,
    "task_kill_grace_period_seconds": 1,
}
SHOTS = os.environ.get("THESEUS_SCREENSHOTS")
# Console errors that are the browser's, not the page's: a fetch cut by a navigation, and
# Chromium's reaction to network interfaces appearing (other tests' Docker networks).
BROWSER_NOISE = ("net::ERR_ABORTED", "net::ERR_NETWORK_CHANGED")

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    agents = {
        name: {
            "address": address,
            "driver": "process",
            "cpus": 2.0,
            "mem": 1024,
            "stats_interval": 1.0,
        }
        for name, address in NODES.items()
    }
    root = Path(tmp_path_factory.mktemp("dashboard-browser"))
    cluster = start_secure_cluster(root, agents, servers=2)  # a tab moves to the other one
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/setup installs Debian's package")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


def _page(browser: Any, cluster: Cluster, token: str, width: int = 1200) -> Any:
    """A new tab signed in with ``token`` through the form; script errors and answers of
    4xx/5xx are collected in ``page.problems``."""
    context = browser.new_context(
        ignore_https_errors=True,
        viewport={"width": width, "height": 900},
        base_url=cluster.server_url,
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "console",
        lambda m: (
            m.type == "error"
            and not any(e in m.text for e in BROWSER_NOISE)
            and page.problems.append(f"{m.text} at {m.location}")
        ),
    )
    page.on(
        "response",
        lambda r: (
            r.status >= 400 and page.problems.append(f"{r.status} {r.request.method} {r.url}")
        ),
    )
    page.on("dialog", lambda dialog: dialog.accept())  # every action's confirmation
    page.goto("/")
    assert page.url.endswith("/ui/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/")
    return page


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        size = page.viewport_size
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 640)}
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), clip=clip)


def _live(page: Any) -> None:
    """Mark the document: the mark survives live refreshes, never a reload."""
    page.wait_for_selector("#live-state:text('●')")
    page.evaluate("window.__notReloaded = true")


def _not_reloaded(page: Any) -> bool:
    return bool(page.evaluate("window.__notReloaded === true"))


def _running(cluster: Cluster, service: str) -> list[Any]:
    with cluster.client() as client:
        return [t for t in client.tasks(service).tasks if t.state == "running"]


def test_deploy_through_the_page_and_watch_the_running_count_rise(
    secure: Cluster, browser: Any
) -> None:
    page = _page(browser, secure, secure.admin_token or "")
    _live(page)
    document = json.dumps({"deploy": {"counted": {**SPEC, "instances": 2}}}, indent=1)
    page.goto("/ui/deploy")
    page.fill("#document", document)
    page.click("#plan")
    page.wait_for_selector("#plan-result")
    _shot(page, "deploy")
    page.click("#apply")
    page.wait_for_selector("text=Applied")
    page.goto("/ui/")
    _live(page)
    running = page.locator('tr[data-group="counted/[]"] td.running')
    running.wait_for()
    sync_api.expect(running).to_have_text("2", timeout=30_000)  # without a reload
    assert _not_reloaded(page)
    _shot(page, "overview")
    assert not page.problems, page.problems


def test_scale_with_the_button(secure: Cluster, browser: Any) -> None:
    with secure.client() as client:
        client.deploy(
            json.dumps({"deploy": {"scaled": {**SPEC, "instances": 1}}}), "application/json"
        )
    page = _page(browser, secure, secure.admin_token or "")
    page.goto("/ui/group?id=scaled%2F%5B%5D")
    page.click("#scale-up")  # confirmed by the dialog handler
    page.wait_for_url("**done=scaled**")
    _live(page)
    sync_api.expect(page.locator("#running")).to_have_text("2", timeout=30_000)
    assert _not_reloaded(page)
    _shot(page, "group")
    assert len(_running(secure, "scaled")) == 2
    assert not page.problems, page.problems


def test_restart_with_the_button_replaces_every_task(secure: Cluster, browser: Any) -> None:
    with secure.client() as client:
        client.deploy(
            json.dumps({"deploy": {"restarted": {**SPEC, "instances": 2}}}), "application/json"
        )
    before = {t.id for t in wait_until(lambda: _two_running(secure), 60, "2 running")}
    page = _page(browser, secure, secure.admin_token or "")
    page.goto("/ui/group?id=restarted%2F%5B%5D")
    page.click("#restart")  # confirmed by the dialog handler
    page.wait_for_url("**done=restarting**")
    _live(page)
    kind = page.locator("table.deployments tr:has(td.kind:text-is('restart')) .state")
    sync_api.expect(kind).to_have_text("successful", timeout=60_000)  # live, no reload
    assert _not_reloaded(page)
    after = {t.id for t in _running(secure, "restarted")}
    assert len(after) == 2 and not after & before
    assert not page.problems, page.problems


def _two_running(cluster: Cluster) -> list[Any] | None:
    running = _running(cluster, "restarted")
    return running if len(running) == 2 else None


def test_follow_a_tasks_logs_without_fighting_a_reader_who_scrolls_up(
    secure: Cluster, browser: Any
) -> None:
    with secure.client() as client:
        client.deploy(
            json.dumps({"deploy": {"chatty": {**SPEC, "instances": 1}}}), "application/json"
        )
    task = wait_until(lambda: (r := _running(secure, "chatty")) and r[0], 60, "chatty running")
    page = _page(browser, secure, secure.admin_token or "")
    page.goto(f"/ui/tasks/{task.id}")
    log = page.locator("#log")
    sync_api.expect(log).to_contain_text(f"of {task.id}", timeout=30_000)
    first = int(page.evaluate("document.getElementById('log').textContent.length"))
    # Followed: more lines arrive while the reader stays at the bottom.
    wait_until(
        lambda: page.evaluate("document.getElementById('log').textContent.length") > first + 200,
        20,
        "more log lines",
    )
    # (Evaluated through the debugger: the page's CSP forbids wait_for_function's eval.)
    wait_until(
        lambda: page.evaluate(
            "(() => { const l = document.getElementById('log'); "
            "return l.scrollHeight > l.clientHeight + 100; })()"
        ),
        30,
        "the log well taller than its view (8 px from the bottom still counts as there)",
    )
    assert page.evaluate(
        "(() => { const l = document.getElementById('log'); "
        "return l.scrollTop + l.clientHeight >= l.scrollHeight - 8; })()"
    )
    _shot(page, "task")
    # The reader scrolls up: new lines keep coming, the view stays where the reader put it.
    page.evaluate("document.getElementById('log').scrollTop = 0")
    grown = int(page.evaluate("document.getElementById('log').textContent.length"))
    wait_until(
        lambda: page.evaluate("document.getElementById('log').textContent.length") > grown + 200,
        20,
        "lines while scrolled up",
    )
    assert page.evaluate("document.getElementById('log').scrollTop") == 0
    assert not page.problems, page.problems


def test_a_broken_versions_deployment_fails_and_reverts_on_the_page(
    secure: Cluster, browser: Any
) -> None:
    strategy = {"progress_deadline_seconds": 3, "auto_revert": True}
    good = {**SPEC, "instances": 1, "upgrade_strategy": strategy}
    with secure.client() as client:
        client.deploy(json.dumps({"deploy": {"brittle": good}}), "application/json")
    wait_until(lambda: _running(secure, "brittle"), 60, "brittle running")
    page = _page(browser, secure, secure.admin_token or "")
    page.goto("/ui/deploy")
    # Broken: it exits at once, and its health check never passes, so no task of it ever
    # counts as ready. Without checks, a pass that saw it running before its exit was
    # reported declared the update successful (a loaded CI run); with a check of `true`,
    # the check ran once in the container's few milliseconds, and passed (another).
    check = {"protocol": "COMMAND", "command": "false", "grace_period_seconds": 0}
    broken = {**good, "command": "echo broken; exit 3", "health_checks": [check]}
    page.fill("#document", json.dumps({"deploy": {"brittle": broken}}, indent=1))
    page.click("#apply")
    page.wait_for_selector("text=Applied")
    page.goto("/ui/group?id=brittle%2F%5B%5D")
    _live(page)
    rows = page.locator("table.deployments tbody tr")
    # Live: the update fails at its deadline and a revert deployment appears above it.
    update = rows.filter(has=page.locator("td.kind", has_text=re.compile("^update$")))
    revert = rows.filter(has=page.locator("td.kind", has_text=re.compile("^revert$")))
    sync_api.expect(update).to_contain_text("failed", timeout=60_000)
    sync_api.expect(revert).to_have_count(1, timeout=60_000)
    # The timeline draws the same story: a create, the failed update, then the revert.
    bars = page.locator("svg.timeline g text")
    sync_api.expect(bars.nth(1)).to_contain_text("update · failed")
    sync_api.expect(bars.nth(2)).to_contain_text("revert")
    assert page.locator("svg.timeline g.tl-failed rect").count() == 1
    assert _not_reloaded(page)
    if SHOTS:
        page.locator("section:has(svg.timeline)").screenshot(
            path=str(Path(SHOTS) / "deployment-timeline.png")
        )
    assert not page.problems, page.problems


def test_drain_a_node_and_see_its_tasks_move(secure: Cluster, browser: Any) -> None:
    with secure.client() as client:
        client.deploy(
            json.dumps({"deploy": {"moved": {**SPEC, "instances": 4}}}),
            "application/json",
        )
    wait_until(lambda: len(_running(secure, "moved")) == 4, 60, "moved running")
    drained = "ui-b-1"
    page = _page(browser, secure, secure.admin_token or "")
    page.goto("/ui/nodes")
    card = page.locator(f'article[data-node="{drained}"]')
    card.locator("button", has_text="Drain").click()
    page.wait_for_url("**done=draining**")
    _live(page)
    # Its tasks leave: its count falls to zero on the page, live.
    sync_api.expect(card.locator("dd.tasks")).to_have_text("0", timeout=60_000)
    assert _not_reloaded(page)
    _shot(page, "nodes")
    wait_until(
        lambda: (
            (r := _running(secure, "moved")) and len(r) == 4 and all(t.node != drained for t in r)
        ),
        60,
        "every task of moved on the other node",
    )
    card.locator("button", has_text="Stop draining").click()
    page.wait_for_url("**done=stopped**")
    assert not page.problems, page.problems


def test_a_read_token_sees_no_button(secure: Cluster, browser: Any) -> None:
    with secure.client() as client:
        client.deploy(
            json.dumps({"deploy": {"watched": {**SPEC, "instances": 1}}}), "application/json"
        )
        reader = AccessApi(client).create_token("browser-reader", [Scope.READ], None).token
    page = _page(browser, secure, reader, width=390)  # a phone's width, too
    for path in ("/ui/", "/ui/group?id=watched%2F%5B%5D", "/ui/nodes", "/ui/deployments"):
        page.goto(path)
        buttons = page.locator("main button, main form[method=post]")
        assert buttons.count() == 0, (path, buttons.all_inner_texts())
        assert page.locator("nav a[href='/ui/deploy']").count() == 0
    _shot(page, "phone-read-only")
    # The keyboard: the first Tab reaches the skip link, Enter moves to the content, and the
    # next Tab goes into it.
    page.goto("/ui/nodes")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "live"
    assert not page.problems, page.problems


def test_every_page_loads_without_script_errors_and_follows_dark_mode(
    secure: Cluster, browser: Any
) -> None:
    page = _page(browser, secure, secure.admin_token or "")
    for name, path in (
        ("deployments", "/ui/deployments"),
        ("events", "/ui/events"),
        ("registry", "/ui/registry"),
    ):
        page.goto(path)
        page.wait_for_selector("h1")
        _shot(page, name)
    page.emulate_media(color_scheme="dark")  # the system's dark mode is followed
    page.goto("/ui/")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 19, 24)", background
    _shot(page, "overview-dark")
    assert not page.problems, page.problems
    page.context.clear_cookies()  # signed out: a page goes to the sign-in form
    fresh = page.context.new_page()  # (the old tab's script may be moving there already)
    fresh.goto("/ui/")
    fresh.wait_for_url("**/ui/login")
    _shot(fresh, "login")


def test_a_tab_moves_to_another_server_when_its_own_dies(secure: Cluster, browser: Any) -> None:
    """Last in the module: it kills the server every other test's tab starts on (and starts
    it again)."""
    other = secure.url_of("server-2")
    page = _page(browser, secure, secure.admin_token or "")
    page.goto("/ui/nodes")
    page.wait_for_selector("#live-state:text('●')")
    assert page.url.startswith(secure.server_url)
    secure.kill("server")
    try:
        # The stream fails, this server's health does not answer, the other one does: the
        # tab goes there, on the same page, still signed in (the cookie is the same host's)
        # and live again.
        page.wait_for_url(f"{other}/ui/nodes", timeout=60_000)
        page.wait_for_selector("#live-state:text('●')", timeout=30_000)
        assert "Nodes" in page.inner_text("h1")
        assert page.locator("nav a[href='/ui/deploy']").count() == 1  # as the admin still
    finally:
        secure.restart("server")
    # While its server was gone, the tab's requests to it failed (cut mid-answer, reset,
    # then refused): that is what moved it. Nothing else may have gone wrong.
    gone = [p for p in page.problems if f"'url': '{secure.server_url}/" not in p]
    assert not gone, gone
