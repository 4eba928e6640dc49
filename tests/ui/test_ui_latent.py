"""The Latent tab in a real browser: directions beside the sliders, a dragged slider redraws
the decoded spectrum, Traverse animates one latent (Playwright + Debian chromium)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LOAD_MS = 180_000
SHORT_MS = 30_000


def open_latent(page, url: str, star: str):
    page.goto(f"{url}?star={star.replace('+', '%2B')}&tab=latent", timeout=LOAD_MS)
    page.wait_for_selector(".ss-decoded-plot", timeout=LOAD_MS)
    expect(page.locator(".ss-decode-readout")).to_contain_text("Decode #", timeout=LOAD_MS)
    # what each latent does arrives from a worker thread
    expect(page.locator(".ss-directions-note")).to_contain_text("Flux change", timeout=LOAD_MS)
    page.wait_for_timeout(1500)


def test_directions_and_a_dragged_slider(page, dashboard, artifacts):
    url, store = dashboard
    open_latent(page, url, str(store.catalog["APOGEE_ID"].iloc[6]))
    notes = page.locator(".ss-latent-note")
    expect(notes).to_have_count(28)
    expect(notes.first).to_contain_text("Δ 0.")
    expect(notes.first).to_contain_text("knows")
    table = page.locator(".ss-directions-table")
    expect(table).to_contain_text("lines it moves most")
    expect(table).to_contain_text(re.compile(r"z\d\d"))
    page.screenshot(path=artifacts / "latent-directions.png", full_page=True)
    table.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=artifacts / "latent-directions-table.png")

    plot = page.locator(".ss-decoded-plot")
    readout = page.locator(".ss-decode-readout")
    before_text, before = readout.inner_text(), plot.screenshot()
    handle = page.locator(".noUi-handle").nth(3)  # the first free latent (after 3 labels)
    box = handle.bounding_box()
    track = page.locator(".noUi-target").nth(3).bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(track["x"] + 0.9 * track["width"], y, steps=12)
    page.mouse.up()
    expect(readout).not_to_have_text(before_text, timeout=SHORT_MS)
    page.wait_for_timeout(1500)
    assert plot.screenshot() != before, "the decoded spectrum did not change on screen"


def test_traverse_animates_and_stops(page, dashboard, artifacts):
    url, store = dashboard
    open_latent(page, url, str(store.catalog["APOGEE_ID"].iloc[8]))
    button = page.locator(".ss-traverse-button button")
    expect(button).to_contain_text("Traverse")
    diff = page.locator(".ss-decoded-plot")
    button.click()
    expect(button).to_contain_text("Stop", timeout=SHORT_MS)
    readout = page.locator(".ss-decode-readout")
    expect(readout).to_contain_text("traversing z", timeout=SHORT_MS)
    first_text, first = readout.inner_text(), diff.screenshot()
    page.wait_for_timeout(1200)
    expect(readout).not_to_have_text(first_text, timeout=SHORT_MS)  # still moving
    assert diff.screenshot() != first, "the traverse did not move the plot"
    page.screenshot(path=artifacts / "latent-traverse.png", full_page=True)
    button.click()
    expect(button).to_contain_text("Traverse", timeout=SHORT_MS)
    expect(readout).not_to_contain_text("traversing", timeout=SHORT_MS)
