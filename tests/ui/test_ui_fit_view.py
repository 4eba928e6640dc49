"""Browser test: fit a star from the Fit view of the served dashboard (Playwright + chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.ui

CHROMIUM = "/usr/bin/chromium"


def _fixture_data(root: Path) -> tuple[Path, Path]:
    """A 3-star store made by a small random emulator, and that emulator saved to disk."""
    from toy_emulator import spectrum_like_store

    from core.models.emulator import save_emulator

    emu, _ = spectrum_like_store(root / "store", ["2M00000001+0000001", "2M00000002+0000002",
                                                  "2M00000003+0000003"], [5.0, -40.0, 15.0])
    save_emulator(emu.eval(), root / "emulator")
    return root / "store", root / "emulator"


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, dashboard_server):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("fit-ui")
    store, emulator = _fixture_data(root)
    env = {"STELLARSCOPE_STORE": str(store), "STELLARSCOPE_MODELS": str(emulator),
           "STELLARSCOPE_HOME": str(root / "home"), "OMP_NUM_THREADS": "1"}
    with dashboard_server(env, root / "server.log") as url:
        yield url


@pytest.fixture()
def browser_page(served_app, page):
    """pytest-playwright's page (Debian chromium, set up in tests/ui/conftest.py)."""
    page.set_viewport_size({"width": 1500, "height": 1000})
    page.set_default_timeout(60_000)
    return page


def test_fit_a_star_from_the_fit_view(served_app, browser_page, tmp_path):
    page = browser_page
    page.goto(f"{served_app}?star=2M00000002%2B0000002")
    try:
        page.locator(".bk-tab", has_text="Fit").first.click()
    except Exception:
        page.screenshot(path=str(tmp_path / "fit-view.png"), full_page=True)
        raise
    from playwright.sync_api import expect

    button = page.locator(".ss-fit-button button")
    expect(button).to_be_enabled(timeout=60_000)  # enabled once the star is on the model grid
    button.click()
    summary = page.locator(".ss-fit-summary")
    summary.get_by_text("χ²_ν =").wait_for()
    text = summary.locator("p").first.inner_text()  # the Markdown pane's text, in its shadow root
    assert "RV =" in text and "km/s" in text
    rv = float(text.split("RV =")[1].split("±")[0])
    assert abs(rv + 40.0) < 2.0  # the star was made with RV −40 km/s
    table = page.locator(".ss-fit-table")
    for label in ("TEFF", "LOGG", "FE_H", "MG_FE", "RV"):
        table.get_by_text(label, exact=True).first.wait_for()
    assert "Fitted" in page.locator(".ss-fit-status p").first.inner_text()


def _pixels_in_summary(page) -> int:
    text = page.locator(".ss-fit-summary p").first.inner_text()
    return int(text.split(" on ")[1].split(" pixels")[0].replace(",", ""))


def test_drag_masks_a_range_then_refit_and_element_fit(served_app, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{served_app}?star=2M00000001%2B0000001")
    page.locator(".bk-tab", has_text="Fit").first.click()
    button = page.locator(".ss-fit-button button")
    expect(button).to_be_enabled(timeout=60_000)
    button.click()
    page.locator(".ss-fit-summary").get_by_text("χ²_ν =").wait_for()
    before = _pixels_in_summary(page)

    # drag across the middle fifth of the spectrum plot: the box-select tool is active
    canvas = page.locator(".ss-fit-plot canvas").first
    box = canvas.bounding_box()
    y = box["y"] + 0.6 * box["height"]
    page.mouse.move(box["x"] + 0.40 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.50 * box["width"], y, steps=8)
    page.mouse.move(box["x"] + 0.60 * box["width"], y, steps=8)
    page.mouse.up()
    status = page.locator(".ss-fit-status p").first
    expect(status).to_contain_text("masked", timeout=30_000)
    masked = int(status.inner_text().split("masked ")[1].split(" pixels")[0])
    assert masked > 100

    button.click()
    expect(status).to_contain_text("Fitted", timeout=60_000)
    expect(page.locator(".ss-fit-summary p").first).not_to_contain_text(f"on {before} pixels")
    # the drawn range left the fit (a few pixels differ: chip edges move with the fitted RV)
    assert abs(_pixels_in_summary(page) - (before - masked)) < 0.02 * masked

    page.locator(".ss-fit-element-select select").select_option("Mg")
    element_button = page.locator(".ss-fit-element button")
    expect(element_button).to_be_enabled(timeout=60_000)
    page.wait_for_timeout(500)  # the choice of element reaches the server before the click
    element_button.click()
    expect(status).to_contain_text("Fitted Mg", timeout=120_000)
    expect(page.locator(".ss-element-info p").first).to_contain_text("MG_FE =")
