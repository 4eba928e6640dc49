"""Browser test: save a session from the sidebar, restore it in a fresh page."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LOAD_MS = 120_000


def test_save_and_restore_a_session(page, dashboard, artifacts, tmp_path):
    url, store = dashboard
    star = str(store.catalog["APOGEE_ID"].iloc[23])
    page.goto(f"{url}?star={star.replace('+', '%2B')}", timeout=LOAD_MS)
    expect(page.locator(".ss-selected-star")).to_contain_text(star, timeout=LOAD_MS)
    page.locator(".bk-tab", has_text="Latent space").first.click()
    with page.expect_download(timeout=LOAD_MS) as info:
        page.locator(".ss-session-save").get_by_text("Save session").click()
    saved = tmp_path / "session.json"
    info.value.save_as(saved)
    doc = json.loads(saved.read_text())
    assert doc["format"] == "stellarscope-session" and doc["star"] == star and doc["tab"] == "latent"

    page.goto(url, timeout=LOAD_MS)
    page.wait_for_selector(".ss-spectrum-plot", timeout=LOAD_MS)
    expect(page.locator(".ss-selected-star")).not_to_contain_text(star)
    page.locator(".ss-session-restore input[type=file]").set_input_files(str(saved))
    expect(page.locator(".ss-selected-star")).to_contain_text(star, timeout=LOAD_MS)
    expect(page.get_by_text("session.json restored").first).to_be_visible(timeout=LOAD_MS)
    expect(page.locator(".bk-tab.bk-active")).to_have_text("Latent space")
    page.wait_for_timeout(1000)
    page.screenshot(path=artifacts / "11-session-restored.png", full_page=True)
