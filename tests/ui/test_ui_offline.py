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


def offline_router(outside: list[str], requests: list[str] | None = None):
    """A route handler that lets localhost (and data/blob URLs) through and records and aborts
    everything else, as if offline."""

    def route(r):
        target = r.request.url
        if requests is not None:
            requests.append(target)
        parts = urllib.parse.urlsplit(target)
        if parts.scheme in ("data", "blob") or parts.hostname in LOCAL:
            r.continue_()
        else:
            outside.append(target)
            r.abort()

    return route


def test_no_request_leaves_localhost(page, dashboard, artifacts):
    url, store = dashboard
    requests: list[str] = []
    outside: list[str] = []

    page.context.route("**/*", offline_router(outside, requests))
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

    route = offline_router(outside)

    page.context.route("**/*", route)
    with dashboard_server(env, tmp_path / "server.log") as url:
        page.goto(f"{url}?tab=catalog", timeout=LOAD_MS)
        page.wait_for_selector(".ss-tab-catalog .tabulator", timeout=LOAD_MS)
        page.wait_for_load_state("networkidle", timeout=LOAD_MS)
        page.screenshot(path=artifacts / "offline-first-catalog.png")
    assert not outside, "requests left localhost:\n" + "\n".join(outside)


def test_a_page_built_in_a_session_points_every_stylesheet_at_this_server(tmp_path,
                                                                            monkeypatch):
    """While a page is built, before its HTML is rendered, Panel resolves stylesheet URLs
    against the document's ``dist_url``: unset, it turned sheets already pointed at this
    server back to the CDN (and a later page on the same server could be left unstyled
    offline).  The app sets it first, so no sheet in a freshly built page names the CDN."""
    from bokeh.document import Document
    from bokeh.models import ImportedStyleSheet
    from panel.io.state import set_curdoc

    from core.mock import generate_mock_survey
    from dashboard import app

    store = generate_mock_survey(tmp_path / "mock", n_stars=40, seed=5, progress=False)
    monkeypatch.setenv("STELLARSCOPE_STORE", str(store))
    monkeypatch.setenv("STELLARSCOPE_HOME", str(tmp_path / "home"))
    doc = Document()
    with set_curdoc(doc):
        template = app.page()
        template.server_doc(doc)
    urls = {s.url for root in doc.roots for s in root.select({"type": ImportedStyleSheet})}
    assert len(urls) > 5, urls
    outside = sorted(u for u in urls if urllib.parse.urlsplit(u).scheme in ("http", "https"))
    assert not outside, "stylesheets resolved to another host:\n" + "\n".join(outside)


def test_pages_in_a_row_on_one_server_stay_offline(browser, dashboard_server, tmp_path):
    """A fresh warmed server: a Star page, then (the first still open) a Catalog page and a
    second one.  Seen once before the fix: the first Catalog page loaded 22 stylesheets from
    cdn.holoviz.org."""
    from core.mock import generate_mock_survey

    store = generate_mock_survey(tmp_path / "mock", n_stars=60, seed=4, progress=False)
    env = {"STELLARSCOPE_STORE": str(store), "STELLARSCOPE_HOME": str(tmp_path / "home")}
    outside: list[str] = []

    route = offline_router(outside)

    contexts = []
    try:
        with dashboard_server(env, tmp_path / "server.log") as url:
            for tab in ("star", "catalog", "catalog"):
                ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
                contexts.append(ctx)
                ctx.route("**/*", route)
                page = ctx.new_page()
                page.goto(f"{url}?tab={tab}", timeout=LOAD_MS)
                page.wait_for_selector(f".ss-tab-{tab}", timeout=LOAD_MS)
                page.wait_for_load_state("networkidle", timeout=LOAD_MS)
    finally:
        for ctx in contexts:
            ctx.close()
    assert not outside, "requests left localhost:\n" + "\n".join(outside)
