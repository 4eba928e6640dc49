"""The training log: a CSV row per epoch with every loss term, and its loss-curve PNG."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..store.atomic import atomic_path


class TrainingLog:
    """Append-only CSV of epochs; on resume, rows after the checkpoint's epoch are dropped
    so the log matches the state the run continues from."""

    def __init__(self, path: str | os.PathLike, columns: list[str]):
        self.path = Path(path)
        self.columns = list(columns)

    def truncate_after(self, epoch: int) -> None:
        if not self.path.is_file():
            return
        df = pd.read_csv(self.path)
        df = df[df["epoch"] <= epoch]
        with atomic_path(self.path, ".csv") as tmp:
            df.to_csv(tmp, index=False)

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)

    def append(self, row: dict) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k)) for k in self.columns})

    def read(self) -> pd.DataFrame:
        return pd.read_csv(self.path) if self.path.is_file() else pd.DataFrame(columns=self.columns)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.8g}"
    return v


def plot_loss_curves(log: pd.DataFrame, path: str | os.PathLike, terms: list[str],
                     title: str = "") -> Path | None:
    """Each train/validation term divided by its first finite value, on one log axis."""
    if log.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, term in enumerate(terms):
        for split, style in (("train", "-"), ("val", "--")):
            col = f"{split}_{term}"
            if col not in log:
                continue
            y = log[col].to_numpy(float)
            ok = np.isfinite(y) & (np.abs(y) > 0)
            if not ok.any():
                continue
            ref = abs(y[ok][0])
            ax.plot(log["epoch"], np.abs(y) / ref, style, color=colors[i % len(colors)],
                    label=f"{split} {term}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("term / first value")
    ax.set_title(title or "normalised loss terms")
    ax.legend(fontsize=7, ncol=2)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.92)
    path = Path(path)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
