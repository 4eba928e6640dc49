"""Browser test: the page works offline.  Every request it makes (scripts, stylesheets, fonts,
icons, the websocket) goes to the app's own server; anything else is recorded and blocked, and
the dice icon of "Random star" is drawn from the page itself."""

from __future__ import annotations

import urllib.parse

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LOAD_MS = 120_000
LOCAL = {"127.0.0.1", "localhost", "::1", "[::1]"}


def test_no_request_leaves_localhost(page, dashboard, artifacts):
    url, store = dashboard
    requests: list[str] = []
    outside: list[str] = []

    def route(r):
        target = r.request.url
        requests.append(target)
        parts = urllib.parse.urlsplit(target)
        if parts.scheme in ("data", "blob") or parts.hostname in LOCAL:
            r.continue_()
        else:
            outside.append(target)
            r.abort()  # as if offline

    page.context.route("**/*", route)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    failed: list[str] = []
    page.on("requestfailed", lambda req: failed.append(req.url))
    star = str(store.catalog["APOGEE_ID"].iloc[5])
    page.goto(f"{url}?star={star.replace('+', '%2B')}", timeout=LOAD_MS)
    page.wait_for_selector(".ss-spectrum-plot", timeout=LOAD_MS)
    expect(page.locator(".ss-selected-star")).to_contain_text(star, timeout=LOAD_MS)
    # visit every tab, so what each view loads is counted too
    for tab in page.locator(".bk-tab").all():
        tab.click()
        page.wait_for_timeout(1500)
    page.locator(".bk-tab").first.click()
    page.wait_for_load_state("networkidle", timeout=LOAD_MS)

    dice = page.locator(".ss-random-star svg.ss-dice")
    expect(dice).to_be_visible(timeout=LOAD_MS)
    box = dice.bounding_box()
    assert box and box["width"] >= 10 and box["height"] >= 10, box
    dice.screenshot(path=artifacts / "offline-dice.png")
    page.screenshot(path=artifacts / "offline-page.png")

    assert len(requests) > 10, requests  # the route saw the page's requests
    assert not outside, "requests left localhost:\n" + "\n".join(outside)
    assert sockets and all(urllib.parse.urlsplit(s).hostname in LOCAL for s in sockets), sockets
    assert not [f for f in failed if urllib.parse.urlsplit(f).hostname in LOCAL], failed


def test_a_first_page_on_another_tab_stays_offline(page, dashboard_server, tmp_path, artifacts):
    """The first page a fresh (warmed) server renders opens on the Catalog tab: its widgets'
    stylesheets (Tabulator, file drop, icons) must come from the server too."""
    from core.mock import generate_mock_survey

    store = generate_mock_survey(tmp_path / "mock", n_stars=60, seed=3, progress=False)
    env = {"STELLARSCOPE_STORE": str(store), "STELLARSCOPE_HOME": str(tmp_path / "home")}
    outside: list[str] = []

    def route(r):
        parts = urllib.parse.urlsplit(r.request.url)
        if parts.scheme in ("data", "blob") or parts.hostname in LOCAL:
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.context.route("**/*", route)
    with dashboard_server(env, tmp_path / "server.log") as url:
        page.goto(f"{url}?tab=catalog", timeout=LOAD_MS)
        page.wait_for_selector(".ss-tab-catalog .tabulator", timeout=LOAD_MS)
        page.wait_for_load_state("networkidle", timeout=LOAD_MS)
        page.screenshot(path=artifacts / "offline-first-catalog.png")
    assert not outside, "requests left localhost:\n" + "\n".join(outside)
