"""Dashboard state, helpers and jobs, driven without a browser or a server."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from core.errors import BadFileError
from core.grid import APOGEE_7514
from core.store import SpectraStore
from dashboard import corner, spectra
from dashboard.data import IdIndex, nearest_row
from dashboard.jobs import JobRunner, Throttle
from dashboard.state import AppContext, FocusState, SelectionState, Session

P = APOGEE_7514.n_pix
N_STARS = 40


class TinyVAE:
    """A stand-in with VAEPredictor's interface: flux = 1 − Σ z_k · template_k (tests only)."""

    label_names = ("TEFF", "LOGG", "FE_H")
    n_latent = 4
    label_mean = np.array([4800.0, 2.5, -0.2], np.float32)
    grid = APOGEE_7514

    def __init__(self):
        rng = np.random.default_rng(7)
        self.templates = (0.02 * rng.random((self.n_latent, P))).astype(np.float32)

    def encode(self, spectrum, labels=None):
        depth = 1.0 - np.nan_to_num(spectrum.flux, nan=1.0)
        mu = (self.templates @ depth) / (self.templates ** 2).sum(axis=1)
        return {"mu": mu.astype(np.float32), "sigma": np.full(self.n_latent, 0.1, np.float32),
                "labels": np.asarray(labels, np.float32)}

    def decode(self, z, labels):
        return (1.0 - np.asarray(z, np.float32) @ self.templates).astype(np.float32)

    def sensitivity(self, z, labels):
        return -self.templates

    def on_focus(self, spectrum, catalog_row=None):
        from core.inference.vae import focus_outputs

        return focus_outputs(self, spectrum, catalog_row)

    def predict_spectrum(self, spectrum, exclude=None, labels=None):
        """What VAEPredictor.predict_spectrum returns, with the one χ² of core.chi2."""
        from core.chi2 import good_pixels, reduced_chi2

        enc = self.encode(spectrum, labels)
        model = self.decode(enc["mu"], enc["labels"])
        good = good_pixels(spectrum.flux, spectrum.error, spectrum.pixmask != 0)
        chi2, n = reduced_chi2(spectrum.flux, spectrum.error, model, good)
        rms = float(np.sqrt(np.mean((spectrum.flux - model)[good] ** 2)))
        return {"model": model, "chi2_nu": chi2, "n_good": n, "resid_rms": rms,
                "latents": enc["mu"], "latents_err": enc["sigma"], "labels": enc["labels"]}


def write_store(path, n=N_STARS, seed=0, kind="mock survey") -> SpectraStore:
    """A small store of noisy spectra with one absorption line per chip and masked runs."""
    rng = np.random.default_rng(seed)
    lam = APOGEE_7514.wavelength
    centres = np.array([15300.0, 16000.0, 16700.0])[:, None]
    lines = np.exp(-0.5 * ((lam[None, :] - centres) / 0.5) ** 2)
    depth = rng.uniform(0.1, 0.5, (n, 3))
    flux = (1 - depth @ lines + 0.01 * rng.standard_normal((n, P))).astype(np.float32)
    error = np.full((n, P), 0.01, np.float32)
    mask = np.zeros((n, P), np.uint16)
    mask[:, 100:110] = 1 << 12  # SIG_SKYLINE, bad for astroNN
    mask[:, 5000] = 1
    cat = pd.DataFrame({
        "APOGEE_ID": [f"2M{i:08d}+{i * 7:07d}" for i in range(n)],
        "TEFF": rng.uniform(4000, 5500, n), "TEFF_ERR": np.full(n, 40.0),
        "LOGG": rng.uniform(1, 3.5, n), "LOGG_ERR": np.full(n, 0.05),
        "FE_H": rng.normal(-0.2, 0.3, n), "FE_H_ERR": np.full(n, 0.02),
        "SNR": rng.uniform(50, 400, n), "TELESCOPE": ["apo25m"] * n,
    })
    with SpectraStore.create(path, kind=kind, title="test store") as w:
        w.append(flux, error, mask, cat)
    return SpectraStore.open(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("dash") / "store")


@pytest.fixture
def session(store):
    return Session(context=AppContext(store=store, models={"vae": TinyVAE()}))


# -- state ------------------------------------------------------------------------------------


def test_select_star_loads_spectrum_and_vae_outputs(session, store):
    star = store.catalog["APOGEE_ID"].iloc[3]
    assert session.select_star(star)
    f = session.focus
    assert f.star_id == star and f.source == "store" and f.spectrum.apogee_id == star
    assert set(f.models) == {"VAE reconstruction"}
    assert f.models["VAE reconstruction"].shape == (P,)
    assert f.encoding["mu"].shape == (TinyVAE.n_latent,)
    assert np.isfinite(f.outputs["VAE χ²_ν"])
    assert f.outputs["VAE labels from"] == "catalog labels"


def test_url_star_id_loads_and_unknown_star_is_reported_not_raised(session, store):
    first = store.catalog["APOGEE_ID"].iloc[1]
    session.focus.star_id = first  # what ?star= does
    assert session.focus.spectrum.apogee_id == first
    session.focus.star_id = "2M_NOT_A_STAR"
    assert session.context.message_kind == "error"
    assert "2M_NOT_A_STAR" in session.context.message
    assert session.focus.star_id == first
    assert session.focus.spectrum.apogee_id == first


def test_url_star_id_with_its_plus_decoded_as_a_space_still_loads(session, store):
    star = store.catalog["APOGEE_ID"].iloc[2]
    assert "+" in star
    session.focus.star_id = star.replace("+", " ")  # ?star=2M…+… typed into the address bar
    assert session.focus.spectrum.apogee_id == star
    assert session.focus.star_id == star


def test_messages_count_up_so_repeats_notify(session):
    before = session.context.message_count
    session.select_star("nope")
    session.select_star("nope")
    assert session.context.message_count == before + 2


def test_random_star_stays_inside_the_selection(session, store):
    session.selection.select([4, 9])
    for seed in range(6):
        session.random_star(np.random.default_rng(seed))
        assert store.row_of(session.focus.star_id) in (4, 9)


def test_upload_clears_url_star_and_store_star_can_follow(session, store):
    spec = store.spectrum(5)
    spec.meta = {"APOGEE_ID": "2M_UPLOADED"}
    session.show(spec, source="upload", **session.model_outputs(spec))
    f = session.focus
    assert f.source == "upload" and f.star_id == "" and f.label.endswith("(uploaded)")
    assert f.outputs["VAE labels from"].startswith("training-set mean")
    assert session.select_star(store.catalog["APOGEE_ID"].iloc[2])
    assert f.source == "store"


def test_upload_of_a_known_star_borrows_catalog_labels(session, store):
    spec = store.spectrum(6)
    spec.meta = {"APOGEE_ID": spec.apogee_id}
    out = session.model_outputs(spec)
    assert out["outputs"]["VAE labels from"] == "store catalog"
    assert out["encoding"]["labels"][0] == pytest.approx(store.catalog["TEFF"].iloc[6], rel=1e-6)


def test_vae_arriving_later_updates_the_focused_star(store):
    session = Session(context=AppContext(store=store))
    session.select_star(0)
    assert session.focus.models == {} and session.focus.encoding is None
    session.focus.add_model("Emulator fit", np.ones(P))
    session.context.slot("vae").model = TinyVAE()
    assert set(session.focus.models) == {"VAE reconstruction", "Emulator fit"}


def test_no_store_is_a_message(tmp_path):
    session = Session(context=AppContext(store_problem="no store here"))
    assert not session.select_star("x")
    assert session.context.message == "no store here"
    assert not session.random_star()


def test_selection_state_counts():
    sel = SelectionState(total=10, count=10)
    sel.select([3, 1, 3])
    assert sel.active and sel.count == 2 and list(sel.rows) == [1, 3]
    sel.clear()
    assert not sel.active and sel.count == 10


def test_focus_label_without_star():
    assert FocusState().label == "no star selected"


# -- spectrum helpers -------------------------------------------------------------------------


def test_with_gaps_breaks_lines_at_the_two_chip_gaps():
    cols = spectra.with_gaps(APOGEE_7514.wavelength, {"flux": np.ones(P)})
    assert cols["wave"].size == P + 2
    assert np.isnan(cols["flux"]).sum() == 2 and np.isnan(cols["wave"]).sum() == 2


def test_masked_spans_cover_each_run_edge_to_edge():
    wave = np.arange(10.0)
    bad = np.array([0, 1, 1, 0, 0, 0, 1, 0, 0, 1], bool)
    spans = spectra.masked_spans(wave, bad)
    np.testing.assert_allclose(spans["x0"], [0.5, 5.5, 8.5])
    np.testing.assert_allclose(spans["x1"], [2.5, 6.5, 9.5])


def test_band_patch_has_one_polygon_per_chip():
    lam = APOGEE_7514.wavelength
    band = spectra.band_patch(lam, np.zeros(P), np.ones(P))
    assert np.isnan(band["x"]).sum() == 2 and band["x"].size == 2 * P + 2


def test_residuals_and_statistics_skip_bad_pixels(store):
    spec = store.spectrum(0)
    model = spec.flux + 0.01  # one σ everywhere
    diff, pull = spectra.residuals(spec, model)
    assert np.isnan(pull[100:110]).all() and np.isnan(pull[5000])
    stats = spectra.fit_statistics(spec, model)
    # one σ off, σ = 0.01 with the 0.005 floor in quadrature (core.chi2): χ²_ν = 1 / 1.25
    assert stats["chi2_nu"] == pytest.approx(1 / (1 + (0.005 / 0.01) ** 2), rel=1e-3)
    assert stats["n_good"] == P - 11


def test_label_table_shows_values_with_errors_and_outputs(store):
    table = spectra.label_table(store.spectrum(0), {"VAE χ²_ν": 1.234})
    rows = dict(zip(table["quantity"], table["value"], strict=True))
    assert rows["Teff"].endswith("± 40 K")
    assert rows["VAE χ²_ν"] == "1.234"
    assert "masked pixels" in rows


def test_downloads_round_trip(store):
    spec = store.spectrum(2)
    models = {"VAE reconstruction": spec.flux * 0 + 1}
    csv = pd.read_csv(spectra.csv_bytes(spec, models), comment="#")
    assert list(csv.columns[:5]) == ["wavelength_vac", "flux", "error", "pixmask", "bad"]
    assert "vae_reconstruction_pull" in csv.columns and len(csv) == P
    with fits.open(io.BytesIO(spectra.fits_bytes(spec, models).read())) as hdul:
        table = hdul["SPECTRUM"].data
        np.testing.assert_allclose(table["flux"], spec.flux)
        assert hdul[0].header["WAVEUNIT"] == "Angstrom"


def test_chip_images_resample_each_chip_evenly():
    lam = APOGEE_7514.wavelength
    rows = np.tile(lam, (2, 1))  # value = wavelength: resampling must keep it
    chips = spectra.chip_images(lam, rows)
    assert len(chips) == 3
    for c in chips:
        m = c["image"].shape[1]
        centres = c["x"] + (np.arange(m) + 0.5) * c["dw"] / m
        np.testing.assert_allclose(c["image"][0], centres, atol=0.3)


def test_vae_labels_fall_back_in_order(store):
    from core.inference.vae import condition_labels as vae_labels

    vae = TinyVAE()
    spec = store.spectrum(1)
    labels, where = vae_labels(vae, spec)
    assert where == "catalog labels" and labels[1] == pytest.approx(spec.meta["LOGG"])
    bare = spec.copy()
    bare.meta = {}
    assert vae_labels(vae, bare, {"TEFF": 1, "LOGG": 2, "FE_H": 3})[1] == "store catalog"
    assert vae_labels(vae, bare)[1].startswith("training-set mean")
    sentinel = {"TEFF": 4800.0, "LOGG": -9999.0, "FE_H": 0.1}  # APOGEE's "no value"
    assert vae_labels(vae, bare, sentinel)[1].startswith("training-set mean")


# -- catalog helpers --------------------------------------------------------------------------


def test_id_index_prefix_then_inside_matches():
    idx = IdIndex(["2M0001", "2M0002", "2M1001", "XX0001"])
    assert idx.search("2m000") == ["2M0001", "2M0002"]
    assert idx.search("0001") == ["2M0001", "XX0001"]
    assert idx.search("") == []


def test_nearest_row_scales_by_span_and_respects_rows():
    frame = pd.DataFrame({"a": [0.0, 10.0, 0.0], "b": [0.0, 0.0, 100.0]})
    assert nearest_row(frame, "a", "b", 1.0, 60.0, 10.0, 100.0) == 2
    assert nearest_row(frame, "a", "b", 1.0, 60.0, 10.0, 100.0, rows=np.array([0, 1])) == 0


def test_corner_aggregate_counts_every_star_in_range():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.random(50_000, np.float32), "y": rng.random(50_000, np.float32),
                          "c": rng.random(50_000, np.float32)})
    agg = corner.aggregate(frame, "x", "y", (0, 1), (0, 1), 60, 40)
    assert agg.image.shape == (40, 60)
    assert np.nansum(agg.image) == pytest.approx(50_000, rel=1e-3)
    mean = corner.aggregate(frame, "x", "y", (0, 1), (0, 1), 60, 40, color="c")
    assert 0.4 < np.nanmean(mean.image) < 0.6
    counts, edges = corner.histogram(frame["x"].to_numpy(), (0, 0.5), bins=10)
    assert counts.sum() == int((frame["x"] <= 0.5).sum()) and edges[-1] == 0.5
    inside = corner.box_mask(frame, "x", (0.2, 0.4), "y", (0.5, 0.1))
    assert inside.sum() == int(((frame.x >= .2) & (frame.x <= .4) & (frame.y >= .1)
                                & (frame.y <= .5)).sum())


def test_sparse_panels_grow_isolated_stars():
    frame = pd.DataFrame({"x": np.float32([0.5]), "y": np.float32([0.5])})
    agg = corner.aggregate(frame, "x", "y", (0, 1), (0, 1), 21, 21)
    assert np.isfinite(agg.image).sum() == 9


# -- jobs -------------------------------------------------------------------------------------


def test_job_runner_drops_superseded_results():
    runner = JobRunner()
    release = threading.Event()
    done, errors = [], []

    def slow():
        release.wait(5)
        return "old"

    first = runner.submit(slow, key="star", on_done=done.append)
    second = runner.submit(lambda: "new", key="star", on_done=done.append)
    deadline = time.time() + 5
    while "new" not in done and time.time() < deadline:
        time.sleep(0.01)
    release.set()
    while first.status in ("queued", "running") and time.time() < deadline:
        time.sleep(0.01)
    assert done == ["new"] and first.status == "cancelled" and second.status == "finished"
    runner.submit(lambda: 1 / 0, key="x", on_error=errors.append)
    while not errors and time.time() < deadline:
        time.sleep(0.01)
    assert isinstance(errors[0], ZeroDivisionError)


def test_throttle_runs_at_once_outside_a_session():
    calls = []
    t = Throttle(calls.append, interval=10)
    t(1)
    t(2)
    assert calls == [1, 2]


def test_read_upload_names_the_uploaded_file():
    from dashboard.views.upload import read_upload

    with pytest.raises(BadFileError, match=r"^my star\.fits: "):
        read_upload("my star.fits", b"SIMPLE  =                    T" + b" " * 100)
    with pytest.raises(BadFileError, match="empty"):
        read_upload("x.fits", b"")


def test_training_note_follows_a_growing_log(tmp_path):
    import os

    from dashboard.data import training_note

    assert training_note(tmp_path) == ""
    log = tmp_path / "training_log.csv"
    log.write_text("epoch,step,val_chi2_nu\n1,10,3.5\n2,20,1.25\n")
    assert training_note(tmp_path) == ""  # a fresh checkout of finished weights: no run marker
    (tmp_path / "TRAINING_RUNNING").write_text("pid 1\n")
    assert training_note(tmp_path) == "training in progress: epoch 2 done, validation χ²_ν 1.25"
    os.utime(log, (time.time() - 3600, time.time() - 3600))
    assert training_note(tmp_path) == ""


def test_label_table_gives_a_mock_its_true_labels(store):
    spec = store.spectrum(0)
    spec.meta["TRUE_TEFF"] = 4321.04
    table = spectra.label_table(spec)
    assert list(table.columns) == ["quantity", "value", "true"]
    assert table.set_index("quantity").loc["Teff", "true"] == "4321"


def test_status_line_describes_the_focused_star(session, store):
    session.select_star(0)
    status = session.context.status
    assert status.startswith(f"{P} px, ") and "% masked" in status and "VAE χ²_ν" in status
