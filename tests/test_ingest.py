"""Building stores from fixture files: every ingest mode, skips and their report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fits_fixtures import (
    rest_template,
    truncate_copy,
    write_allstar,
    write_apstar,
    write_apvisit,
    write_aspcapstar,
    write_contspec_trio,
    write_generic,
)

from core.cli.main import main
from core.errors import BadDataError, BadFileError, StoreError
from core.grid import APOGEE_7514
from core.ingest import (
    ContinuumSettings,
    FileIndex,
    NothingIngestedError,
    ingest_allstar,
    ingest_contspec,
    ingest_files,
    ingest_generic,
)
from core.io import read_apstar, read_aspcapstar
from core.preprocess import LARGE_ERROR, normalize
from core.store import SpectraStore

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL = SHARED / "data/apogee_real"

IDS = [f"2M0000000{i}+0000000" for i in range(6)]
MISSING_ID = IDS[4]  # in the allStar, no file on disk
CORRUPT_ID = IDS[2]  # file present but truncated


def _real(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (a fresh clone has no ../shared)")
    return path


@pytest.fixture
def aspcap_tree(tmp_path):
    """allStar (6 stars) + SDSS tree apo25m/TESTFIELD/aspcapStar-dr17-<ID>.fits, with one
    star's file missing and one truncated."""
    root = tmp_path / "aspcap"
    folder = root / "apo25m" / "TESTFIELD"
    folder.mkdir(parents=True)
    for k, star in enumerate(IDS):
        if star == MISSING_ID:
            continue
        path = folder / f"aspcapStar-dr17-{star}.fits"
        write_aspcapstar(path, apogee_id=star, seed=k)
        if star == CORRUPT_ID:
            full = path.read_bytes()
            path.write_bytes(full[: len(full) // 2])
    allstar = write_allstar(tmp_path / "allStar-dr17-synspec_rev1.fits", IDS, dr=17)
    return allstar, root


def test_allstar_tree_skips_missing_and_corrupt_files(aspcap_tree, tmp_path):
    allstar, root = aspcap_tree
    out = tmp_path / "store"
    report = ingest_allstar(allstar, root, out, file_kind="aspcapStar", progress=False)
    assert report.n_candidates == 6 and report.n_ingested == 4
    kinds = {(k, Path(w).name if k == "unreadable" else w) for k, w, _ in report.skipped}
    assert kinds == {("missing file", MISSING_ID),
                     ("unreadable", f"aspcapStar-dr17-{CORRUPT_ID}.fits")}
    reasons = {k: r for k, _, r in report.skipped}
    assert "truncated" in reasons["unreadable"]
    assert "no aspcapStar file" in reasons["missing file"]

    store = SpectraStore.open(out)
    assert store.kind == "ingested" and store.n_stars == 4 and store.normalized
    cat = store.catalog
    assert cat["APOGEE_ID"].tolist() == [IDS[0], IDS[1], IDS[3], IDS[5]]
    assert {"TEFF", "LOGG", "FE_H", "MG_FE", "ASPCAPFLAG", "SOURCE_FILE", "ALLSTAR_ROW"} <= set(cat.columns)
    assert cat["ALLSTAR_ROW"].tolist() == [0, 1, 3, 5]
    assert Path(cat["SOURCE_FILE"][2]).name == f"aspcapStar-dr17-{IDS[3]}.fits"
    # spectra are the files' (already normalised) arrays, bad pixels filled
    spec = read_aspcapstar(cat["SOURCE_FILE"][0])
    stored = store.spectrum(IDS[0])
    good = spec.good()
    np.testing.assert_allclose(stored.flux[good], spec.flux[good], rtol=1e-6)
    assert np.all(stored.flux[~good] == 1.0) and np.all(stored.error[~good] == LARGE_ERROR)
    # the skips are recorded in the manifest
    prov = store.manifest["provenance"]
    assert prov["ingest"]["skip_counts"] == {"missing file": 1, "unreadable": 1}
    assert prov["file_kind"] == "aspcapStar" and prov["files_found"] == 5
    assert [str(allstar), str(root)] == store.manifest["sources"]


def test_selection_and_limit(aspcap_tree, tmp_path):
    allstar, root = aspcap_tree
    report = ingest_allstar(allstar, root, tmp_path / "s1", selection="spectrafm",
                            selection_overrides={"snr_min": 0.0, "vscatter_max": None},
                            progress=False)
    # the fixture flags rows 1 and 4 STAR_BAD and gives row 2 a non-zero STARFLAG
    counts = {c["cut"]: c["removed"] for c in report.selection["counts"]}
    assert counts["no STAR_BAD"] == 2 and counts["STARFLAG == 0"] == 1
    assert report.n_candidates == 3
    assert SpectraStore.open(tmp_path / "s1").catalog["APOGEE_ID"].tolist() == [IDS[0], IDS[3], IDS[5]]
    limited = ingest_allstar(allstar, root, tmp_path / "s2", limit=2, progress=False)
    assert limited.n_ingested == 2
    assert SpectraStore.open(tmp_path / "s2").n_stars == 2


def test_apstar_files_are_continuum_normalised_on_ingest(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, star in enumerate(IDS[:3]):
        write_apstar(flat / f"apStar-dr17-{star}.fits", apogee_id=star, seed=k, n_visits=2)
    allstar = write_allstar(tmp_path / "allStar.fits", IDS[:3])
    out = tmp_path / "store"
    # The fixture's random lines cover a third of any fixed mask: fit by clipping instead.
    report = ingest_allstar(allstar, flat, out, file_kind="apStar", dtype="float16",
                            continuum=ContinuumSettings(method="clip"), progress=False)
    assert report.n_ingested == 3
    store = SpectraStore.open(out)
    assert store.manifest["dtype"] == "float16"
    assert store.manifest["provenance"]["continuum"]["method"] == "clip"
    b = store.read_all()
    line_free = rest_template(APOGEE_7514.wavelength) > 0.999
    assert abs(np.median(b.flux[:, line_free]) - 1.0) < 0.005
    expected = normalize(read_apstar(flat / f"apStar-dr17-{IDS[1]}.fits"), method="clip")
    np.testing.assert_allclose(b.flux[1], expected.flux, atol=2e-3)  # float16 storage
    np.testing.assert_allclose(b.error[1], expected.error, rtol=2e-3)


def test_file_index_prefers_telescope_and_field(tmp_path):
    star = IDS[0]
    for tel, field in (("apo25m", "F1"), ("lco25m", "F2")):
        d = tmp_path / tel / field
        d.mkdir(parents=True)
        (d / f"aspcapStar-dr17-{star}.fits").write_bytes(b"x")
    (tmp_path / "apStar-dr17-2M99999999+9999999.fits").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    index = FileIndex(tmp_path, "aspcapStar")
    assert len(index) == 2
    assert index.find(star, "lco25m", "F2").parts[-3:-1] == ("lco25m", "F2")
    assert index.find(star, "apo25m", "F1").parts[-3:-1] == ("apo25m", "F1")
    assert index.find(star) is not None and index.find("2M99999999+9999999") is None
    assert FileIndex(tmp_path, "apStar").find("2M99999999+9999999") is not None
    with pytest.raises(BadFileError, match="not found"):
        FileIndex(tmp_path / "nope", "apStar")


def test_nothing_ingested_fails_and_writes_no_store(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    allstar = write_allstar(tmp_path / "allStar.fits", IDS[:2])
    out = tmp_path / "store"
    with pytest.raises(NothingIngestedError) as info:
        ingest_allstar(allstar, empty, out, progress=False)
    assert info.value.report.skip_counts() == {"missing file": 2}
    assert not out.exists()
    assert not list(tmp_path.glob(".store.building-*"))


def test_contspec_with_and_without_allstar(tmp_path):
    flux, err, mask = write_contspec_trio(tmp_path / "cs", n=6)
    out = tmp_path / "plain"
    report = ingest_contspec(flux, err, mask, out, batch_size=4, progress=False)
    assert report.n_ingested == 6
    store = SpectraStore.open(out)
    assert store.catalog["APOGEE_ID"].tolist() == [f"contspec-{i:07d}" for i in range(6)]
    b = store.read_all()
    assert np.all(b.flux[:, ::97] == 1.0)  # the fixture flags every 97th pixel SIG_SKYLINE
    assert np.all(b.pixmask[:, ::97] == 4096)

    allstar = write_allstar(tmp_path / "allStar.fits", IDS)
    out2 = tmp_path / "selected"
    report = ingest_contspec(flux, err, mask, out2, allstar=allstar, selection="vae",
                             selection_overrides={"snr_min": None, "teff_min": None,
                                                  "teff_max": None, "logg_min": None,
                                                  "logg_max": None},
                             progress=False)
    cat = SpectraStore.open(out2).catalog
    assert cat["CONTSPEC_ROW"].tolist() == [0, 2, 3, 5]  # rows 1 and 4 are STAR_BAD
    assert cat["APOGEE_ID"].tolist() == [IDS[i] for i in (0, 2, 3, 5)]

    with pytest.raises(BadFileError, match="one to one"):
        ingest_contspec(flux, err, mask, tmp_path / "x",
                        allstar=write_allstar(tmp_path / "a5.fits", IDS[:5]), progress=False)
    with pytest.raises(BadDataError, match="allStar"):
        ingest_contspec(flux, err, mask, tmp_path / "y", selection="vae", progress=False)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_generic_file(tmp_path, suffix):
    path = write_generic(tmp_path / f"mine{suffix}", n=5)
    out = tmp_path / "store"
    report = ingest_generic(path, out, progress=False)
    assert report.n_ingested == 5
    store = SpectraStore.open(out)
    assert store.kind == "generic" and store.normalized
    assert {"APOGEE_ID", "TEFF", "LOGG", "SOURCE_ROW"} <= set(store.catalog.columns)
    assert store.manifest["provenance"]["normalized_on_ingest"] is False
    assert np.all(store.read_all().flux[:, 5] == 1.0)  # mask bit 0 at pixel 5 → filled


def test_files_mode_builds_catalog_from_headers(tmp_path):
    a = write_apstar(tmp_path / f"apStar-dr17-{IDS[0]}.fits", apogee_id=IDS[0], snr=123.0)
    v = write_apvisit(tmp_path / "apVisit-dr17-1-2-3.fits", apogee_id=IDS[1], seed=3)
    s = write_aspcapstar(tmp_path / f"aspcapStar-dr17-{IDS[2]}.fits", apogee_id=IDS[2])
    cat_file = write_allstar(tmp_path / "allStar.fits", IDS[:2])
    bad = truncate_copy(a, tmp_path / "apStar-dr17-broken.fits", 5000)
    missing = tmp_path / "apStar-dr17-gone.fits"
    out = tmp_path / "store"
    report = ingest_files([a, v, s, cat_file, bad, missing], out, progress=False)
    assert report.n_ingested == 3
    assert {k for k, _, _ in report.skipped} == {"unreadable", "missing file"}
    why = {Path(w).name: r for _, w, r in report.skipped}
    assert "not a single star's spectrum" in why["allStar.fits"]
    assert "FITS" in why["apStar-dr17-broken.fits"]
    cat = SpectraStore.open(out).catalog
    assert cat["APOGEE_ID"].tolist() == IDS[:3]
    assert cat["FILE_KIND"].tolist() == ["apstar", "apvisit", "aspcapstar"]
    assert cat["SNR"][0] == pytest.approx(123.0)
    assert cat["TELESCOPE"][0] == "apo25m" and cat["FIELD"][0] == "TESTFIELD"


def test_cli_ingest_reports_and_exits_nonzero_when_empty(aspcap_tree, tmp_path, capsys):
    allstar, root = aspcap_tree
    out = tmp_path / "cli-store"
    rc = main(["ingest", "--allstar", str(allstar), "--spectra-dir", str(root),
               "--set", "snr_min=0", "--selection", "vae", "--out", str(out), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["selection"]["name"] == "vae"
    assert report["selection"]["settings"]["snr_min"] == 0.0
    assert report["n_ingested"] == SpectraStore.open(out).n_stars

    rc = main(["ingest", "--allstar", str(allstar), "--spectra-dir", str(root),
               "--out", str(out)])
    assert rc == 1 and "already exists" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["ingest", "--allstar", str(allstar), "--spectra-dir", str(empty),
               "--out", str(tmp_path / "none"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "nothing could be ingested" in err and "missing file" in err
    assert not (tmp_path / "none").exists()

    rc = main(["ingest", "--spectra-dir", str(root), "--out", str(tmp_path / "z")])
    assert rc == 1 and "--allstar" in capsys.readouterr().err
    rc = main(["ingest", "--generic", "a.h5", "--files", "b.fits", "--out", str(tmp_path / "z")])
    assert rc == 1 and "one input mode" in capsys.readouterr().err
    rc = main(["ingest", "--contspec", "a", "b", "c", "--set", "snr_min", "--out", str(tmp_path / "z")])
    assert rc == 1 and "KEY=VALUE" in capsys.readouterr().err


def test_overwrite_replaces_a_store(tmp_path):
    a = write_apstar(tmp_path / f"apStar-dr17-{IDS[0]}.fits", apogee_id=IDS[0])
    out = tmp_path / "store"
    ingest_files([a], out, progress=False)
    with pytest.raises(StoreError, match="already exists"):
        ingest_files([a], out, progress=False)
    b = write_apstar(tmp_path / f"apStar-dr17-{IDS[1]}.fits", apogee_id=IDS[1])
    ingest_files([a, b], out, overwrite=True, progress=False)  # (a twice is one star now)
    assert SpectraStore.open(out).n_stars == 2


def test_real_files_ingest_then_inspect(tmp_path, capsys):
    apstar = _real("apStar-dr17-2M17335483-2753043.fits")
    apvisit = _real("apVisit-r13-5095-55844-128.fits")
    out = tmp_path / "real"
    assert main(["ingest", "--files", str(apstar), str(apvisit), "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    store = SpectraStore.open(out)
    cat = store.catalog
    assert cat["APOGEE_ID"].tolist() == ["2M17335483-2753043", "2M01183798+8403419"]
    assert cat["SNR"].round(1).tolist() == [154.2, 45.0]
    assert cat["FIELD"].tolist() == ["000+02", "N188"]
    assert cat["RA"][0] == pytest.approx(263.478474) and cat["DEC"][1] == pytest.approx(84.061646)
    b = store.read_all()
    assert np.isfinite(b.flux).all() and np.isfinite(b.error).all()
    assert 0.85 < np.median(b.flux[0]) < 1.0 and abs(np.median(b.flux[1]) - 1) < 0.03

    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "ingested" and summary["n_stars"] == 2
    assert summary["grid"] == "apogee7514" and summary["dtype"] == "float32"
    assert "SOURCE_FILE" in summary["columns"]
    assert [Path(s).name for s in summary["sources"]] == [apstar.name, apvisit.name]


def test_generic_raw_flux_is_normalised_or_kept_as_is(tmp_path):
    rng = np.random.default_rng(0)
    n, p = 3, APOGEE_7514.n_pix
    cont = np.linspace(900, 1100, p)
    flux = cont * (1 + rng.normal(0, 0.005, (n, p)))
    path = tmp_path / "raw.npz"
    with open(path, "wb") as fh:
        np.savez(fh, flux=flux, error=np.full((n, p), 5.0))
    ingest_generic(path, tmp_path / "auto", progress=False)
    auto = SpectraStore.open(tmp_path / "auto")
    assert auto.normalized and auto.manifest["provenance"]["normalized_on_ingest"] is True
    assert abs(np.median(auto.read_all().flux) - 1) < 0.005
    ingest_generic(path, tmp_path / "kept", normalize=False, progress=False)
    kept = SpectraStore.open(tmp_path / "kept")
    assert not kept.normalized
    np.testing.assert_allclose(kept.read_all().flux, flux, rtol=1e-6)
