"""Named mock label populations: "classic" frozen bit for bit, "dr17" shaped like DR17."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from reference import REPO, shared_path

from core.mock import MOCK_LABEL_COLUMNS, draw_labels
from core.mock.populations import (
    DR17_BOX,
    DR17_CLASSES,
    DR17_KIND_SHARES,
    M_GIANT_TEFF,
    POPULATIONS,
    alpha_m,
)

#: draw_labels(120, 42) as commit a7a836e made it, before populations had names ("classic"
#: must reproduce it). Kept as values, not a SHA-256 of their bytes: numpy's SIMD exp/log differ
#: in the last bit between CPUs (AVX-512 or not), so a byte digest fails on a machine with
#: another instruction set although the draw is the same (checked on an AMD EPYC without
#: AVX-512: HEAD's classic draw equals a7a836e's there bit for bit).
CLASSIC_REFERENCE = REPO / "tests" / "data" / "classic_draw_120_seed42.npz"


def _reference_columns() -> dict[str, np.ndarray]:
    with np.load(CLASSIC_REFERENCE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _assert_same_draw(got: pd.DataFrame, want: dict[str, np.ndarray]) -> None:
    assert list(got.columns) == list(want)
    for col, w in want.items():
        g = got[col].to_numpy()
        if w.dtype.kind == "U":
            assert g.astype(str).tolist() == w.tolist(), col
        else:
            assert g.dtype == w.dtype, col
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=col)


@pytest.fixture(scope="module")
def dr17() -> pd.DataFrame:
    return draw_labels(20_000, seed=3, population="dr17")


def _giants(df):
    return df[df["POPULATION"].isin(("RGB", "RC", "AGB", "M giant"))]


# --- classic ----------------------------------------------------------------------------------

def test_classic_is_unchanged_and_dr17_the_default():
    assert POPULATIONS[0] == "classic" and "dr17" in POPULATIONS
    reference = _reference_columns()
    _assert_same_draw(draw_labels(120, 42, population="classic"), reference)
    with pytest.raises(AssertionError):  # the default is dr17, another draw
        _assert_same_draw(draw_labels(120, 42), reference)
    pd.testing.assert_frame_equal(draw_labels(25, 5), draw_labels(25, 5, "dr17"))


def test_unknown_population_is_named():
    with pytest.raises(ValueError, match=r"'dr18'.*classic, dr17"):
        draw_labels(10, 1, population="dr18")


# --- dr17 -------------------------------------------------------------------------------------

def test_dr17_is_deterministic_complete_and_keeps_the_classic_columns(dr17):
    again = draw_labels(20_000, seed=3, population="dr17")
    pd.testing.assert_frame_equal(dr17, again)
    other = draw_labels(2000, seed=4, population="dr17")
    assert not np.allclose(dr17["TRUE_TEFF"][:2000], other["TRUE_TEFF"])
    classic_cols = list(draw_labels(10, 1, population="classic").columns)
    assert [c for c in dr17.columns if c in classic_cols] == classic_cols
    assert set(dr17.columns) - set(classic_cols) == {"COMPONENT", "ALPHA_M", "ALPHA_M_ERR",
                                                     "TRUE_ALPHA_M"}
    for name in (*MOCK_LABEL_COLUMNS, "ALPHA_M"):
        for col in (name, f"{name}_ERR", f"TRUE_{name}"):
            assert np.isfinite(dr17[col]).all(), col
    assert dr17["APOGEE_ID"].is_unique
    z = (dr17["ALPHA_M"] - dr17["TRUE_ALPHA_M"]) / dr17["ALPHA_M_ERR"]
    assert 0.8 < z.std() < 1.2


def test_dr17_fills_the_wide_box(dr17):
    t, g, f = dr17["TRUE_TEFF"], dr17["TRUE_LOGG"], dr17["TRUE_FE_H"]
    assert t.between(*DR17_BOX["TEFF"]).all() and g.between(*DR17_BOX["LOGG"]).all()
    assert f.between(*DR17_BOX["FE_H"]).all()
    # the corners the classic draw never reaches
    assert (t < 3500).mean() > 0.03 and (g < 0.5).mean() > 0.015
    assert (t > 6500).mean() > 0.01 and (g > 4.8).mean() > 0.02
    # and no pile-up at the edges (clipping would put whole tails on the box's walls)
    assert (t == DR17_BOX["TEFF"][0]).mean() < 0.005 and (g == DR17_BOX["LOGG"][1]).sum() == 0


def test_dr17_class_proportions_are_as_documented(dr17):
    share = dr17["POPULATION"].value_counts(normalize=True)
    assert set(share.index) == set(DR17_CLASSES)
    giants = share[["RGB", "RC", "AGB", "M giant"]].sum()
    assert giants == pytest.approx(DR17_KIND_SHARES["giant"], abs=0.015)
    for kind in ("subgiant", "dwarf", "M dwarf"):
        assert share[kind] == pytest.approx(DR17_KIND_SHARES[kind], abs=0.01), kind
    assert 0.05 < share["RC"] / giants < 0.15 and share["M giant"] > 0.02
    by_class = dr17.groupby("POPULATION")
    assert (by_class.get_group("M giant")["TRUE_TEFF"] < M_GIANT_TEFF).all()
    md = by_class.get_group("M dwarf")
    assert (md["TRUE_TEFF"] < 4000).all() and md["TRUE_LOGG"].median() > 4.7
    sg = by_class.get_group("subgiant")
    assert 3.4 < sg["TRUE_LOGG"].median() < 4.1 and 5000 < sg["TRUE_TEFF"].median() < 6300
    dw = by_class.get_group("dwarf")
    assert dw["TRUE_LOGG"].median() > 4.2
    comps = dr17["COMPONENT"].value_counts(normalize=True)
    assert comps["thin"] > 0.5 and comps["accreted"] > 0.01 and comps["clouds"] > 0.01


def test_dr17_giant_branch_depends_on_metallicity_and_has_a_red_clump(dr17):
    g = _giants(dr17)
    rgb = g[g["POPULATION"].isin(("RGB", "M giant"))]
    band = rgb[rgb["TRUE_LOGG"].between(1.5, 2.0)]
    poor = band.loc[band["TRUE_FE_H"] < -1.0, "TRUE_TEFF"].median()
    rich = band.loc[band["TRUE_FE_H"] > 0.0, "TRUE_TEFF"].median()
    assert poor - rich > 300  # metal-poor giant branches are hotter
    assert np.corrcoef(rgb["TRUE_LOGG"], rgb["TRUE_TEFF"])[0, 1] > 0.8
    # the clump: a peak in the log g distribution of near-solar giants at log g ≈ 2.5
    solar = g.loc[g["TRUE_FE_H"].between(-0.4, 0.3), "LOGG"]
    peak = solar.between(2.45, 2.65).sum()
    assert peak > 1.5 * solar.between(2.05, 2.25).sum()
    assert peak > 1.5 * solar.between(2.85, 3.05).sum()
    rc = g[g["POPULATION"] == "RC"]
    assert rc["TRUE_LOGG"].between(2.2, 3.1).all() and rc["TRUE_TEFF"].between(4300, 5600).all()


def test_dr17_alpha_plane_has_two_sequences_with_a_dip(dr17):
    for lo, hi in ((-0.7, -0.5), (-0.5, -0.3)):
        a = dr17.loc[dr17["FE_H"].between(lo, hi), "ALPHA_M"]
        h, edges = np.histogram(a, bins=np.arange(-0.05, 0.36, 0.02))
        mid = 0.5 * (edges[1:] + edges[:-1])
        low_peak = h[mid < 0.12].max()
        high_peak = h[mid > 0.17].max()
        dip = h[(mid > 0.10) & (mid < 0.20)].min()
        assert dip < 0.4 * min(low_peak, high_peak), (lo, h)
    # the classic draw has no such dip (one broad peak)
    c = draw_labels(20_000, 3, population="classic")
    a = alpha_m(c)[c["FE_H"].between(-0.5, -0.3)]
    h, edges = np.histogram(a, bins=np.arange(-0.05, 0.36, 0.02))
    mid = 0.5 * (edges[1:] + edges[:-1])
    assert h[(mid > 0.10) & (mid < 0.20)].min() > 0.4 * min(h[mid < 0.12].max(), h[mid > 0.17].max())


def test_dr17_abundance_patterns_follow_the_population(dr17):
    assert np.corrcoef(dr17["TRUE_MG_FE"], dr17["TRUE_ALPHA_M"])[0, 1] > 0.9
    assert np.corrcoef(dr17["TRUE_O_FE"], dr17["TRUE_ALPHA_M"])[0, 1] > 0.9
    assert np.allclose(alpha_m(dr17, "TRUE_"), dr17["TRUE_ALPHA_M"])
    # at the same [Fe/H] the accreted halo is α-poor and Al-poor next to the in-situ halo
    mp = dr17[dr17["TRUE_FE_H"].between(-1.4, -1.0)]
    acc, insitu = mp[mp["COMPONENT"] == "accreted"], mp[mp["COMPONENT"].isin(("halo", "thick"))]
    assert insitu["TRUE_ALPHA_M"].median() - acc["TRUE_ALPHA_M"].median() > 0.08
    assert insitu["TRUE_AL_FE"].median() - acc["TRUE_AL_FE"].median() > 0.15
    # giants are CN-processed, dwarfs are not
    giant = dr17["POPULATION"].isin(("RGB", "RC", "AGB", "M giant"))
    assert dr17.loc[giant, "TRUE_N_FE"].mean() > dr17.loc[~giant, "TRUE_N_FE"].mean() + 0.2


# --- against real DR17 giants (../shared) -----------------------------------------------------

def _bench():
    spec = importlib.util.spec_from_file_location("bench_population",
                                                  REPO / "bench" / "population.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dr17_matches_the_real_giants_and_classic_does_not():
    path = shared_path("data", "reference", "dr17_rgb_labels.npz")
    bench = _bench()
    ref = bench.load_reference(path)
    r = bench.compare(draw_labels(60_000, seed=11, population="dr17"), ref)
    assert r["n_selected"] > 25_000
    for label, ks in r["ks"].items():
        assert ks <= bench.KS_TARGET, (label, r["ks"])
    assert r["density_share"]["teff_logg_over3x"] <= bench.DENSITY_TARGET, r["density_share"]
    assert r["density_share"]["feh_alpha_over3x"] <= bench.DENSITY_TARGET, r["density_share"]
    assert r["locus"]["rms_K"] < 80
    old = bench.compare(draw_labels(60_000, seed=11, population="classic"), ref)
    assert max(old["ks"].values()) > 0.1 and old["density_share"]["teff_logg_over3x"] > 0.2


def test_population_bench_skips_without_the_reference(tmp_path, capsys):
    out = tmp_path / "population.json"
    rc = _bench().main(["--reference", str(tmp_path / "absent.npz"), "--out", str(out),
                        "--figure", str(tmp_path / "p.png"), "--n", "100"])
    assert rc == 0 and not out.exists()
    assert "skipped" in capsys.readouterr().out


def test_mock_cli_records_the_population(tmp_path, capsys):
    import json

    from core.cli.main import main
    from core.mock import store_physics, store_population
    from core.store import SpectraStore

    out = tmp_path / "dr17-mock"
    assert main(["mock", "--n-stars", "40", "--seed", "4", "--population", "dr17",
                 "--physics", "classic", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["population"] == "dr17"
    store = SpectraStore.open(out)
    assert store_population(store) == "dr17" and store_physics(store) == "classic"
    assert "classic physics" in store.title and "population" not in store.title
    expected = draw_labels(40, 4, population="dr17")
    assert list(store.catalog["APOGEE_ID"]) == list(expected["APOGEE_ID"])
    assert store.catalog["TRUE_TEFF"].to_numpy() == pytest.approx(expected["TRUE_TEFF"].to_numpy())
    default = tmp_path / "default"
    assert main(["mock", "--n-stars", "5", "--out", str(default), "--json"]) == 0
    d = SpectraStore.open(default)
    assert store_population(d) == "dr17" and store_physics(d) == "apogee"
    assert d.title == "Mock APOGEE survey (seed 42)"
    # stores written before populations existed have no record: classic
    m = json.loads((default / "manifest.json").read_text())
    del m["provenance"]["population"]
    assert store_population(m) == "classic"
