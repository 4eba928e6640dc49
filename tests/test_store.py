import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import BadDataError, StoreError, UnknownStarError
from core.grid import APOGEE_7514
from core.store import SpectraStore
from core.store import store as store_mod

P = APOGEE_7514.n_pix


def _rows(n, start=0, seed=0):
    rng = np.random.default_rng(seed)
    flux = (1 + 0.01 * rng.standard_normal((n, P))).astype(np.float32)
    error = np.full((n, P), 0.01, np.float32)
    mask = np.zeros((n, P), np.uint16)
    mask[:, :5] = 1 << 12
    cat = pd.DataFrame({
        "APOGEE_ID": [f"2M{start + i:08d}" for i in range(n)],
        "TEFF": rng.uniform(4000, 5000, n), "TEFF_ERR": np.full(n, 20.0),
        "SNR": rng.uniform(50, 500, n), "TELESCOPE": ["apo25m"] * n,
    })
    return flux, error, mask, cat


@pytest.fixture
def small_store(tmp_path):
    path = tmp_path / "s"
    with SpectraStore.create(path, kind="mock survey", rows_per_part=10,
                             provenance={"seed": 1}) as w:
        for k in range(3):
            w.append(*_rows(7, start=7 * k, seed=k))
    return SpectraStore.open(path)


def test_create_and_read_back(small_store):
    s = small_store
    assert s.n_stars == 21 and [p["rows"] for p in s.manifest["parts"]] == [14, 7]
    assert s.is_mock and s.manifest["kind"] == "mock survey"
    assert s.manifest["grid"]["name"] == "apogee7514" and s.manifest["provenance"]["seed"] == 1
    ref = np.concatenate([_rows(7, seed=k)[0] for k in range(3)])
    rows = [20, 0, 13, 13, 5, 14]
    b = s.read(rows)
    assert b.flux.dtype == np.float32 and b.pixmask.dtype == np.uint16
    assert np.array_equal(b.flux, ref[rows]) and b.rows.tolist() == rows
    assert s.label_columns() == ["TEFF"]


def test_lookup_by_id_and_unknown(small_store):
    s = small_store
    assert s.row_of("2M00000012") == 12
    sp = s.spectrum("2M00000012")
    assert sp.grid == "apogee7514" and sp.meta["ROW"] == 12 and sp.meta["TELESCOPE"] == "apo25m"
    assert sp.bad()[:5].all() and not sp.bad()[5:].any()
    with pytest.raises(UnknownStarError, match="2M99999999"):
        s.row_of("2M99999999")
    with pytest.raises(UnknownStarError):
        s.read([21])


def test_iter_batches_cover_every_row_once(small_store):
    s = small_store
    seen = [b.rows for b in s.iter_batches(batch_size=4)]
    assert [len(r) for r in seen] == [4, 4, 4, 4, 4, 1]  # partial last batch
    shuffled = np.concatenate([b.rows for b in s.iter_batches(4, shuffle=True, seed=3, block=2)])
    assert sorted(shuffled.tolist()) == list(range(21))
    assert shuffled.tolist() != list(range(21))
    for b in s.iter_batches(5, shuffle=True, seed=1):  # data stays with its row
        assert np.array_equal(b.flux, s.read(b.rows).flux)


def test_append_and_add_columns(small_store):
    s = small_store
    s.append(*_rows(3, start=100, seed=9), source="extra.fits")
    assert s.n_stars == 24 and s.row_of("2M00000102") == 23
    assert s.manifest["history"][-1]["action"] == "append"
    s.add_columns({"VAE_CHI2": np.arange(24.0)}, note={"model": "m"})
    again = SpectraStore.open(s.path)
    assert again.catalog["VAE_CHI2"].tolist() == list(range(24))
    assert again.manifest["columns"]["VAE_CHI2"]["model"] == "m"
    with pytest.raises(BadDataError, match="24 catalog rows"):
        s.add_columns({"X": np.arange(3.0)})


def test_failed_append_leaves_store_intact(small_store, monkeypatch):
    s = small_store
    before = (s.path / "catalog.parquet").read_bytes(), (s.path / "manifest.json").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod, "_write_part", boom)
    with pytest.raises(OSError):
        s.append(*_rows(2, start=200))
    assert (s.path / "catalog.parquet").read_bytes() == before[0]
    assert (s.path / "manifest.json").read_text() == before[1]
    assert not [p for p in s.path.iterdir() if p.name.endswith(".tmp")]
    assert SpectraStore.open(s.path).n_stars == 21


def test_failed_build_keeps_old_store(small_store):
    path = small_store.path
    with pytest.raises(RuntimeError):
        with SpectraStore.create(path, overwrite=True) as w:
            w.append(*_rows(2))
            raise RuntimeError("interrupted")
    assert SpectraStore.open(path).n_stars == 21
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_refuses_overwrite_and_bad_shapes(small_store, tmp_path):
    with pytest.raises(StoreError, match="already exists"):
        SpectraStore.create(small_store.path)
    f, e, m, c = _rows(2)
    with SpectraStore.create(tmp_path / "t") as w:
        with pytest.raises(BadDataError, match="shape"):
            w.append(f[:, :100], e, m, c)
        with pytest.raises(BadDataError, match="catalog has 1 rows"):
            w.append(f, e, m, c.iloc[:1])
        with pytest.raises(BadDataError, match="APOGEE_ID"):
            w.append(f, e, m, c.drop(columns="APOGEE_ID"))
        w.append(f, e, m, c)


def test_float16_option(tmp_path):
    f, e, m, c = _rows(3)
    with SpectraStore.create(tmp_path / "h", dtype="float16") as w:
        w.append(f, e, m, c)
    s = SpectraStore.open(tmp_path / "h")
    assert s.manifest["dtype"] == "float16"
    b = s.read([0, 1, 2])
    assert b.flux.dtype == np.float32
    assert np.allclose(b.flux, f, atol=1e-3)


def test_open_errors_name_the_problem(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        SpectraStore.open(tmp_path / "nothing")
    (tmp_path / "d").mkdir()
    with pytest.raises(StoreError, match="no manifest.json"):
        SpectraStore.open(tmp_path / "d")
    (tmp_path / "d" / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable manifest"):
        SpectraStore.open(tmp_path / "d")
    (tmp_path / "d" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StoreError, match="not a Stellarscope store"):
        SpectraStore.open(tmp_path / "d")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=-3, max_value=25), min_size=1, max_size=12))
def test_read_any_rows_matches_or_errors(small_store, rows):
    s = small_store
    if all(0 <= r < 21 for r in rows):
        b = s.read(rows)
        assert b.flux.shape == (len(rows), P)
        assert [s.catalog.APOGEE_ID[r] for r in rows] == [f"2M{r:08d}" for r in rows]
    else:
        with pytest.raises(UnknownStarError):
            s.read(rows)


def test_updates_write_catalog_generations_named_by_the_manifest(small_store):
    s = small_store
    assert s.generation == 0 and s.catalog_path.name == "catalog.parquet"
    m = s.manifest
    assert m["catalog"]["blake2b"] and all(p["blake2b"] and p["bytes"] for p in m["parts"])
    for i in range(3):
        s.add_columns({"X": np.full(21, float(i))})
    assert s.generation == 3 and s.catalog_path.name == "catalog-000003.parquet"
    # the previous generation stays for readers that have just read the previous manifest
    assert sorted(p.name for p in s.path.glob("catalog*")) == [
        "catalog-000002.parquet", "catalog-000003.parquet"]
    assert SpectraStore.open(s.path).catalog["X"].tolist() == [2.0] * 21


def test_a_crash_before_the_manifest_leaves_the_last_commit(small_store, monkeypatch):
    s = small_store
    s.add_columns({"X": np.ones(21)})

    def crash(stage):
        if stage == "catalog renamed":
            raise OSError("killed")

    monkeypatch.setattr(store_mod, "_fault", crash)
    with pytest.raises(OSError, match="killed"):
        s.add_columns({"X": np.zeros(21), "Y": np.zeros(21)})
    again = SpectraStore.open(s.path)
    assert again.catalog["X"].tolist() == [1.0] * 21 and "Y" not in again.catalog.columns
    monkeypatch.setattr(store_mod, "_fault", lambda stage: None)
    again.add_columns({"Y": np.arange(21.0)})  # the stray newer catalog is simply replaced
    assert SpectraStore.open(s.path).catalog["Y"].tolist() == list(range(21))


def test_open_checks_parts_against_the_manifest(small_store):
    m = json.loads((small_store.path / "manifest.json").read_text())
    m["parts"][1]["rows"] = 8
    m["n_stars"] = 22
    (small_store.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match=r"spectra-0001\.h5 holds flux of shape \(7, 7514\) but "
                                         r"the manifest says 8 rows"):
        SpectraStore.open(small_store.path)
