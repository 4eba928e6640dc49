"""How much do the mock's label populations look like real DR17 giants?

Compares each named population of :func:`core.mock.draw_labels` ("classic", "dr17") with the
real DR17 (ASPCAP) red giants in ``../shared/data/reference/dr17_rgb_labels.npz`` (two arrays:
Teff, log g, [α/M] and Teff, [Fe/H], [α/M]; see ../shared/data/README.md).

The mock giants are selected like the reference, whose labels span Teff 3107–5440 K, log g
−0.48 to 3.35 and [Fe/H] −2.47 to 0.57: catalog (noisy) labels with 3100 ≤ Teff < 5500 K,
−0.5 ≤ log g < 3.35 and −2.5 ≤ [Fe/H] < 0.6.  The mock's [α/M] is
:func:`core.mock.populations.alpha_m` (dr17's ALPHA_M column; classic has none, so mean [O/Fe]
and [Mg/Fe] less [M/H] − [Fe/H]).  Reported per population:

* Kolmogorov–Smirnov distance per label (Teff, log g, [Fe/H], [α/M]); target ≤ 0.05;
* 2-D density: the share of selected mock stars in bins where the mock density (each sample
  normalised to 1) exceeds 3× (and 10×) the real one, in Teff–log g (100 K × 0.1 dex) and
  [Fe/H]–[α/M] (0.1 × 0.02 dex); target ≤ 5 % at 3×;
* the locus at each [Fe/H]: median Teff of mock minus real giants in cells of [Fe/H] (0.25
  dex) × log g (0.25 dex) with ≥ 200 real and 50 mock stars (the two reference arrays share
  most stars, matched on identical (Teff, [α/M]) values); RMS and worst cell;
* the share of each stellar class (POPULATION) and Galactic component in the whole mock.

Prints a table, writes bench/results/population.json and a diagnostic figure
bench/results/population.png (Kiel diagram and α–Fe plane, real vs mock).  Skips with a message
when ../shared is absent.  Run: ``python bench/population.py [--n 200000] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.mock.populations import POPULATIONS, alpha_m, draw_labels  # noqa: E402
from core.store.atomic import write_json_atomic  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "data" / "reference" / "dr17_rgb_labels.npz"
RESULTS = ROOT / "bench" / "results"
#: The reference's selection, applied to the mock's catalog labels.
CUT = {"TEFF": (3100.0, 5500.0), "LOGG": (-0.5, 3.35), "FE_H": (-2.5, 0.6)}
KS_TARGET = 0.05
DENSITY_TARGET = 0.05
#: 2-D bins: (x edges, y edges) of the two planes.
PLANES = {
    "teff_logg": (np.arange(3000.0, 5601.0, 100.0), np.arange(-0.6, 3.51, 0.1)),
    "feh_alpha": (np.arange(-2.6, 0.71, 0.1), np.arange(-0.2, 0.501, 0.02)),
}


def load_reference(path: Path = REFERENCE) -> dict[str, np.ndarray]:
    """The real giants: per-label arrays, and a joint (Teff, log g, [Fe/H]) table of the stars
    present in both arrays."""
    with np.load(path) as d:
        tga = np.asarray(d["teff_logg_alpha"], dtype=np.float64)
        tfa = np.asarray(d["teff_feh_alpha"], dtype=np.float64)
    ref = {"teff_g": tga[:, 0], "logg": tga[:, 1], "teff": tfa[:, 0], "feh": tfa[:, 1],
           "alpha": tfa[:, 2]}
    # the same star has the same float32 Teff and [α/M] in both arrays: key on their bits
    def key(t, a):
        bits = np.column_stack([t, a]).astype(np.float32).view(np.uint32).astype(np.uint64)
        return (bits[:, 0] << np.uint64(32)) | bits[:, 1]

    _, ig, jf = np.intersect1d(key(tga[:, 0], tga[:, 2]), key(tfa[:, 0], tfa[:, 2]),
                               return_indices=True)
    ref["joint"] = np.column_stack([tga[ig, 0], tga[ig, 1], tfa[jf, 1]])
    return ref


def select_giants(labels) -> dict[str, np.ndarray]:
    """Catalog labels of the mock stars inside the reference's selection."""
    t, g, f = (labels[c].to_numpy(np.float64) for c in ("TEFF", "LOGG", "FE_H"))
    keep = np.ones(t.size, bool)
    for name, v in (("TEFF", t), ("LOGG", g), ("FE_H", f)):
        keep &= (v >= CUT[name][0]) & (v < CUT[name][1])
    return {"teff": t[keep], "logg": g[keep], "feh": f[keep], "alpha": alpha_m(labels)[keep]}


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov distance: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    x = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, x, "right") / a.size
                               - np.searchsorted(b, x, "right") / b.size)))


def excess_share(mx, my, rx, ry, edges, factor: float) -> float:
    """Share of mock points in bins where the mock density exceeds ``factor`` × the real one."""
    hm, _, _ = np.histogram2d(mx, my, bins=edges)
    hr, _, _ = np.histogram2d(rx, ry, bins=edges)
    over = hm / hm.sum() > factor * hr / hr.sum()
    return float(hm[over].sum() / hm.sum())


def locus_offsets(mock: dict, joint: np.ndarray) -> dict:
    """Median Teff (mock − real) in [Fe/H] × log g cells well populated in both."""
    fe = np.arange(-2.5, 0.51, 0.25)
    gg = np.arange(-0.5, 3.35, 0.25)
    out = []
    for f0, f1 in zip(fe[:-1], fe[1:], strict=True):
        for g0, g1 in zip(gg[:-1], gg[1:], strict=True):
            r = joint[(joint[:, 2] >= f0) & (joint[:, 2] < f1)
                      & (joint[:, 1] >= g0) & (joint[:, 1] < g1), 0]
            m = mock["teff"][(mock["feh"] >= f0) & (mock["feh"] < f1)
                             & (mock["logg"] >= g0) & (mock["logg"] < g1)]
            if r.size >= 200 and m.size >= 50:
                out.append((f0, g0, float(np.median(m) - np.median(r))))
    d = np.array([o[2] for o in out]) if out else np.array([np.nan])
    worst = max(out, key=lambda o: abs(o[2])) if out else (np.nan, np.nan, np.nan)
    return {"cells": len(out), "rms_K": round(float(np.sqrt(np.mean(d**2))), 1),
            "worst": {"feh": worst[0], "logg": worst[1], "dteff_K": round(worst[2], 1)}}


def compare(labels, ref: dict) -> dict:
    """Every figure of the comparison for one mock catalog."""
    mock = select_giants(labels)
    ks = {"teff": ks_distance(mock["teff"], ref["teff_g"]),
          "logg": ks_distance(mock["logg"], ref["logg"]),
          "feh": ks_distance(mock["feh"], ref["feh"]),
          "alpha_m": ks_distance(mock["alpha"], ref["alpha"])}
    density = {}
    for plane, (mx, my, rx, ry) in {
        "teff_logg": (mock["teff"], mock["logg"], ref["teff_g"], ref["logg"]),
        "feh_alpha": (mock["feh"], mock["alpha"], ref["feh"], ref["alpha"]),
    }.items():
        for factor in (3, 10):
            density[f"{plane}_over{factor}x"] = excess_share(mx, my, rx, ry, PLANES[plane], factor)
    classes = labels["POPULATION"].value_counts(normalize=True)
    out = {"n_stars": len(labels), "n_selected": int(mock["teff"].size),
           "ks": {k: round(v, 4) for k, v in ks.items()},
           "density_share": {k: round(v, 4) for k, v in density.items()},
           "locus": locus_offsets(mock, ref["joint"]),
           "classes": {k: round(float(v), 4) for k, v in classes.items()}}
    if "COMPONENT" in labels:
        comps = labels["COMPONENT"].value_counts(normalize=True)
        out["components"] = {k: round(float(v), 4) for k, v in comps.items()}
    out["meets_targets"] = bool(max(ks.values()) <= KS_TARGET
                                and density["teff_logg_over3x"] <= DENSITY_TARGET
                                and density["feh_alpha_over3x"] <= DENSITY_TARGET)
    return out


def figure(catalogs: dict, ref: dict, path: Path) -> None:
    """Kiel diagram and α–Fe plane: real giants, then each mock's giants, then the whole dr17."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    cols = [("real DR17 giants", {"teff": ref["teff_g"], "logg": ref["logg"], "feh": ref["feh"],
                                  "alpha": ref["alpha"]}, None)]
    for name, labels in catalogs.items():
        cols.append((f"mock {name} (selected)", select_giants(labels), None))
    if "dr17" in catalogs:
        lab = catalogs["dr17"]
        cols.append(("mock dr17 (all stars)", {
            "teff": lab["TEFF"].to_numpy(), "logg": lab["LOGG"].to_numpy(),
            "feh": lab["FE_H"].to_numpy(), "alpha": alpha_m(lab)}, True))
    fig, axes = plt.subplots(2, len(cols), figsize=(4.2 * len(cols), 8.4), squeeze=False)
    for k, (title, d, wide) in enumerate(cols):
        ax = axes[0, k]
        tb = np.arange(2900, 7101, 40) if wide else np.arange(3000, 5601, 25)
        gb = np.arange(-0.6, 5.61, 0.05) if wide else np.arange(-0.6, 3.51, 0.03)
        ax.hist2d(d["teff"], d["logg"], bins=[tb, gb], norm=LogNorm(), cmap="viridis")
        ax.set_xlim(tb[-1], tb[0])
        ax.set_ylim(gb[-1], gb[0])
        ax.set_xlabel("Teff [K]")
        ax.set_ylabel("log g")
        ax.set_title(title)
        ax = axes[1, k]
        ax.hist2d(d["feh"], d["alpha"], bins=[np.arange(-2.6, 0.71, 0.025),
                                              np.arange(-0.2, 0.5, 0.006)],
                  norm=LogNorm(), cmap="viridis")
        ax.set_xlabel("[Fe/H]")
        ax.set_ylabel("[α/M]")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="mock stars per population")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "population.json")
    p.add_argument("--figure", type=Path, default=RESULTS / "population.png")
    p.add_argument("--reference", type=Path, default=REFERENCE,
                   help="the real labels (default ../shared/data/reference/dr17_rgb_labels.npz)")
    args = p.parse_args(argv)
    if not args.reference.exists():
        print(f"population bench skipped: the reference {args.reference} is absent "
              "(a fresh clone has no ../shared)")
        return 0
    ref = load_reference(args.reference)
    catalogs = {name: draw_labels(args.n, args.seed, population=name) for name in POPULATIONS}
    results = {name: compare(lab, ref) for name, lab in catalogs.items()}
    print(f"mock vs {ref['logg'].size}/{ref['feh'].size} real DR17 giants; mock selection "
          f"{CUT}; targets KS ≤ {KS_TARGET}, share over 3× ≤ {DENSITY_TARGET:.0%}")
    head = (f"{'population':<10} {'n sel':>7} {'KS Teff':>8} {'KS logg':>8} {'KS FeH':>7} "
            f"{'KS α/M':>7} {'>3× Kiel':>9} {'>3× αFe':>8} {'>10× Kiel':>10} {'>10× αFe':>9} "
            f"{'locus rms':>10}")
    print(head)
    for name, r in results.items():
        ks, ds = r["ks"], r["density_share"]
        print(f"{name:<10} {r['n_selected']:>7} {ks['teff']:>8.3f} {ks['logg']:>8.3f} "
              f"{ks['feh']:>7.3f} {ks['alpha_m']:>7.3f} {ds['teff_logg_over3x']:>9.1%} "
              f"{ds['feh_alpha_over3x']:>8.1%} {ds['teff_logg_over10x']:>10.1%} "
              f"{ds['feh_alpha_over10x']:>9.1%} {r['locus']['rms_K']:>8.0f} K")
    for name, r in results.items():
        print(f"{name} classes: " + ", ".join(f"{k} {v:.1%}" for k, v in r["classes"].items()))
        if "components" in r:
            print(f"{name} components: "
                  + ", ".join(f"{k} {v:.1%}" for k, v in r["components"].items()))
        w = r["locus"]["worst"]
        print(f"{name} locus: worst cell [Fe/H] {w['feh']:+.2f}, log g {w['logg']:.2f}: "
              f"ΔTeff {w['dteff_K']:+.0f} K over {r['locus']['cells']} cells")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {
        "reference": args.reference.name, "n_reference": {
            "teff_logg_alpha": int(ref["logg"].size), "teff_feh_alpha": int(ref["feh"].size),
            "joint": int(ref["joint"].shape[0])}, "selection": CUT,
        "alpha_m": "mock [α/M]: the ALPHA_M column (dr17), else mean([O/Fe], [Mg/Fe]) − "
                   "([M/H] − [Fe/H]) (classic)",
        "bins": {k: [round(float(e[1] - e[0]), 4) for e in v] for k, v in PLANES.items()},
        "targets": {"ks": KS_TARGET, "density_over3x": DENSITY_TARGET},
        "n": args.n, "seed": args.seed, "populations": results})
    figure(catalogs, ref, args.figure)
    print(f"wrote {args.out} and {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
