"""Browser tests of the served dashboard (Playwright + Debian chromium): what a user does.

Each test saves a screenshot under test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LOAD_MS = 120_000
SHORT_MS = 30_000


def open_app(page, url: str, query: str = "", ready: str = ".ss-spectrum-plot"):
    """Open the page and wait until ``ready`` (a CSS class of the first view shown) is drawn."""
    page.goto(url + query, timeout=LOAD_MS)
    page.wait_for_selector(ready, timeout=LOAD_MS)
    return page


def selected_star(page):
    return page.locator(".ss-selected-star")


def test_open_app_shows_dataset_model_and_tabs(page, dashboard, artifacts):
    url, store = dashboard
    open_app(page, url)
    expect(page.locator(".ss-mock-badge")).to_contain_text("MOCK SURVEY")
    expect(page.locator(".ss-dataset")).to_contain_text(f"{len(store):,} stars")
    expect(page.locator(".ss-model")).to_contain_text("28 latents")
    expect(page.locator(".ss-model")).to_contain_text("spectral emulator")  # every family
    for tab in ("Star", "Latent space", "Catalog", "Fit", "Attention"):
        expect(page.get_by_text(tab, exact=True).first).to_be_visible()
    expect(page.get_by_text("No star selected.", exact=False).first).to_be_visible()
    page.screenshot(path=artifacts / "01-open-app.png", full_page=True)


#: True once the search box's completions (sent by the server) hold the star ``arg``.
COMPLETIONS_HOLD = """(star) => {
  for (const d of (window.Bokeh && Bokeh.documents) || [])
    for (const m of d.all_models)
      if ((m.css_classes || []).includes('ss-star-search') && Array.isArray(m.completions)
          && m.completions.includes(star)) return true;
  return false;
}"""


def test_search_a_star_and_see_its_spectrum(page, dashboard, artifacts):
    url, store = dashboard
    star = str(store.catalog["APOGEE_ID"].iloc[17])
    open_app(page, url)
    box = page.locator(".ss-star-search input")
    box.click()
    box.press_sequentially(star[:7], delay=60)
    # The menu is filtered in the browser, on each key, from the completions the server sends
    # for what was typed; on a loaded machine they can arrive after the last key.  Wait for
    # them, then a key that changes nothing (End) refreshes the menu, as typing on would.
    page.wait_for_function(COMPLETIONS_HOLD, arg=star, timeout=LOAD_MS, polling=100)
    box.press("End")
    option = page.get_by_text(star, exact=True)
    option.first.wait_for(timeout=SHORT_MS)
    option.first.click()
    expect(selected_star(page)).to_contain_text(star, timeout=SHORT_MS)
    expect(page.locator(".ss-labels")).to_contain_text("Teff", timeout=SHORT_MS)
    expect(page).to_have_url(re.compile(r"star=" + re.escape(star.replace("+", "%2B"))))
    page.wait_for_timeout(1500)
    page.screenshot(path=artifacts / "02-search-star.png", full_page=True)


def test_toggle_reconstruction_shows_residual_panel(page, dashboard, artifacts):
    url, store = dashboard
    star = str(store.catalog["APOGEE_ID"].iloc[3])
    open_app(page, url, f"?star={star.replace('+', '%2B')}")
    expect(selected_star(page)).to_contain_text(star, timeout=SHORT_MS)
    residual = page.locator(".ss-residual-plot")
    expect(residual).to_be_hidden()
    page.get_by_role("button", name="VAE reconstruction").click()
    expect(residual).to_be_visible(timeout=SHORT_MS)
    expect(page.locator(".ss-residual-info")).to_contain_text("χ²_ν", timeout=SHORT_MS)
    page.wait_for_timeout(1500)
    page.screenshot(path=artifacts / "03-reconstruction-residuals.png", full_page=True)
    page.get_by_role("button", name="VAE reconstruction").click()
    expect(residual).to_be_hidden(timeout=SHORT_MS)


def test_latent_slider_changes_the_decoded_curve(page, dashboard, artifacts):
    url, store = dashboard
    star = str(store.catalog["APOGEE_ID"].iloc[5])
    open_app(page, url, f"?star={star.replace('+', '%2B')}&tab=latent",
             ready=".ss-decoded-plot")
    readout = page.locator(".ss-decode-readout")
    expect(readout).to_contain_text("Decode #", timeout=LOAD_MS)
    plot = page.locator(".ss-decoded-plot")
    page.wait_for_timeout(1500)
    before_text = readout.inner_text()
    before = plot.screenshot()
    handle = page.locator(".noUi-handle").nth(3)  # after the 3 label sliders: z00
    handle.focus()
    for _ in range(40):
        handle.press("ArrowRight")
    expect(readout).not_to_have_text(before_text, timeout=SHORT_MS)
    page.wait_for_timeout(1500)
    assert plot.screenshot() != before, "the decoded spectrum did not change on screen"
    page.screenshot(path=artifacts / "04-latent-slider.png", full_page=True)


def open_corner(page, url: str):
    """The Catalog tab with nothing selected: (the selection-count line, the Teff–log g panel)."""
    open_app(page, url, "?tab=2", ready=".ss-selection-count")  # an old tab-number link
    count = page.locator(".ss-selection-count")
    expect(count).to_contain_text("No selection", timeout=LOAD_MS)
    panel = page.locator(".ss-corner .bk-Figure").nth(1)  # Teff (x) vs log g (y)
    panel.wait_for(timeout=LOAD_MS)
    page.wait_for_timeout(2000)
    return count, panel


def test_box_select_in_corner_plot_changes_the_count(page, dashboard, artifacts):
    url, store = dashboard
    count, panel = open_corner(page, url)
    b = panel.bounding_box()
    right, top, size = b["x"] + b["width"], b["y"], 170
    page.mouse.move(right - size + 20, top + 20)
    page.mouse.down()
    page.mouse.move(right - size + 90, top + 90, steps=8)
    page.mouse.move(right - 25, top + size - 25, steps=8)
    page.mouse.up()
    expect(count).to_contain_text(f"of {len(store):,} stars selected", timeout=SHORT_MS)
    selected = int(page.locator(".ss-selection-count strong").first.inner_text().replace(",", ""))
    assert 0 < selected < len(store)
    page.wait_for_timeout(1500)
    page.screenshot(path=artifacts / "05-corner-box-select.png", full_page=True)

    page.mouse.click(right - size / 2, top + size / 2)  # a click opens the nearest star
    expect(selected_star(page)).to_contain_text("2M", timeout=SHORT_MS)
    first_row = page.locator(".ss-table .tabulator-row").first
    row_id = first_row.locator(".tabulator-cell").first.inner_text()
    first_row.click()
    expect(selected_star(page)).to_contain_text(row_id, timeout=SHORT_MS)


def test_lasso_in_corner_plot_changes_the_count(page, dashboard, artifacts):
    url, store = dashboard
    count, panel = open_corner(page, url)
    page.locator(".ss-corner .bk-tool-icon-lasso-select").first.click()
    b = panel.bounding_box()
    size = 170  # the panel's frame: the figure's top-right 170 × 170 px
    cx, cy = b["x"] + b["width"] - size / 2, b["y"] + size / 2
    angle = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    radius = size * (0.3 + 0.08 * np.sin(3 * angle))  # a lobed loop, as a hand would draw
    page.mouse.move(cx + radius[0], cy)
    page.mouse.down()
    for a, r in zip(angle[1:], radius[1:], strict=True):
        page.mouse.move(cx + r * np.cos(a), cy - r * np.sin(a), steps=3)
    page.mouse.up()
    expect(count).to_contain_text(f"of {len(store):,} stars selected", timeout=SHORT_MS)
    expect(count).to_contain_text("lasso on Teff–log g", timeout=SHORT_MS)
    selected = int(page.locator(".ss-selection-count strong").first.inner_text().replace(",", ""))
    assert 0 < selected < len(store)
    page.mouse.move(b["x"] + b["width"] + 400, cy)  # off the panel: no hover tooltip in the way
    page.wait_for_timeout(1500)
    page.screenshot(path=artifacts / "10-corner-lasso-select.png", full_page=True)


def test_star_url_reopens_that_star(page, dashboard, artifacts):
    url, store = dashboard
    star = str(store.catalog["APOGEE_ID"].iloc[42])
    open_app(page, url, f"?star={star.replace('+', '%2B')}")
    expect(selected_star(page)).to_contain_text(star, timeout=SHORT_MS)
    expect(page.locator(".ss-star-search input")).to_have_value(star, timeout=SHORT_MS)
    page.wait_for_timeout(1500)
    page.screenshot(path=artifacts / "06-star-url.png", full_page=True)


def test_unknown_star_in_url_is_a_notification_not_a_traceback(page, dashboard, artifacts):
    url, _ = dashboard
    open_app(page, url, "?star=2M_NO_SUCH_STAR")
    expect(page.get_by_text("unknown star '2M_NO_SUCH_STAR'", exact=False).first).to_be_visible(
        timeout=SHORT_MS)
    assert "Traceback" not in page.content()
    page.screenshot(path=artifacts / "07-unknown-star.png", full_page=True)


def test_upload_bad_and_good_fits(page, dashboard, artifacts, tmp_path):
    from fits_fixtures import write_apstar

    url, _ = dashboard
    open_app(page, url)
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b" " * 200)
    page.locator("input[type=file]").first.set_input_files(str(bad))
    status = page.locator(".ss-upload-status")
    expect(status).to_contain_text("broken.fits", timeout=LOAD_MS)
    expect(status).to_contain_text("⚠", timeout=SHORT_MS)
    page.screenshot(path=artifacts / "08-upload-bad.png", full_page=True)

    good = write_apstar(tmp_path / "apStar-dr17-2M12345678+1234567.fits", n_visits=2,
                        apogee_id="2M12345678+1234567")
    page.locator("input[type=file]").first.set_input_files(str(good))
    expect(status).to_contain_text("Showing", timeout=LOAD_MS)
    expect(selected_star(page)).to_contain_text("(uploaded)", timeout=SHORT_MS)
    page.wait_for_timeout(1500)
    page.screenshot(path=artifacts / "09-upload-apstar.png", full_page=True)


def test_a_store_damaged_under_the_server_is_explained_on_the_page(
        page, dashboard_server, artifacts, tmp_path):
    """A spectra part truncated while the server runs: the open page names it when a star is
    read, and the next page says why there is no dataset; neither is a blank page."""
    from test_dashboard_state import write_store

    store = write_store(tmp_path / "store", n=20, seed=3)
    env = {"STELLARSCOPE_STORE": str(store.path), "STELLARSCOPE_HOME": str(tmp_path / "home")}
    with dashboard_server(env, tmp_path / "server.log") as url:
        open_app(page, url)
        part = next(store.path.glob("spectra-*.h5"))
        part.write_bytes(part.read_bytes()[:500])
        page.locator(".ss-selected-star").click()
        page.keyboard.press("r")  # a random star, read from the damaged part
        expect(page.locator(".notyf__message").first).to_contain_text(str(store.path),
                                                                       timeout=SHORT_MS)
        expect(selected_star(page)).to_contain_text("no star selected")
        page.screenshot(path=artifacts / "17-store-damaged-open-page.png", full_page=True)

        page.goto(url, timeout=LOAD_MS)
        expect(page.locator(".ss-dataset")).to_contain_text("No dataset", timeout=LOAD_MS)
        expect(page.locator(".ss-dataset")).to_contain_text(part.name)
        expect(page.locator(".notyf__message", has_text=part.name).first).to_be_visible(
            timeout=SHORT_MS)
        assert "Traceback" not in page.content()
        page.screenshot(path=artifacts / "18-store-damaged-new-page.png", full_page=True)


def test_unknown_star_is_said_once_without_server_paths(page, dashboard, artifacts):
    url, store = dashboard
    open_app(page, url, "?star=NOPE")
    toast = page.locator(".notyf__message", has_text="NOPE")
    expect(toast.first).to_be_visible(timeout=SHORT_MS)
    page.wait_for_timeout(3000)  # any repeat would have arrived by now
    assert toast.count() == 1, [t.inner_text() for t in toast.all()]
    text = toast.first.inner_text()
    assert str(store.path) not in text and "/" not in text.replace("log g", ""), text
    page.screenshot(path=artifacts / "07b-unknown-star-once.png")


def test_a_rejected_upload_is_not_shown_as_complete(page, dashboard, artifacts, tmp_path):
    url, _ = dashboard
    open_app(page, url)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a spectrum")
    page.locator(".ss-upload input[type=file]").first.set_input_files(str(notes))
    expect(page.locator(".ss-upload-rejected")).to_contain_text("Not loaded", timeout=LOAD_MS)
    expect(page.locator(".ss-upload-rejected")).to_contain_text("notes.txt")
    page.wait_for_timeout(1500)
    sidebar = page.locator("#sidebar")
    assert "Upload complete" not in sidebar.inner_text()
    assert "notes.txt" not in page.locator(".ss-upload").inner_text()  # the dropper is empty
    page.screenshot(path=artifacts / "08b-upload-rejected.png")


def test_spectrum_is_above_the_fold_at_1280x720(browser, dashboard, artifacts):
    url, store = dashboard
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        page = context.new_page()
        star = str(store.catalog["APOGEE_ID"].iloc[9])
        open_app(page, url, f"?star={star.replace('+', '%2B')}")
        expect(selected_star(page)).to_contain_text(star, timeout=SHORT_MS)
        page.wait_for_timeout(2000)
        plot = page.locator(".ss-spectrum-plot").first.bounding_box()
        assert plot["y"] + plot["height"] <= 720, plot  # all of it without scrolling
        assert plot["width"] >= 0.6 * (1280 - 340), plot  # the main area's width, not a column
        page.screenshot(path=artifacts / "star-1280x720.png")
    finally:
        context.close()


def test_a_star_opened_in_the_catalog_shows_in_the_star_view(page, dashboard, artifacts):
    url, _ = dashboard
    open_corner(page, url)
    row = page.locator(".ss-table .tabulator-row").nth(2)
    star = row.locator(".tabulator-cell").first.inner_text()
    row.click()
    expect(selected_star(page)).to_contain_text(star, timeout=SHORT_MS)
    expect(page.locator(".bk-tab.bk-active")).to_have_text("Star", timeout=SHORT_MS)
    expect(page.locator(".ss-spectrum-plot").first).to_be_visible(timeout=SHORT_MS)
    page.screenshot(path=artifacts / "catalog-opens-star.png")


def test_concurrent_sessions_build_the_catalog_without_errors(browser, dashboard, dashboard_log,
                                                              artifacts):
    """Several sessions open the Catalog at once: each gets its corner plot, and the server
    logs no error (once: "List parameter 'Bokeh.stylesheets' items must be instances of
    str" from the Catalog view under concurrent load)."""
    url, _ = dashboard
    before = dashboard_log.read_text()
    contexts = [browser.new_context(viewport={"width": 1280, "height": 720}) for _ in range(4)]
    try:
        pages = [c.new_page() for c in contexts]
        for p in pages:  # all sessions start before any is waited for
            p.goto(url + "?tab=catalog", wait_until="commit", timeout=LOAD_MS)
        for i, p in enumerate(pages):
            p.wait_for_selector(".ss-corner .bk-Figure", timeout=4 * LOAD_MS)
            expect(p.locator(".ss-selection-count")).to_contain_text("No selection",
                                                                     timeout=LOAD_MS)
            p.screenshot(path=artifacts / f"concurrent-catalog-{i}.png")
    finally:
        for c in contexts:
            c.close()
    new = dashboard_log.read_text()[len(before):]
    assert "Bokeh.stylesheets" not in new and "Traceback" not in new, new[-3000:]
