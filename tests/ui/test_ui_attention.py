"""Browser test: the Attention view draws a star's attention and redraws on a label change."""

from __future__ import annotations

from pathlib import Path

import pytest
from fits_fixtures import write_apvisit_of

pytestmark = pytest.mark.ui

CHROMIUM = "/usr/bin/chromium"
LOAD_MS = 180_000
HEAT_SUM = """() => {
  for (const doc of Bokeh.documents) {
    const src = doc.get_model_by_name('ss-attention-heat');
    if (src) { const v = src.data.value; let s = 0, n = 0;
      for (let i = 0; i < v.length; i++) { if (Number.isFinite(v[i])) { s += v[i] * (i % 97 + 1); n++; } }
      return [n, s]; }
  }
  return null;
}"""


def _transformer_for(store: Path, root: Path) -> Path:
    """The shipped demo transformer, else a tiny one trained on the test store."""
    from core.paths import SHIPPED_MODELS

    demo = SHIPPED_MODELS / "transformer-demo"
    if (demo / "config.json").is_file():
        return demo
    from core.train import trainer as T
    from core.train.transformer import TransformerTask, TransformerTrainSettings

    out = root / "tf"
    T.train(TransformerTask(TransformerTrainSettings(
        store=str(store), out=str(out), epochs=1, batch_size=16, context=64, progress=False,
        device="cpu", checkpoint_every=100)))
    return out


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, dashboard_server):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    pytest.importorskip("playwright.sync_api")
    from core.mock import generate_mock_survey
    from core.store import SpectraStore

    root = tmp_path_factory.mktemp("attention-ui")
    store = generate_mock_survey(root / "mock", n_stars=40, seed=11, progress=False)
    model = _transformer_for(store, root)
    env = {"STELLARSCOPE_STORE": str(store), "STELLARSCOPE_MODELS": str(model),
           "STELLARSCOPE_HOME": str(root / "home"), "OMP_NUM_THREADS": "1"}
    with dashboard_server(env, root / "server.log") as url:
        yield url, SpectraStore.open(store)


def test_attention_view_changes_with_the_label(served_app, page, artifacts):
    from playwright.sync_api import expect

    url, store = served_app
    page.set_viewport_size({"width": 1600, "height": 1100})
    page.set_default_timeout(LOAD_MS)
    star = store.catalog["APOGEE_ID"].iloc[3]
    page.goto(f"{url}?star={star.replace('+', '%2B')}&tab=attention", timeout=LOAD_MS)
    table = page.locator(".ss-att-table")
    expect(table.locator(".tabulator-row").first).to_be_visible(timeout=LOAD_MS)
    expect(page.locator(".ss-att-score")).to_contain_text("Alignment", timeout=LOAD_MS)
    page.wait_for_function(f"() => ({HEAT_SUM})() && ({HEAT_SUM})()[0] > 1000")
    before_heat = page.evaluate(HEAT_SUM)
    before_rows = table.locator(".tabulator-row").all_inner_texts()
    before_score = page.locator(".ss-att-score p").first.inner_text()
    page.wait_for_timeout(1500)
    page.screenshot(path=artifacts / "attention-view.png", full_page=True)
    strip = page.locator(".ss-attention-strip").first
    before_png = strip.screenshot()

    select = page.locator(".ss-att-label select")
    labels = select.locator("option").all_inner_texts()
    other = "LOGG" if "LOGG" in labels else labels[1]
    select.select_option(other)
    expect(page.locator(".ss-att-score")).to_contain_text(other, timeout=LOAD_MS)
    page.wait_for_function(f"() => {{ const h = ({HEAT_SUM})(); "
                           f"return h && Math.abs(h[1] - {before_heat[1]}) > 1e-6; }}")
    after_heat = page.evaluate(HEAT_SUM)
    expect(table.locator(".tabulator-row").first).to_be_visible()
    page.wait_for_timeout(1500)
    after_rows = table.locator(".tabulator-row").all_inner_texts()
    assert after_heat[0] == before_heat[0]          # same pixels read, another map
    assert after_rows != before_rows
    assert page.locator(".ss-att-score p").first.inner_text() != before_score
    assert strip.screenshot() != before_png
    page.screenshot(path=artifacts / "attention-view-label.png", full_page=True)

    # clicking a table row zooms the spectrum there (the line's wavelength is in view)
    first = table.locator(".tabulator-row").first
    cell = first.locator('.tabulator-cell[tabulator-field="λ (Å)"]')
    lam = float(cell.inner_text().replace(",", ""))
    first.click()
    page.wait_for_timeout(2000)
    page.screenshot(path=artifacts / "attention-view-zoom.png", full_page=True)
    xr = page.evaluate("""() => { for (const doc of Bokeh.documents) {
        // a zoomed wavelength range (other tabs' plots may share the document)
        const src = doc.get_model_by_name('ss-attention-heat'); if (!src) continue;
        for (const m of doc.all_models) { if (m.type === 'Range1d' || m.constructor.name === 'Range1d') {
          if (m.start > 10000 && m.end - m.start < 100) return [m.start, m.end]; } } } return null; }""")
    assert xr is not None and xr[0] < lam < xr[1]


HEAT_LEN = """() => { for (const doc of Bokeh.documents) {
    const src = doc.get_model_by_name('ss-attention-heat');
    if (src) return src.data.value.length; } return null; }"""


def test_an_uploaded_apvisit_read_on_its_own_pixels(served_app, page, artifacts, tmp_path):
    """Upload an apVisit, switch the Attention view to its own pixels: the heat strip holds
    one cell per own pixel, the table and labels change, both readings' labels side by side."""
    from playwright.sync_api import expect

    url, store = served_app
    page.set_viewport_size({"width": 1600, "height": 1200})
    page.set_default_timeout(LOAD_MS)
    star = store.catalog["APOGEE_ID"].iloc[5]
    visit = write_apvisit_of(tmp_path / "apVisit-mock-5.fits", store.spectrum(5))
    page.goto(f"{url}?star={star.replace('+', '%2B')}&tab=attention", timeout=LOAD_MS)
    table = page.locator(".ss-att-table")
    expect(table.locator(".tabulator-row").first).to_be_visible(timeout=LOAD_MS)
    expect(page.locator(".ss-att-own")).to_be_hidden()        # a store star: no switch
    page.locator(".ss-upload input[type=file]").first.set_input_files(str(visit))
    expect(page.locator(".ss-upload-status")).to_contain_text("Showing", timeout=LOAD_MS)
    own_box = page.locator(".ss-att-own")
    expect(own_box).to_be_visible(timeout=LOAD_MS)
    expect(own_box).to_contain_text("own pixels (rest frame, no resampling)")
    expect(page.locator(".ss-att-own-note")).to_contain_text("apVisit")
    n_grid = store.grid.n_pix
    page.wait_for_function(f"() => ({HEAT_LEN})() === {n_grid}")
    page.wait_for_function(f"() => ({HEAT_SUM})() && ({HEAT_SUM})()[0] > 1000")
    before_heat = page.evaluate(HEAT_SUM)
    page.wait_for_timeout(1500)
    before_rows = table.locator(".tabulator-row").all_inner_texts()
    before_score = page.locator(".ss-att-score p").first.inner_text()
    assert "own pixels" not in before_score
    page.screenshot(path=artifacts / "attention-upload-grid.png", full_page=True)

    own_box.locator("input").check()
    expect(page.locator(".ss-att-score")).to_contain_text("own pixels", timeout=LOAD_MS)
    page.wait_for_function(f"() => ({HEAT_LEN})() === 12288")   # one cell per visit pixel
    compare = page.locator(".ss-att-compare")
    expect(compare).to_contain_text("resampled grid", timeout=LOAD_MS)
    expect(compare).to_contain_text("own pixels")
    after_heat = page.evaluate(HEAT_SUM)
    page.wait_for_timeout(1500)
    after_rows = table.locator(".tabulator-row").all_inner_texts()
    assert after_heat[0] != before_heat[0]          # another set of pixels read
    assert after_rows != before_rows
    assert page.locator(".ss-att-score p").first.inner_text() != before_score
    # one row per label, each with a value ± σ for both readings
    rows = compare.locator("tbody tr")
    assert rows.count() >= 3 and rows.first.inner_text().count("±") == 2
    page.screenshot(path=artifacts / "attention-upload-own-pixels.png", full_page=True)

    own_box.locator("input").uncheck()
    page.wait_for_function(f"() => ({HEAT_LEN})() === {n_grid}")
    expect(page.locator(".ss-att-score")).not_to_contain_text("own pixels", timeout=LOAD_MS)
    page.wait_for_timeout(1500)
    assert table.locator(".tabulator-row").all_inner_texts() == before_rows
