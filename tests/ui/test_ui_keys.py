"""Browser test: keyboard shortcuts step through stars and switch tabs."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LOAD_MS = 120_000


def test_keys_step_stars_and_switch_tabs(page, dashboard, artifacts):
    url, store = dashboard
    ids = store.catalog["APOGEE_ID"].tolist()
    page.goto(f"{url}?star={ids[5].replace('+', '%2B')}", timeout=LOAD_MS)
    star = page.locator(".ss-selected-star")
    expect(star).to_contain_text(ids[5], timeout=LOAD_MS)
    page.wait_for_selector(".ss-keys-ready", state="attached", timeout=LOAD_MS)
    expect(page.locator(".ss-shortcuts")).to_contain_text("next star")
    page.locator(".ss-selected-star").click()  # focus the page, not a text field
    page.keyboard.press("n")
    expect(star).to_contain_text(ids[6], timeout=LOAD_MS)
    page.keyboard.press("p")
    page.keyboard.press("p")
    expect(star).to_contain_text(ids[4], timeout=LOAD_MS)
    page.keyboard.press("3")
    expect(page.locator(".bk-tab.bk-active")).to_have_text("Catalog", timeout=LOAD_MS)
    expect(page).to_have_url(re.compile(r"[?&]tab=catalog"), timeout=LOAD_MS)  # by name
    # typing in the search box is text, not shortcuts
    box = page.locator(".ss-star-search input")
    box.click()
    box.press_sequentially("np3", delay=50)
    page.wait_for_timeout(1000)
    expect(star).to_contain_text(ids[4])
    expect(page.locator(".bk-tab.bk-active")).to_have_text("Catalog")
    page.screenshot(path=artifacts / "12-keys.png", full_page=True)
