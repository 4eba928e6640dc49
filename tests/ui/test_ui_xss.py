"""Browser tests: text from outside (a star ID in the URL, a session file, an upload's file
name) is shown literally and never runs as script in the page."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LOAD_MS = 120_000
SHORT_MS = 30_000
#: Runs script through an image's error handler if it ever reaches innerHTML unescaped; its
#: quoted attributes also make it inline HTML to Markdown, which passes such HTML through.
PAYLOAD = '<img src="x" onerror="window.__xss=1">'


def opened(page, url: str, query: str = ""):
    page.goto(url + query, timeout=LOAD_MS)
    page.wait_for_selector(".ss-spectrum-plot", timeout=LOAD_MS)
    return page


def assert_no_script_ran(page) -> None:
    page.wait_for_timeout(1500)  # time for an injected <img> to fail to load
    assert page.evaluate("() => window.__xss") is None
    assert page.locator('img[src="x"]').count() == 0


def test_star_id_in_the_url_is_shown_as_text(page, dashboard, artifacts):
    url, _ = dashboard
    opened(page, url, "?star=" + quote(PAYLOAD))
    expect(page.get_by_text(f"unknown star '{PAYLOAD}'", exact=False).first).to_be_visible(
        timeout=SHORT_MS)
    assert_no_script_ran(page)
    page.screenshot(path=artifacts / "13-xss-url.png", full_page=True)


def test_session_file_with_a_tag_as_star_is_shown_as_text(page, dashboard, artifacts, tmp_path):
    url, store = dashboard
    opened(page, url)
    import numpy as np

    from dashboard.persist import pack_rows

    selection = {**pack_rows(np.array([1, 2, 3]), len(store)), "description": PAYLOAD}
    doc = {"format": "stellarscope-session", "version": 2, "star": PAYLOAD, "tab": "star",
           "store": {"path": str(store.path)}, "views": {}, "selection": selection}
    saved = tmp_path / "evil-session.json"
    saved.write_text(json.dumps(doc))
    page.locator(".ss-session-restore input[type=file]").set_input_files(str(saved))
    expect(page.get_by_text(f"star {PAYLOAD} is not in this store", exact=False).first
           ).to_be_visible(timeout=SHORT_MS)
    assert_no_script_ran(page)
    page.screenshot(path=artifacts / "14-xss-session.png", full_page=True)
    page.locator(".bk-tab", has_text="Catalog").first.click()  # the selection's description
    expect(page.locator(".ss-selection-count")).to_contain_text(
        f"3 of {len(store):,} stars selected: {PAYLOAD}", timeout=LOAD_MS)
    assert_no_script_ran(page)


def test_upload_named_like_a_tag_is_shown_as_text(page, dashboard, artifacts):
    url, _ = dashboard
    opened(page, url)
    name = f"{PAYLOAD}.fits"
    page.locator("input[type=file]").first.set_input_files(
        {"name": name, "mimeType": "application/fits",
         "buffer": b"SIMPLE  =                    T" + b" " * 200})
    status = page.locator(".ss-upload-status")
    expect(status).to_contain_text(name, timeout=LOAD_MS)
    expect(status).to_contain_text("⚠", timeout=SHORT_MS)
    expect(page.locator(".notyf__message", has_text=name).first).to_be_visible(timeout=SHORT_MS)
    assert_no_script_ran(page)
    page.screenshot(path=artifacts / "15-xss-upload.png", full_page=True)


def test_a_valid_upload_whose_star_is_a_tag_is_fitted_and_shown_as_text(
        page, dashboard, artifacts, tmp_path):
    """Its header's APOGEE_ID is the payload: the sidebar, the Star view and the Fit view's
    status and summary show it literally."""
    from fits_fixtures import write_apstar

    url, _ = dashboard
    opened(page, url)
    good = write_apstar(tmp_path / "apStar-tag.fits", n_visits=2, apogee_id=PAYLOAD)
    page.locator("input[type=file]").first.set_input_files(
        {"name": f"{PAYLOAD}.fits", "mimeType": "application/fits", "buffer": good.read_bytes()})
    expect(page.locator(".ss-upload-status")).to_contain_text("Showing", timeout=LOAD_MS)
    expect(page.locator(".ss-selected-star")).to_contain_text(PAYLOAD, timeout=SHORT_MS)
    page.locator(".ss-selected-star").click()
    page.keyboard.press("f")  # the Fit tab, fitting the uploaded star
    status = page.locator(".ss-fit-status p").first
    expect(status).to_contain_text(f"Fitted {PAYLOAD}", timeout=LOAD_MS)
    assert_no_script_ran(page)
    page.screenshot(path=artifacts / "16-xss-upload-fitted.png", full_page=True)
