"""Browser test: a named subset from an expression, its count, the table limited to it, a
range header filter, and the subset back after restoring a saved session."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

LOAD_MS = 120_000
SHORT_MS = 30_000
EXPRESSION = "TEFF < 4800 & LOGG < 3"


def open_catalog(page, url: str):
    """The app, then its Catalog tab, as a user gets there."""
    page.goto(url, timeout=LOAD_MS)
    page.wait_for_selector(".ss-spectrum-plot", timeout=LOAD_MS)
    page.locator(".bk-tab", has_text="Catalog").first.click()
    count = page.locator(".ss-selection-count")
    expect(count).to_contain_text("No selection", timeout=LOAD_MS)
    page.locator(".ss-corner .bk-Figure").nth(1).wait_for(timeout=LOAD_MS)
    return count


def table_title(page):
    return page.locator(".ss-table-title")


def test_make_a_subset_see_it_in_the_table_and_restore_it(page, dashboard, artifacts,
                                                          tmp_path):
    url, store = dashboard
    cat = store.catalog
    expected = int(((cat.TEFF < 4800) & (cat.LOGG < 3)).sum())
    n = len(store)
    assert 0 < expected < n
    open_catalog(page, url)
    expect(table_title(page)).to_contain_text(f"all {n:,} stars", timeout=SHORT_MS)

    # a typo is named, with a suggestion, and makes nothing
    expr = page.locator(".ss-subset-expr input")
    expr.fill("TEF < 4800")
    page.locator(".ss-subset-add button").click()
    problem = page.locator(".ss-subset-problem")
    expect(problem).to_contain_text("unknown column or subset 'TEF'", timeout=SHORT_MS)
    expect(problem).to_contain_text("did you mean TEFF?")

    expr.fill(EXPRESSION)
    page.locator(".ss-subset-name input").fill("cool_giants")
    page.locator(".ss-subset-add button").click()
    legend = page.locator(".ss-subset-legend")
    expect(legend).to_contain_text("cool_giants", timeout=SHORT_MS)
    expect(legend).to_contain_text(f"{expected:,} stars")
    expect(legend).to_contain_text(EXPRESSION)
    expect(problem).to_be_hidden()

    # the table limited to the subset: its count and its rows
    page.locator(".ss-subset-table select").select_option("cool_giants")
    expect(table_title(page)).to_contain_text(f"{expected:,} of {n:,} stars (subset cool_giants)",
                                              timeout=SHORT_MS)
    teff_cells = page.locator(".ss-table .tabulator-row .tabulator-cell[tabulator-field=TEFF]")
    expect(teff_cells.first).to_be_visible(timeout=SHORT_MS)
    values = [float(t.replace(",", "")) for t in teff_cells.all_inner_texts()]
    assert values and max(values) < 4800.5  # shown rounded to 1 K

    # a range typed in the Teff box above the table filters on the server
    box = page.locator(".ss-range-TEFF input")
    box.fill("4300..4600")
    box.press("Enter")
    in_range = int(((cat.TEFF < 4800) & (cat.LOGG < 3) & cat.TEFF.between(4300, 4600)).sum())
    expect(table_title(page)).to_contain_text(
        f"{in_range:,} of {n:,} stars (subset cool_giants ∩ table filters)", timeout=SHORT_MS)
    page.wait_for_timeout(800)
    values = [float(t.replace(",", "")) for t in teff_cells.all_inner_texts()]
    assert len(values) == min(in_range, 12) and all(4299.5 <= v <= 4600.5 for v in values)
    page.locator(".ss-subsets").scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    page.screenshot(path=artifacts / "20-catalog-subset.png", full_page=True)
    page.locator(".ss-table").scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    page.screenshot(path=artifacts / "20b-catalog-subset-table.png", full_page=True)

    with page.expect_download(timeout=LOAD_MS) as info:
        page.locator(".ss-session-save").get_by_text("Save session").click()
    saved = tmp_path / "subsets-session.json"
    info.value.save_as(saved)
    doc = json.loads(saved.read_text())
    assert doc["subsets"]["items"] == [{"name": "cool_giants", "expression": EXPRESSION}]
    assert doc["views"]["catalog"]["range_filters"] == {"TEFF": "4300..4600"}

    page.goto(url, timeout=LOAD_MS)  # a fresh session, then restore the file
    page.wait_for_selector(".ss-spectrum-plot", timeout=LOAD_MS)
    page.locator(".ss-session-restore input[type=file]").set_input_files(str(saved))
    expect(page.get_by_text("subsets-session.json restored").first).to_be_visible(
        timeout=LOAD_MS)
    expect(page.locator(".bk-tab.bk-active")).to_have_text("Catalog", timeout=SHORT_MS)
    legend = page.locator(".ss-subset-legend")
    expect(legend).to_contain_text("cool_giants", timeout=LOAD_MS)
    expect(legend).to_contain_text(f"{expected:,} stars")
    expect(table_title(page)).to_contain_text(
        f"{in_range:,} of {n:,} stars (subset cool_giants ∩ table filters)", timeout=SHORT_MS)
    expect(page.locator(".ss-range-TEFF input")).to_have_value("4300..4600")
    expect(page.locator(".ss-selection-count")).to_contain_text("No selection", timeout=LOAD_MS)
    page.wait_for_timeout(1500)
    page.screenshot(path=artifacts / "21-catalog-subset-restored.png", full_page=True)
