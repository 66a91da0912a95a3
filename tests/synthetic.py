"""Synthetic data with known noise, shared by the interval tests."""

from __future__ import annotations

import numpy as np


def gaussian_seasonal_panel(directory, n_train: int, n_all: int):
    """4 series of 10 + 3 sin(2 pi t / 12 + s) + N(0, 1) noise (seed 3): the SeriesSets of their
    first n_train rows and of all n_all, for coverage checks of intervals at known noise."""
    import pandas as pd

    from lstm_cli import frame

    rng = np.random.default_rng(3)
    rows = []
    for s in range(4):
        t = np.arange(n_all)
        y = 10 + 3 * np.sin(2 * np.pi * t / 12 + s) + rng.normal(size=n_all)
        rows.append(pd.DataFrame({"id": f"s{s}", "t": t, "y": y}))
    full = pd.concat(rows)
    full.to_csv(directory / "all.csv", index=False)
    full[full.t < n_train].to_csv(directory / "train.csv", index=False)
    return tuple(frame.read_series(str(directory / name), targets=("y",), time_col="t", id_col="id")
                 for name in ("train.csv", "all.csv"))
