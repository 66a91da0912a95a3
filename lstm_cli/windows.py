"""Sliding windows over many series at once, and the time-ordered train/validation split.

A window is `lookback` rows of every input column followed by the next `horizon` rows of the
targets, flattened step-major: y = [step1 target1, step1 target2, ..., stepH targetK].
Validation is the last part of each series in time, never random: the last `val_rows` rows of a
series are targets of validation windows only, so early stopping never sees what it trains on.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def val_rows_for(length: int, val_frac: float, horizon: int) -> int:
    if val_frac <= 0.0:
        return 0
    return max(horizon, int(round(val_frac * length)))


def count_windows(length: int, lookback: int, horizon: int) -> int:
    return max(0, length - lookback - horizon + 1)


def make_windows(values: np.ndarray, starts: np.ndarray, n_targets: int, lookback: int, horizon: int,
                 val_frac: float = 0.0, level: bool = False) -> dict[str, np.ndarray]:
    """x_train (N, lookback, C), y_train (N, horizon*n_targets), x_val, y_val, and for each
    window the index of its series (series_train, series_val). With level, every window is
    taken relative to its own last input row (see remove_level)."""
    parts: dict[str, list] = {k: [] for k in ("x_train", "y_train", "s_train", "x_val", "y_val", "s_val")}
    width = lookback + horizon
    for s in range(len(starts) - 1):
        block = values[starts[s] : starts[s + 1]]
        n = len(block)
        n_win = count_windows(n, lookback, horizon)
        if n_win == 0:
            continue
        win = sliding_window_view(block, width, axis=0).transpose(0, 2, 1)  # (n_win, width, C)
        x = win[:, :lookback, :]
        y = win[:, lookback:, :n_targets]
        if level:
            x, y = remove_level(x, y)
        y = y.reshape(n_win, horizon * n_targets)
        ends = np.arange(n_win) + width  # one past the last target row
        is_val = ends > n - val_rows_for(n, val_frac, horizon)
        if is_val.all() and n_win > 1:  # a short series still trains on something
            is_val[0] = False
        for tag, mask in (("train", ~is_val), ("val", is_val)):
            parts["x_" + tag].append(x[mask])
            parts["y_" + tag].append(y[mask])
            parts["s_" + tag].append(np.full(int(mask.sum()), s, dtype=np.int64))
    C = values.shape[1]
    out = {}
    for key, chunks in parts.items():
        if chunks:
            out[key] = np.concatenate(chunks, axis=0)
        elif key.startswith("x"):
            out[key] = np.empty((0, lookback, C))
        elif key.startswith("y"):
            out[key] = np.empty((0, horizon * n_targets))
        else:
            out[key] = np.empty(0, dtype=np.int64)
    return out


def remove_level(x: np.ndarray, y: np.ndarray | None = None):
    """Windows relative to their last input row: x - x[-1] (and the target steps y minus the
    last target values). The network then learns changes from the present, not absolute levels,
    so a trend that leaves the training range, or a level shift, does not saturate it."""
    last = x[:, -1:, :]
    x = x - last
    if y is None:
        return x
    return x, y - last[:, :, : y.shape[2]]


def last_windows(values: np.ndarray, starts: np.ndarray, lookback: int) -> np.ndarray:
    """The final `lookback` rows of every series (n_series, lookback, C): what predict feeds."""
    ends = starts[1:]
    index = ends[:, None] - lookback + np.arange(lookback)[None, :]
    return values[index]
