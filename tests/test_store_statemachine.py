"""The store under random sequences of appends, column updates, reopenings and crashes.

A crash is simulated two ways: an exception raised between two steps of a write (through the
store's ``_fault`` hook: after the temporary file is written, after it is renamed, …), and a
writer process killed with SIGKILL at a random moment.  Either way every read afterwards
must return exactly what was last committed, and the store must stay writable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from core.store import SpectraStore, verify_store
from core.store import store as store_mod

P = 7514
APPEND_STAGES = ["part written", "part renamed", "catalog written", "catalog renamed", "committed"]
COLUMN_STAGES = ["catalog written", "catalog renamed", "committed"]
_ORIGINAL_FAULT = store_mod._fault


class Crash(Exception):
    """The simulated kill."""


def _spectra(n: int, start: int, seed: int):
    rng = np.random.default_rng(seed)
    flux = rng.uniform(0.5, 1.5, (n, P)).astype(np.float32)
    error = np.full((n, P), 0.02, np.float32)
    mask = rng.integers(0, 4, (n, P)).astype(np.uint16)
    cat = pd.DataFrame({"APOGEE_ID": [f"2M{start + i:08d}" for i in range(n)]})
    return flux, error, mask, cat


class StoreMachine(RuleBasedStateMachine):
    """Model: the committed IDs, spectra and extra columns."""

    def __init__(self):
        super().__init__()
        import tempfile

        self.tmp = Path(tempfile.mkdtemp(prefix="store-sm-"))
        self.path = self.tmp / "s"
        flux, error, mask, cat = _spectra(3, 0, 0)
        with SpectraStore.create(self.path, rows_per_part=2) as w:
            w.append(flux, error, mask, cat)
        self.ids = list(cat["APOGEE_ID"])
        self.flux, self.mask = flux, mask
        self.columns: dict[str, np.ndarray] = {}
        self.store = SpectraStore.open(self.path)
        self.other = SpectraStore.open(self.path)  # a second handle (another "process")
        self.next_id = 3

    def teardown(self):
        import shutil

        store_mod._fault = _ORIGINAL_FAULT
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------------
    def _crash_at(self, stage: str | None):
        def fault(at):
            if at == stage:
                raise Crash(at)

        store_mod._fault = fault if stage else _no_fault

    def _append(self, who, n, seed, stage=None):
        f, e, m, c = _spectra(n, self.next_id, seed)
        self._crash_at(stage)
        try:
            who.append(f, e, m, c)
            crashed = False
        except Crash:
            crashed = True
        finally:
            store_mod._fault = _no_fault
        if not crashed or stage == "committed":
            self.ids += list(c["APOGEE_ID"])
            self.flux = np.concatenate([self.flux, f])
            self.mask = np.concatenate([self.mask, m])
            for name, v in self.columns.items():  # new rows get NaN in added columns
                self.columns[name] = np.concatenate([v, np.full(n, np.nan)])
            self.next_id += n

    def _add(self, who, name, seed, stage=None):
        values = np.random.default_rng(seed).normal(size=len(self.ids))
        self._crash_at(stage)
        try:
            who.add_columns({name: values}, note={"seed": seed})
            crashed = False
        except Crash:
            crashed = True
        finally:
            store_mod._fault = _no_fault
        if not crashed or stage == "committed":
            self.columns[name] = values

    # -- rules --------------------------------------------------------------------------------
    @rule(n=st.integers(1, 3), seed=st.integers(0, 99))
    def append(self, n, seed):
        self._append(self.store, n, seed)

    @rule(name=st.sampled_from(["VAE_Z00", "FIT_TEFF", "X"]), seed=st.integers(0, 99))
    def add_column(self, name, seed):
        self._add(self.store, name, seed)

    @rule(name=st.sampled_from(["VAE_Z00", "FIT_TEFF", "Y"]), seed=st.integers(0, 99))
    def add_column_from_the_other_handle(self, name, seed):
        self._add(self.other, name, seed)

    @rule(n=st.integers(1, 2), seed=st.integers(0, 99), stage=st.sampled_from(APPEND_STAGES))
    def append_killed(self, n, seed, stage):
        self._append(self.store, n, seed, stage)

    @rule(name=st.sampled_from(["VAE_Z00", "FIT_TEFF", "X"]), seed=st.integers(0, 99),
          stage=st.sampled_from(COLUMN_STAGES))
    def add_column_killed(self, name, seed, stage):
        self._add(self.other, name, seed, stage)

    @rule()
    def reopen(self):
        self.store = SpectraStore.open(self.path)

    # -- what every read must show ------------------------------------------------------------
    def _check(self, store):
        cat = store.catalog
        assert list(cat["APOGEE_ID"]) == self.ids
        assert len(store) == len(self.ids)
        extra = sorted(set(cat.columns) - {"APOGEE_ID"})
        assert extra == sorted(self.columns)
        for name, v in self.columns.items():
            np.testing.assert_array_equal(cat[name].to_numpy(), v)
        b = store.read_all()
        np.testing.assert_array_equal(b.flux, self.flux)
        np.testing.assert_array_equal(b.pixmask, self.mask)

    @invariant()
    def every_handle_reads_the_last_commit(self):
        self._check(self.store)
        self._check(self.other)
        self._check(SpectraStore.open(self.path))

    @precondition(lambda self: len(self.ids) % 4 == 0)
    @invariant()
    def verify_finds_nothing_wrong(self):
        assert verify_store(self.path).ok


def _no_fault(stage):
    return None


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=12, stateful_step_count=10, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])


_LOOPER = """
import sys
import numpy as np
from core.store import SpectraStore
store = SpectraStore.open(sys.argv[1])
i = 0
while True:
    i += 1
    store.add_columns({"A": np.full(len(store), float(i)), "B": np.full(len(store), float(i))})
    print(i, flush=True)
"""


@pytest.mark.slow
def test_a_writer_killed_at_random_moments_leaves_the_last_commit(tmp_path):
    path = tmp_path / "s"
    f, e, m, c = _spectra(20, 0, 1)
    with SpectraStore.create(path) as w:
        w.append(f, e, m, c)
    script = tmp_path / "looper.py"
    script.write_text(_LOOPER)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    rng = np.random.default_rng(0)
    last = 0.0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline()  # at least one commit, then kill it mid-flight
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = SpectraStore.open(path)  # consistent, whatever step the kill interrupted
        cat = store.catalog
        a, b = cat["A"].to_numpy(), cat["B"].to_numpy()
        assert (a == a[0]).all() and (b == a[0]).all()  # both columns from one commit
        assert a[0] >= 1.0
        last = a[0]
        np.testing.assert_array_equal(store.read_all().flux, f)
        assert verify_store(path).ok
        store.add_columns({"AFTER": np.arange(20.0)}, lock_timeout=10)  # the lock was freed
        assert SpectraStore.open(path).catalog["A"].iloc[0] == last
