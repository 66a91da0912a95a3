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
                 val_frac: float = 0.0, scaling: str = "series", season: int = 1,
                 val_horizon: int | None = None, n_past: int | None = None) -> dict[str, np.ndarray]:
    """x_train (N, lookback, C), y_train (N, horizon*n_targets), x_val, y_val, and for each
    window the index of its series (series_train, series_val). x and y are what the network
    sees and learns: for the "level" and "seasonal" modes, inputs relative to the window's last
    row and targets relative to its anchor (see split_anchor). val_horizon (default: horizon) is
    the horizon of the validation rows rule (val_rows_for): a recursive model trains on one-step
    windows (horizon 1) but holds out the same rows as a direct model of the user's horizon.

    n_past (a model with inputs known in advance, see with_future_rows): the columns are
    [n_past past columns (targets first), known-future columns, the horizon flag], and x is
    (N, lookback + horizon, C): the window, then its horizon rows with only the known inputs."""
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
        if scaling != "series":
            x, base = split_anchor(x, horizon, n_targets, scaling, season, n_past=n_past)
            y = y - base
        if n_past is not None:
            x = with_future_rows(x, win[:, lookback:, :], n_past)
        y = y.reshape(n_win, horizon * n_targets)
        ends = np.arange(n_win) + width  # one past the last target row
        is_val = ends > n - val_rows_for(n, val_frac, val_horizon or horizon)
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
            out[key] = np.empty((0, lookback + (horizon if n_past is not None else 0), C))
        elif key.startswith("y"):
            out[key] = np.empty((0, horizon * n_targets))
        else:
            out[key] = np.empty(0, dtype=np.int64)
    return out


SCALINGS = ("series", "level", "seasonal")  # what a model file records; "auto" resolves to one


def anchor_rows(lookback: int, horizon: int, scaling: str, season: int) -> np.ndarray | None:
    """For each forecast step, the window row whose targets the network's output is added to:
    the last row ("level": forecast changes from the present), the same point one season
    earlier ("seasonal": forecast the departure from seasonal naive), none ("series")."""
    if scaling == "series":
        return None
    if scaling == "level" or season <= 1:
        return np.full(horizon, lookback - 1, dtype=np.int64)
    if season > lookback:
        raise ValueError(f"seasonal anchor needs lookback >= season, got {lookback} < {season}")
    return lookback - season + np.arange(horizon, dtype=np.int64) % season


def has_seasonal_naive(lookback: int, season: int) -> bool:
    """Whether a window holds a whole season, so seasonal naive can be taken from it."""
    return 1 < season <= lookback


def blend_summary(blend: float, lookback: int, season: int) -> str | None:
    """What train and info print of a model's --blend, e.g. '0.5 x network + 0.5 x seasonal
    naive' (naive when the window holds no season); None for an unblended model."""
    if not blend:
        return None
    partner = "seasonal naive" if has_seasonal_naive(lookback, season) else "naive"
    return f"{1 - blend:.3g} x network + {blend:.3g} x {partner}"


def seasonal_naive_rows(lookback: int, horizon: int, season: int) -> np.ndarray:
    """For each forecast step, the window row seasonal naive forecasts it with: the same point one
    season earlier, or the last row (naive) when there is no season or it does not fit the window."""
    if has_seasonal_naive(lookback, season):
        return anchor_rows(lookback, horizon, "seasonal", season)
    return anchor_rows(lookback, horizon, "level", season)


def with_future_rows(inputs: np.ndarray, ahead: np.ndarray, n_past: int) -> np.ndarray:
    """The network's input for a model with inputs known in advance: the window's rows (N, lookback,
    C), then one row per forecast step (N, steps, C) that holds only what is known of that step.

    The LSTM reads the forecast steps' known values (future features, calendar, holidays) after
    the history, so they reach every step's forecast through its final state: the same nn.LSTM
    and head as every other model (no new kernel, and torch and ONNX run it as it is). In those
    rows the n_past past columns (targets and past-only features) are 0, since they are unknown,
    and the last column, the horizon flag, is 1; it is 0 in every window row (the caller's values
    hold it as a column of zeros), so a zero the network reads is never mistaken for a value."""
    rows = np.array(ahead, dtype=inputs.dtype)  # a copy: its past columns are cleared
    rows[..., :n_past] = 0.0
    rows[..., -1] = 1.0
    return np.concatenate([inputs, rows], axis=1)


def split_anchor(x: np.ndarray, horizon: int, n_targets: int, scaling: str, season: int = 1,
                 blend: float = 0.0, n_past: int | None = None):
    """(network inputs, anchor) for scaled windows x (N, lookback, C). Inputs are x relative to
    its last row, so the network sees shapes, not absolute levels (a trend that leaves the
    training range or a level shift does not saturate it); anchor (N, horizon, n_targets) is what
    its outputs are added to (see anchor_rows; zeros for "series").

    blend w > 0 (a trained model's DataSpec.blend) mixes seasonal naive into the anchor:
    (1 - w) * anchor + w * seasonal naive. The model's head is already scaled by 1 - w, so the
    forecast is (1 - w) * network forecast + w * seasonal naive (see pipeline.scale_head).

    n_past: only the first n_past columns (targets and past features) are made relative to the last
    row; known-future inputs keep their values (a promotion flag or the day of the week means
    something by itself, not as a change from the origin's)."""
    rows = anchor_rows(x.shape[1], horizon, scaling, season)
    if rows is None:
        inputs, base = x, np.zeros((x.shape[0], horizon, n_targets), dtype=x.dtype)
    elif n_past is None:
        inputs, base = x - x[:, -1:, :], x[:, rows, :n_targets]
    else:
        inputs, base = x.copy(), x[:, rows, :n_targets]
        inputs[..., :n_past] -= x[:, -1:, :n_past]
    if blend:
        base = base * (1.0 - blend) + x[:, seasonal_naive_rows(x.shape[1], horizon, season), :n_targets] * blend
    return inputs, base


def last_windows(values: np.ndarray, starts: np.ndarray, lookback: int) -> np.ndarray:
    """The final `lookback` rows of every series (n_series, lookback, C): what predict feeds."""
    ends = starts[1:]
    index = ends[:, None] - lookback + np.arange(lookback)[None, :]
    return values[index]


def anchor_error(values: np.ndarray, starts: np.ndarray, train_rows: np.ndarray, n_targets: int,
                 horizon: int, scaling: str, season: int) -> float:
    """Mean absolute difference between each target value and its anchor (see anchor_rows), over
    every pair inside the first train_rows[s] rows of every series: the error of a network that
    outputs 0, i.e. of naive ("level") or seasonal naive ("seasonal") on the training part."""
    if scaling == "seasonal" and season > 1:
        lags = season * (1 + np.arange(horizon) // season)
    else:
        lags = np.arange(1, horizon + 1)
    series = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    position = np.arange(len(series)) - starts[series]
    usable = position < np.asarray(train_rows)[series]
    total, count = 0.0, 0
    for lag in np.unique(lags):
        if lag >= len(series):
            continue
        pair = usable[lag:] & (series[lag:] == series[:-lag])
        diff = np.abs(values[lag:, :n_targets] - values[:-lag, :n_targets])[pair]
        weight = int(np.count_nonzero(lags == lag))
        total += weight * float(diff.sum())
        count += weight * diff.size
    return total / count if count else float("inf")


def choose_scaling(values: np.ndarray, starts: np.ndarray, train_rows: np.ndarray, n_targets: int,
                   horizon: int, season: int, lookback: int) -> tuple[str, dict[str, float]]:
    """The anchor "auto" scaling trains with: "seasonal" when the series have a season that fits
    the lookback and seasonal naive is closer to the targets than naive on the training rows,
    else "level". Returns the choice and both errors (scaled units)."""
    errors = {"level": anchor_error(values, starts, train_rows, n_targets, horizon, "level", season)}
    if 1 < season <= lookback:
        errors["seasonal"] = anchor_error(values, starts, train_rows, n_targets, horizon, "seasonal", season)
    return min(errors, key=errors.get), errors
