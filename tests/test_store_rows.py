"""Same columns, different rows: partial writers of the same catalog columns (``fit --all
--resume`` checkpoints, the app's "Fit N selected", ``run_store(rows=…)``) never undo each
other's rows, even from different processes at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import BadDataError
from core.grid import get_grid
from core.inference.predictor import Column, Prediction, Predictor, SpectraBatch
from core.inference.runner import run_store
from core.store import SpectraStore, verify_store

REPO = Path(__file__).resolve().parents[1]


def _store(path, n=40) -> SpectraStore:
    rng = np.random.default_rng(0)
    p = 7514
    flux = (1 + 0.01 * rng.standard_normal((n, p))).astype(np.float32)
    cat = pd.DataFrame({"APOGEE_ID": [f"2M{i:08d}" for i in range(n)]})
    with SpectraStore.create(path, rows_per_part=n) as w:
        w.append(flux, np.full((n, p), 0.01, np.float32), np.zeros((n, p), np.uint16), cat)
    return SpectraStore.open(path)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# One process: its rows, in checkpoints of 2 rows, into the same FIT_ columns as the other.
_WRITER = """
import sys, time
from pathlib import Path
import numpy as np, pandas as pd
from core.fit.store import write_fit_columns
from core.store import SpectraStore

path, parity, tag, sync = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
store = SpectraStore.open(path)
_ = store.catalog  # a cached catalog, as a long fit has
(sync.parent / f"ready-{parity}").touch()
while not sync.exists():
    time.sleep(0.005)
rows = np.arange(parity, len(store), 2)
for chunk in np.array_split(rows, len(rows) // 2):
    table = pd.DataFrame({"FIT_TEFF": tag + chunk, "FIT_FLAG": np.full(chunk.size, parity, np.int32),
                          "FIT_FLAG_NAMES": [f"P{parity}"] * chunk.size}, index=chunk)
    write_fit_columns(store, table, note={"by": parity})
"""


def test_two_processes_fitting_disjoint_rows_of_the_same_columns_lose_nothing(tmp_path):
    store = _store(tmp_path / "s")
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    n = len(store)
    for round_ in range(3):
        tag = 1000.0 * (round_ + 1)
        sync = tmp_path / f"sync{round_}"
        sync.mkdir()
        procs = [subprocess.Popen([sys.executable, str(script), str(store.path), str(parity),
                                   str(tag), str(sync / "go")],
                                  env=_env(), stderr=subprocess.PIPE, text=True)
                 for parity in (0, 1)]
        deadline = time.time() + 120
        while len(list(sync.glob("ready-*"))) < 2 and time.time() < deadline:
            time.sleep(0.02)
        (sync / "go").touch()  # both start writing at once
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        cat = SpectraStore.open(store.path).catalog
        lost = np.flatnonzero(cat["FIT_TEFF"].to_numpy() != tag + np.arange(n))
        assert lost.size == 0, (round_, lost.tolist())
        assert cat["FIT_FLAG"].tolist() == [i % 2 for i in range(n)]
        assert cat["FIT_FLAG"].dtype == np.int32
        assert cat["FIT_FLAG_NAMES"].tolist() == [f"P{i % 2}" for i in range(n)]
        assert list(cat["APOGEE_ID"]) == [f"2M{i:08d}" for i in range(n)]
    assert verify_store(store.path).ok


def test_rows_keep_what_is_on_disk_even_from_a_stale_object(tmp_path):
    a = _store(tmp_path / "s", n=6)
    b = SpectraStore.open(a.path)
    _ = b.catalog  # b caches the catalog before a writes
    a.add_columns({"X": [1.0, 2.0]}, rows=[0, 1])
    b._sig = object()  # as if b had not noticed: the lock path must re-read
    b.add_columns({"X": [5.0]}, rows=[4])
    x = SpectraStore.open(a.path).catalog["X"].to_numpy()
    assert x[[0, 1, 4]].tolist() == [1.0, 2.0, 5.0] and np.isnan(x[[2, 3, 5]]).all()


def test_new_columns_get_the_fill_value_and_keep_their_dtype(tmp_path):
    s = _store(tmp_path / "s", n=5)
    s.add_columns({"F": np.array([3, 4], np.int32), "N": ["a", "b"], "R": np.array([0.5, 1.5])},
                  rows=[1, 3], fill={"F": -1, "N": ""})
    cat = SpectraStore.open(s.path).catalog
    assert cat["F"].tolist() == [-1, 3, -1, 4, -1] and cat["F"].dtype == np.int32
    assert cat["N"].tolist() == ["", "a", "", "b", ""]
    assert np.isnan(cat["R"].to_numpy()[[0, 2, 4]]).all() and cat["R"][3] == 1.5
    s.add_columns({"F": [7]}, rows=[0])  # an existing column: only row 0 changes
    assert SpectraStore.open(s.path).catalog["F"].tolist() == [7, 3, -1, 4, -1]


def test_bad_rows_are_refused_and_nothing_is_written(tmp_path):
    s = _store(tmp_path / "s", n=5)
    gen = s.generation
    with pytest.raises(BadDataError, match="2 values for 1 rows"):
        s.add_columns({"X": [1.0, 2.0]}, rows=[0])
    with pytest.raises(BadDataError, match="rows outside"):
        s.add_columns({"X": [1.0]}, rows=[5])
    assert SpectraStore.open(s.path).generation == gen


class _Constant(Predictor):
    """Writes ``value`` into C_X of every row it runs (no model needed)."""

    family = "constant"

    def __init__(self, value: float, meanwhile=None):
        self.value, self.meanwhile, self.config = value, meanwhile, {}

    @classmethod
    def load(cls, model_dir, device=None, **_):
        return cls(0.0)

    @property
    def grid(self):
        return get_grid("apogee7514")

    def columns(self):
        return [Column("C_X", "float64"), Column("C_N", "int16", -1)]

    def predict_batch(self, batch: SpectraBatch) -> Prediction:
        n = len(batch)
        if self.meanwhile is not None:
            self.meanwhile()
        return Prediction({"C_X": np.full(n, self.value), "C_N": np.full(n, 1, np.int16)})


def test_a_partial_run_keeps_rows_another_writer_wrote_meanwhile(tmp_path):
    s = _store(tmp_path / "s", n=8)
    run_store(_Constant(1.0), s, rows=[0, 1], progress=False)
    # Another process writes rows 6 and 7 while the run is predicting row 3.
    code = ("import sys; from core.store import SpectraStore; "
            "SpectraStore.open(sys.argv[1]).add_columns({'C_X': [6.0, 7.0]}, rows=[6, 7])")

    def other_writer():
        subprocess.run([sys.executable, "-c", code, str(s.path)], env=_env(), check=True)

    run_store(_Constant(3.0, meanwhile=other_writer), s, rows=[3], progress=False)
    cat = SpectraStore.open(s.path).catalog
    x = cat["C_X"].to_numpy()
    assert x[[0, 1, 3, 6, 7]].tolist() == [1.0, 1.0, 3.0, 6.0, 7.0]
    assert np.isnan(x[[2, 4, 5]]).all()
    assert cat["C_N"].tolist() == [1, 1, -1, 1, -1, -1, -1, -1]
