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
    """Per-series loc and scale (n_series, n_cols) from the first train_rows[s] rows of each,
    for all series at once (segment reductions, no per-series loop): fit_block's rule."""
    values = np.asarray(values, dtype=np.float64)
    lengths = np.diff(starts)
    rows = np.clip(np.asarray(train_rows, dtype=np.int64), 1, lengths)
    offsets = np.concatenate([[0], np.cumsum(rows)[:-1]])
    if starts[0] == 0 and starts[-1] == len(values) and (rows == lengths).all():
        block = values  # all rows train (the predict path): no packed copy
    else:  # the training rows of every series, packed: series s owns [offsets[s], offsets[s+1])
        block = values[np.repeat(starts[:-1] - offsets, rows) + np.arange(rows.sum())]
    # max |x| without an |x| copy; the temporaries below are reused in place (same values as
    # unit = block / magnitude; ((unit - mean) ** 2) summed)
    magnitude = np.maximum(np.maximum.reduceat(block, offsets, axis=0), -np.minimum.reduceat(block, offsets, axis=0))
    magnitude = np.where(magnitude > 0, magnitude, 1.0)
    unit = np.repeat(magnitude, rows, axis=0)
    np.divide(block, unit, out=unit)
    del block
    mean = np.add.reduceat(unit, offsets, axis=0) / rows[:, None]
    dev = np.repeat(mean, rows, axis=0)
    np.subtract(unit, dev, out=dev)
    del unit
    np.square(dev, out=dev)
    spread = np.sqrt(np.add.reduceat(dev, offsets, axis=0) / rows[:, None])
    del dev
    spread = np.where(spread > 1e-12, spread, 1.0)
    return mean * magnitude, spread * magnitude


def transform(values: np.ndarray, starts: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scaled copy of values: each series with its own row of loc/scale."""
    counts = np.diff(starts)
    out = np.repeat(loc, counts, axis=0)
    np.subtract(values, out, out=out)
    np.divide(out, np.repeat(scale, counts, axis=0), out=out)
    return out
