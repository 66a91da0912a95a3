"""Per-series standard scaling, fitted on training rows only and stored in the model file.

Each series gets its own location and scale per column, so one global model serves series of
very different size. The fit is overflow-safe: values are divided by their largest magnitude
before squaring, so 1e300 and 1e-300 series scale to O(1) numbers instead of inf or 0.
"""

from __future__ import annotations

import numpy as np


def fit_block(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """loc, scale (n_cols,) of a (n_rows, n_cols) block. A constant column gets its magnitude as
    scale (or 1 for zeros), so it scales to 0 instead of dividing by zero."""
    block = np.asarray(block, dtype=np.float64)
    magnitude = np.max(np.abs(block), axis=0)
    magnitude = np.where(magnitude > 0, magnitude, 1.0)
    unit = block / magnitude
    loc = unit.mean(axis=0)
    spread = unit.std(axis=0)
    spread = np.where(spread > 1e-12, spread, 1.0)
    return loc * magnitude, spread * magnitude


def fit(values: np.ndarray, starts: np.ndarray, train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-series loc and scale (n_series, n_cols) from the first train_rows[s] rows of each."""
    n_series = len(starts) - 1
    loc = np.empty((n_series, values.shape[1]))
    scale = np.empty((n_series, values.shape[1]))
    for s in range(n_series):
        lo = starts[s]
        loc[s], scale[s] = fit_block(values[lo : lo + max(int(train_rows[s]), 1)])
    return loc, scale


def transform(values: np.ndarray, starts: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scaled copy of values: each series with its own row of loc/scale."""
    counts = np.diff(starts)
    return (values - np.repeat(loc, counts, axis=0)) / np.repeat(scale, counts, axis=0)
