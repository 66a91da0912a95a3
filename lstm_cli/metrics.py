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


def interval_scores(y, lower, upper, level: float) -> dict[str, float]:
    """Scores of a central interval of nominal `level` (a fraction, e.g. 0.8), means over the steps:
    coverage (percent inside), width = hi - lo, and the interval (Winkler) score of Gneiting &
    Raftery (2007), width + 2/alpha (lo - y)+ + 2/alpha (y - hi)+ with alpha = 1 - level: it
    rewards narrow bands and charges every miss, so a band cannot win by being wide or narrow alone."""
    y = np.asarray(y, dtype=np.float64)
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):  # no band (e.g. too little history)
        return {"coverage": float("nan"), "width": float("nan"), "winkler": float("nan")}
    alpha = 1.0 - level
    width = upper - lower
    below = np.maximum(lower - y, 0.0)
    above = np.maximum(y - upper, 0.0)
    return {"coverage": coverage(y, lower, upper), "width": float(np.mean(width)),
            "winkler": float(np.mean(width + 2.0 / alpha * (below + above)))}


def weighted_quantile_loss(y, quantile_forecast, quantiles) -> float:
    """wQL (GluonTS, AutoGluon) = mean over quantiles q of 2 sum_t pinball_q / sum_t |y_t|:
    the pinball loss in units of the actuals' total, so series of any scale compare.
    quantile_forecast is (steps, n_quantiles). nan when every actual is 0."""
    y = np.asarray(y, dtype=np.float64)
    scale = float(np.sum(np.abs(y)))
    if scale == 0.0:
        return float("nan")
    qf = np.asarray(quantile_forecast, dtype=np.float64)
    total = sum(pinball(y, qf[:, j], q) * len(y) for j, q in enumerate(quantiles))
    return float(2.0 * total / (len(quantiles) * scale))


def crps_from_quantiles(y, quantile_forecast, quantiles) -> float:
    """CRPS estimated on the quantile grid: 2 * mean over quantiles of the mean pinball loss. The
    CRPS is the integral of 2 * pinball over all q in (0, 1); a few quantiles approximate it (the
    coarser the grid, the rougher). quantile_forecast is (steps, n_quantiles)."""
    qf = np.asarray(quantile_forecast, dtype=np.float64)
    return float(2.0 * np.mean([pinball(y, qf[:, j], q) for j, q in enumerate(quantiles)]))


def interval_levels(quantiles) -> list[tuple[int, int, str]]:
    """The central intervals a quantile grid holds: (index of q, index of 1 - q, level label) for
    every q < 0.5 whose mirror 1 - q is also on the grid, e.g. 0.1 and 0.9 -> '80' (percent)."""
    qs = [float(q) for q in quantiles]
    out = []
    for i, q in enumerate(qs):
        if q >= 0.5:
            continue
        mirror = [j for j, other in enumerate(qs) if abs(other - (1.0 - q)) < 1e-9]
        if mirror:
            out.append((i, mirror[0], f"{round(100.0 * (1.0 - 2.0 * q), 6):g}"))
    return out


def seasonal_naive_lags(n_history: int, horizon: int, season: int) -> np.ndarray:
    """(horizon,) how far back the seasonal naive reaches for each step h = 1..H: m ceil(h/m)
    (the last season repeated), or h for the naive forecast it falls back to (no season, or less
    than one season of history), as baselines.seasonal_naive."""
    h = np.arange(1, horizon + 1)
    if season <= 1 or n_history < season:
        return h
    return season * -(-h // season)


def empirical_half_widths(history, horizon: int, season: int, level: float) -> np.ndarray:
    """(horizon,) the half-widths of the seasonal naive's own empirical interval: per step h, the
    `level` quantile of its in-sample h-step absolute errors |y_t - y_{t-lag_h}| over the history
    (the band a forecaster would put around the baseline from its past errors). nan for a step
    whose lag leaves no error in the history."""
    x = np.asarray(history, dtype=np.float64)
    out = np.full(horizon, np.nan)
    for step, lag in enumerate(seasonal_naive_lags(len(x), horizon, season)):
        if len(x) > lag:
            out[step] = float(np.quantile(np.abs(x[lag:] - x[:-lag]), level))
    return out
