"""Forecast accuracy metrics: pure functions of arrays, each with its formula.

y is the actual, f the forecast, both 1-D over the forecast steps; `insample` is the history the
forecast was made from (for MASE's scale). NaN means "undefined" (e.g. MAPE with a zero actual).
"""

from __future__ import annotations

import numpy as np


def mae(y, f) -> float:
    """MAE = mean |y - f|"""
    return float(np.mean(np.abs(np.asarray(y) - f)))


def rmse(y, f) -> float:
    """RMSE = sqrt(mean (y - f)^2)"""
    return float(np.sqrt(np.mean((np.asarray(y) - f) ** 2)))


def mape(y, f) -> float:
    """MAPE = 100 * mean |y - f| / |y|; undefined (nan) when any actual is 0."""
    y = np.asarray(y, dtype=np.float64)
    if np.any(y == 0):
        return float("nan")
    return float(100.0 * np.mean(np.abs(y - f) / np.abs(y)))


def smape(y, f) -> float:
    """sMAPE = 100 * mean 2|y - f| / (|y| + |f|), a term with y = f = 0 counting as 0."""
    y = np.asarray(y, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    denom = np.abs(y) + np.abs(f)
    terms = np.where(denom > 0, 2.0 * np.abs(y - f) / np.where(denom > 0, denom, 1.0), 0.0)
    return float(100.0 * np.mean(terms))


def seasonal_naive_scale(insample, season: int) -> float:
    """MASE's scale: mean |y_t - y_{t-m}| over the history (m = season, 1 without season);
    falls back to m = 1 when the history is shorter than two seasons. nan when it is < 2 rows."""
    x = np.asarray(insample, dtype=np.float64)
    m = season if season > 1 and len(x) > season else 1
    if len(x) <= m:
        return float("nan")
    return float(np.mean(np.abs(x[m:] - x[:-m])))


def mase(y, f, insample, season: int) -> float:
    """MASE = MAE / mean |y_t - y_{t-m}| over the history; < 1 beats the in-sample seasonal naive.
    nan when the history is constant (scale 0)."""
    scale = seasonal_naive_scale(insample, season)
    if not np.isfinite(scale) or scale == 0.0:
        return float("nan")
    return mae(y, f) / scale


def pinball(y, f_q, q: float) -> float:
    """Quantile (pinball) loss = mean max(q (y - f), (q - 1)(y - f))."""
    e = np.asarray(y, dtype=np.float64) - f_q
    return float(np.mean(np.maximum(q * e, (q - 1.0) * e)))


def coverage(y, lower, upper) -> float:
    """Share of actuals inside [lower, upper], in percent."""
    y = np.asarray(y, dtype=np.float64)
    return float(100.0 * np.mean((y >= lower) & (y <= upper)))


POINT_METRICS = {"mae": mae, "rmse": rmse, "mape": mape, "smape": smape}


def point_scores(y, f, insample, season: int) -> dict[str, float]:
    scores = {name: fn(y, f) for name, fn in POINT_METRICS.items()}
    scores["mase"] = mase(y, f, insample, season)
    return scores
