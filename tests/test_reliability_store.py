"""Nothing lost, nothing injected: the store-integrity findings of the outside review, as tests.

1 --overwrite replaces only a store, and only once the new one is complete.
2 Writers of different processes never lose each other's columns; readers follow them.
3 Parts are checked against the manifest on open; ``inspect --verify`` re-reads everything.
4 An unreadable file is skipped and reported by ingest, never a traceback.
5 .fits.gz is read by core.io, the CLI and the upload path.
6 Messages: no Python function names in CLI errors, missing ≠ unreadable, zero rows, repeats.
"""

from __future__ import annotations

import builtins
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from fits_fixtures import write_aspcapstar, write_generic

from core.cli.main import main
from core.errors import BadFileError, StoreError
from core.ingest import ingest_allstar, ingest_files, ingest_generic
from core.io import detect_kind, read_spectrum
from core.store import SpectraStore, store_lock, verify_store
from core.store import store as store_mod

REPO = Path(__file__).resolve().parents[1]
IDS = [f"2M0000000{i}+0000000" for i in range(4)]


def _rows(n, start=0, seed=0):
    rng = np.random.default_rng(seed)
    p = 7514
    flux = (1 + 0.01 * rng.standard_normal((n, p))).astype(np.float32)
    error = np.full((n, p), 0.01, np.float32)
    mask = np.zeros((n, p), np.uint16)
    cat = pd.DataFrame({"APOGEE_ID": [f"2M{start + i:08d}" for i in range(n)],
                        "TEFF": rng.uniform(4000, 5000, n)})
    return flux, error, mask, cat


def _store(path, n=12, parts=1):
    with SpectraStore.create(path, rows_per_part=max(1, n // parts)) as w:
        for k in range(parts):
            w.append(*_rows(n // parts, start=k * (n // parts), seed=k))
    return SpectraStore.open(path)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- 1: --overwrite ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["mock", "--n-stars", "5"],
    ["ingest", "--generic", "GENERIC"],
])
def test_overwrite_refuses_a_folder_that_is_not_a_store(tmp_path, capsys, command):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "f").write_text("a\n")
    command = [str(write_generic(tmp_path / "g.npz")) if c == "GENERIC" else c for c in command]
    rc = main(command + ["--out", str(notes), "--overwrite", "--no-progress"]
              if command[0] == "ingest" else command + ["--out", str(notes), "--overwrite"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "replaces only a Stellarscope store" in err and str(notes) in err
    assert (notes / "f").read_text() == "a\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_overwrite_refuses_a_file_and_accepts_an_empty_folder(tmp_path):
    f = tmp_path / "plain"
    f.write_text("keep me")
    with pytest.raises(StoreError, match="is a file, not a Stellarscope store"):
        SpectraStore.create(f, overwrite=True)
    assert f.read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    with SpectraStore.create(empty, overwrite=True) as w:
        w.append(*_rows(2))
    assert SpectraStore.open(empty).n_stars == 2


def test_overwrite_keeps_the_old_store_until_the_new_one_is_complete(tmp_path, monkeypatch):
    old = _store(tmp_path / "s", n=6)
    with SpectraStore.create(old.path, overwrite=True) as w:
        w.append(*_rows(3, start=50))
        assert SpectraStore.open(old.path).n_stars == 6  # still the old one meanwhile

    assert SpectraStore.open(old.path).n_stars == 3

    def crash(stage):
        if stage == "new store built":
            raise OSError("killed")

    monkeypatch.setattr(store_mod, "_fault", crash)
    with pytest.raises(OSError, match="killed"):
        with SpectraStore.create(old.path, overwrite=True) as w:
            w.append(*_rows(9, start=70))
    assert SpectraStore.open(old.path).n_stars == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- 2: concurrent writers ------------------------------------------------------------------------

_WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from core.store import SpectraStore
path, prefix, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
store = SpectraStore.open(path)
store.catalog  # both writers hold the catalog as it was before either wrote
(go.parent / f"ready-{prefix}").touch()
while not go.exists():
    time.sleep(0.01)
for i in range(n):
    store.add_columns({f"{prefix}_{i % 4}": np.full(len(store), float(i))}, note={"by": prefix})
"""


def test_two_processes_adding_columns_lose_nothing(tmp_path):
    store = _store(tmp_path / "s", n=40, parts=2)
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    for round_ in range(3):
        sync = tmp_path / f"sync{round_}"
        sync.mkdir()
        procs = [subprocess.Popen([sys.executable, str(script), str(store.path), prefix, "12",
                                   str(sync / "go")],
                                  env=_env(), stderr=subprocess.PIPE, text=True)
                 for prefix in ("VAE", "FIT")]
        deadline = time.time() + 120
        while len(list(sync.glob("ready-*"))) < 2 and time.time() < deadline:
            time.sleep(0.02)
        (sync / "go").touch()  # both start writing at once
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        cat = SpectraStore.open(store.path).catalog
        for prefix in ("VAE", "FIT"):
            for k in range(4):
                assert f"{prefix}_{k}" in cat.columns, (round_, sorted(cat.columns))
            assert (cat[f"{prefix}_3"] == 11.0).all()  # each writer's last value survives
        assert list(cat["APOGEE_ID"]) == [f"2M{i:08d}" for i in range(40)]
    m = SpectraStore.open(store.path).manifest
    assert m["generation"] == 72 and {m["columns"]["VAE_0"]["by"], m["columns"]["FIT_0"]["by"]} \
        == {"VAE", "FIT"}
    assert verify_store(store.path).ok


def test_second_writer_times_out_clearly_and_writes_nothing(tmp_path):
    store = _store(tmp_path / "s")
    before = store.generation
    with store_lock(store.path):
        t0 = time.perf_counter()
        with pytest.raises(StoreError, match="another process has been writing this store"):
            store.add_columns({"X": np.zeros(len(store))}, lock_timeout=0.3)
        assert time.perf_counter() - t0 >= 0.3
    again = SpectraStore.open(store.path)
    assert again.generation == before and "X" not in again.catalog.columns


def test_a_reader_picks_up_another_process_columns_without_reopening(tmp_path):
    reader = _store(tmp_path / "s")
    assert "NEW" not in reader.catalog.columns
    code = ("import numpy as np, sys; from core.store import SpectraStore; "
            "s = SpectraStore.open(sys.argv[1]); s.add_columns({'NEW': np.arange(len(s)) * 2.0})")
    subprocess.run([sys.executable, "-c", code, str(reader.path)], env=_env(), check=True)
    assert reader.catalog["NEW"].tolist() == [2.0 * i for i in range(12)]
    assert reader.spectrum(3).meta["NEW"] == 6.0


def test_a_stale_store_object_merges_instead_of_overwriting(tmp_path):
    a = _store(tmp_path / "s")
    b = SpectraStore.open(a.path)
    _ = b.catalog  # b caches the catalog before a writes
    a.add_columns({"A": np.ones(12)})
    b._sig = object()  # as if b had not noticed (no stat check): the lock path must re-read
    b.add_columns({"B": np.zeros(12)})
    cat = SpectraStore.open(a.path).catalog
    assert {"A", "B"} <= set(cat.columns)


@pytest.mark.slow
def test_fit_all_and_infer_vae_at_once_keep_both_columns(tmp_path):
    """The exact race of the review: ``fit --all --checkpoint`` while ``infer vae`` runs."""
    store = tmp_path / "race"
    assert main(["mock", "--n-stars", "24", "--out", str(store), "--json"]) == 0
    cli = [sys.executable, "-m", "core.cli.main"]
    fit = subprocess.Popen(cli + ["fit", "--all", "--store", str(store), "--checkpoint", "2",
                                  "--limit", "12", "--starts", "1", "--device", "cpu", "--json"],
                           env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and fit.poll() is None:  # let the fit's checkpoints begin
        if "FIT_TEFF" in SpectraStore.open(store).manifest.get("columns", {}):
            break
        time.sleep(0.2)
    infer = subprocess.run(cli + ["infer", "vae", "--store", str(store)], env=_env(),
                           capture_output=True, text=True, timeout=300)
    _, fit_err = fit.communicate(timeout=600)
    assert fit.returncode == 0, fit_err
    assert infer.returncode == 0, infer.stderr
    cat = SpectraStore.open(store).catalog
    assert any(c.startswith("VAE_") for c in cat.columns), sorted(cat.columns)
    assert "FIT_TEFF" in cat.columns and np.isfinite(cat["FIT_TEFF"].to_numpy()[:12]).all()


# --- 3: consistency -------------------------------------------------------------------------------


def _shorten_part(path: Path, keep: int) -> None:
    with h5py.File(path, "r") as h5:
        data = {k: h5[k][:keep] for k in ("flux", "error", "pixmask")}
        wave = h5["wavelength"][()]
    with h5py.File(path, "w") as h5:
        h5.create_dataset("wavelength", data=wave)
        for k, v in data.items():
            h5.create_dataset(k, data=v)


def test_a_short_part_is_named_on_open_and_by_inspect(tmp_path, capsys):
    store = _store(tmp_path / "s", n=12, parts=2)
    _shorten_part(store.path / "spectra-0001.h5", 4)
    with pytest.raises(StoreError, match=r"spectra-0001\.h5 holds flux of shape \(4, 7514\)"):
        SpectraStore.open(store.path)
    assert main(["inspect", str(store.path)]) == 1
    assert "spectra-0001.h5" in capsys.readouterr().err
    assert main(["inspect", str(store.path), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "spectra-0001.h5" in out and "checksum mismatch" in out and "problem" in out


def test_an_already_open_store_reports_a_part_shortened_later(tmp_path):
    store = _store(tmp_path / "s", n=12, parts=2)
    _shorten_part(store.path / "spectra-0001.h5", 4)
    with pytest.raises(StoreError, match="spectra-0001.h5"):
        store.read([11])


def test_verify_finds_changed_bytes_that_open_cannot_see(tmp_path, capsys):
    store = _store(tmp_path / "s", n=12)
    assert main(["inspect", str(store.path), "--verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    with h5py.File(store.path / "spectra-0000.h5", "r+") as h5:
        h5["flux"][0, 0] = 99.0
    SpectraStore.open(store.path)  # shapes still agree
    report = verify_store(store.path)
    assert not report.ok and "spectra-0000.h5: checksum mismatch" in report.problems[0]
    assert main(["inspect", str(store.path), "--verify", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verify"]["ok"] is False


def test_stores_without_checksums_verify_rows_and_say_so(tmp_path):
    store = _store(tmp_path / "s", n=12, parts=2)
    m = json.loads((store.path / "manifest.json").read_text())
    for p in m["parts"]:
        del p["blake2b"], p["bytes"]
    del m["catalog"], m["generation"], m["store_id"]
    (store.path / "manifest.json").write_text(json.dumps(m))
    report = verify_store(store.path)
    assert report.ok and any("checksums are not recorded for 2 part" in n for n in report.notes)
    _shorten_part(store.path / "spectra-0000.h5", 2)
    report = verify_store(store.path)
    assert not report.ok and "spectra-0000.h5: flux has shape (2, 7514)" in report.problems[0]


def test_a_missing_catalog_is_called_missing(tmp_path):
    store = _store(tmp_path / "s")
    store.catalog_path.unlink()
    with pytest.raises(StoreError, match=r"catalog catalog\.parquet is missing"):
        SpectraStore.open(store.path)
    assert "catalog catalog.parquet is missing" in verify_store(store.path).problems[0]


# --- 4: unreadable files --------------------------------------------------------------------------


def _deny(monkeypatch, denied: Path):
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


def _two_files(tmp_path):
    return [write_aspcapstar(tmp_path / f"aspcapStar-dr17-{s}.fits", apogee_id=s, seed=k)
            for k, s in enumerate(IDS[:2])]


def test_ingest_files_skips_a_file_it_may_not_read(tmp_path, monkeypatch):
    good, denied = _two_files(tmp_path)
    _deny(monkeypatch, denied)
    with pytest.raises(BadFileError, match="permission denied"):
        detect_kind(denied)
    report = ingest_files([good, denied], tmp_path / "out", progress=False)
    assert report.n_ingested == 1
    assert report.skipped == [("unreadable", str(denied), "cannot be read: permission denied")]


def test_ingest_allstar_skips_a_file_it_may_not_read(tmp_path, monkeypatch):
    from fits_fixtures import write_allstar

    folder = tmp_path / "tree"
    folder.mkdir()
    good, denied = _two_files(folder)
    allstar = write_allstar(tmp_path / "allStar-dr17.fits", IDS[:2], dr=17)
    _deny(monkeypatch, denied)
    report = ingest_allstar(allstar, folder, tmp_path / "out", progress=False)
    assert report.n_ingested == 1
    assert [(k, w) for k, w, _ in report.skipped] == [("unreadable", str(denied))]
    assert "permission denied" in report.skipped[0][2]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; the "
                    "monkeypatched tests above cover the same path")
def test_ingest_skips_a_chmod_000_file(tmp_path, capsys):
    good, denied = _two_files(tmp_path)
    denied.chmod(0)
    try:
        rc = main(["ingest", "--files", str(good), str(denied), "--out", str(tmp_path / "o"),
                   "--no-progress"])
    finally:
        denied.chmod(0o644)
    assert rc == 0 and "permission denied" in capsys.readouterr().err


# --- 5: .fits.gz -----------------------------------------------------------------------------------


def _gz(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    return out


def test_gzip_fits_is_read_by_core_io_cli_and_upload(tmp_path, capsys):
    plain = write_aspcapstar(tmp_path / f"aspcapStar-dr17-{IDS[0]}.fits", apogee_id=IDS[0])
    packed = _gz(plain)
    plain_spec = read_spectrum(plain)
    assert detect_kind(packed) == "aspcapstar"
    spec = read_spectrum(packed)
    assert np.array_equal(spec.flux, plain_spec.flux) and spec.apogee_id == IDS[0]
    assert main(["ingest", "--files", str(packed), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    assert SpectraStore.open(tmp_path / "o").catalog["APOGEE_ID"].tolist() == [IDS[0]]
    assert main(["inspect", str(packed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "aspcapstar"
    from dashboard.views.upload import read_upload

    uploaded = read_upload("mine.fits.gz", packed.read_bytes())
    assert np.array_equal(uploaded.flux, plain_spec.flux)


def test_gzip_fits_in_a_spectra_tree_and_damaged_gzip(tmp_path):
    from fits_fixtures import write_allstar

    folder = tmp_path / "tree"
    folder.mkdir()
    for p in _two_files(folder):
        _gz(p)
        p.unlink()
    allstar = write_allstar(tmp_path / "allStar-dr17.fits", IDS[:2], dr=17)
    assert ingest_allstar(allstar, folder, tmp_path / "o", progress=False).n_ingested == 2
    bad = folder / "broken.fits.gz"
    bad.write_bytes((folder / f"aspcapStar-dr17-{IDS[0]}.fits.gz").read_bytes()[:3000])
    with pytest.raises(BadFileError, match="broken.fits.gz: damaged gzip data"):
        read_spectrum(bad, kind="aspcapstar")


# --- 6: messages and repeats ----------------------------------------------------------------------


def test_cli_errors_name_no_python_function(tmp_path):
    gen = write_generic(tmp_path / "g.npz")
    with pytest.raises(BadFileError) as err:
        read_spectrum(gen)
    assert "read_generic" not in str(err.value)
    assert "stellarscope ingest --generic" in str(err.value)


def test_zero_row_files_say_so(tmp_path):
    zero = tmp_path / "zero.npz"
    np.savez(zero, flux=np.zeros((0, 7514), np.float32), error=np.zeros((0, 7514), np.float32))
    with pytest.raises(BadFileError, match="holds no spectra"):
        ingest_generic(zero, tmp_path / "o", progress=False)


def test_repeated_apogee_ids_are_reported_and_the_first_kept(tmp_path, capsys):
    a, b = _two_files(tmp_path)
    copy = tmp_path / "copy-of-a.fits"
    copy.write_bytes(a.read_bytes())
    report = ingest_files([a, b, copy, a], tmp_path / "o", progress=False)
    assert report.n_ingested == 2
    assert [(k, w) for k, w, _ in report.skipped] == [("duplicate id", str(copy)),
                                                       ("duplicate id", str(a))]
    assert f"APOGEE_ID {IDS[0]} was already ingested from {a}" in report.skipped[0][2]
    store = SpectraStore.open(tmp_path / "o")
    assert store.catalog["APOGEE_ID"].tolist() == IDS[:2]
    assert store.catalog["SOURCE_FILE"].tolist() == [str(a), str(b)]


def test_a_part_truncated_under_an_open_handle_is_an_error_not_zeros(tmp_path):
    """HDF5 keeps reading a file's cached layout after it is truncated, and the missing bytes
    read as zeros; the store notices the file changed and says so."""
    store = _store(tmp_path / "s", n=12)
    assert store.read([0]).flux.mean() == pytest.approx(1.0, abs=0.01)  # handle now open
    part = next(store.path.glob("spectra-*.h5"))
    part.write_bytes(part.read_bytes()[:500])
    with pytest.raises(StoreError, match=part.name):
        store.read([5])
