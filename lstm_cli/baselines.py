"""The baselines every evaluation shows next to the model: naive, seasonal naive and Theta."""

from __future__ import annotations

import numpy as np


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat the last observed value."""
    return np.full(horizon, float(history[-1]))


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Repeat the last observed season: f_{T+h} = y_{T+h-m*k}, k = ceil(h/m). Naive without
    a season or with less than one season of history."""
    if season <= 1 or len(history) < season:
        return naive(history, horizon)
    last_season = np.asarray(history[-season:], dtype=np.float64)
    return last_season[np.arange(horizon) % season]


def seasonality_test(x: np.ndarray, season: int) -> bool:
    """Whether x has a season of length `season`: the lag-season autocorrelation passes the 90%
    one-sided test |r_m| > 1.645 sqrt((1 + 2 sum_{k<m} r_k^2) / n) (forecast::thetaf's rule), with
    at least two whole seasons to decompose."""
    n = len(x)
    if season <= 1 or n < 2 * season:
        return False
    d = x - x.mean()
    denom = float(d @ d)
    if denom <= 0.0:  # constant: no season
        return False
    r = np.array([float(d[: n - k] @ d[k:]) for k in range(1, season + 1)]) / denom
    return abs(r[-1]) > 1.645 * np.sqrt((1.0 + 2.0 * float(np.sum(r[:-1] ** 2))) / n)


def seasonal_indices(x: np.ndarray, season: int, multiplicative: bool) -> np.ndarray:
    """Classical decomposition's seasonal figure (season,) by position t % season: the mean ratio
    (or difference) of x to its centred moving average of order season (2 x m for an even m),
    normalised to mean 1 (or 0). R's decompose()."""
    if season % 2:
        weights = np.full(season, 1.0 / season)
    else:
        weights = np.r_[0.5, np.ones(season - 1), 0.5] / season
    half = len(weights) // 2
    trend = np.convolve(x, weights, mode="valid")  # centred on t = half .. n - 1 - half
    inner = x[half : half + len(trend)]
    detrended = inner / trend if multiplicative else inner - trend
    position = np.arange(half, half + len(trend)) % season
    figure = np.bincount(position, detrended, season) / np.bincount(position, minlength=season)
    return figure / figure.mean() if multiplicative else figure - figure.mean()


def ses_fit(x: np.ndarray) -> tuple[float, float]:
    """(alpha, last level) of simple exponential smoothing, alpha and the initial level minimising
    the in-sample one-step squared error (as ets(y, "ANN") does): the error is linear in the initial
    level l0, e_t = a_t - (1 - alpha)^t l0, so for each alpha of a grid over (0, 1) (then a finer one
    around its best) the best l0 is sum(a c) / sum(c^2) in closed form."""

    def run(alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        level = np.zeros(len(alphas))  # the smoothed level started at l0 = 0
        decay = np.ones(len(alphas))  # (1 - alpha)^t: l0's weight in the level
        aa, ac, cc = np.zeros(len(alphas)), np.zeros(len(alphas)), np.zeros(len(alphas))
        for value in x:
            a = value - level
            aa += a * a
            ac += a * decay
            cc += decay * decay
            level = level + alphas * a
            decay = decay * (1.0 - alphas)
        l0 = ac / cc
        return aa - ac * l0, level + decay * l0

    coarse = np.linspace(0.005, 0.995, 199)
    sse, _ = run(coarse)
    best = coarse[int(np.argmin(sse))]
    fine = np.linspace(max(best - 0.005, 0.001), min(best + 0.005, 0.999), 21)
    sse, levels = run(fine)
    i = int(np.argmin(sse))
    return float(fine[i]), float(levels[i])


def theta(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The classic Theta method (Assimakopoulos & Nikolopoulos 2000), as Hyndman & Billah (2003)
    showed it to be: simple exponential smoothing with a drift of half the slope of the linear
    trend, on seasonally adjusted data (forecast::thetaf and statsforecast's form). A forecaster's
    first strong baseline: it follows a trend, which seasonal naive cannot. Naive below 3 points."""
    x = np.asarray(history, dtype=np.float64)
    n = len(x)
    if n < 3 or not np.isfinite(x).all() or np.ptp(x) == 0:  # a constant stays exactly that constant
        return naive(history, horizon)
    magnitude = float(np.max(np.abs(x)))
    seasonal = seasonality_test(x, season)
    if seasonal:
        multiplicative = bool(np.all(x > 0))
        figure = seasonal_indices(x, season, multiplicative)
        index = figure[np.arange(n) % season]
        x = x / index if multiplicative else x - index
    alpha, level = ses_fit(x)
    steps = np.arange(horizon, dtype=np.float64)
    slope = float(np.polyfit(np.arange(n, dtype=np.float64), x, 1)[0])
    forecast = level + slope / 2.0 * (steps + (1.0 - (1.0 - alpha) ** n) / alpha)
    if seasonal:
        ahead = figure[(n + np.arange(horizon)) % season]
        forecast = forecast * ahead if multiplicative else forecast + ahead
    # rounding noise around zero (1e-16 where the pattern is exactly 0) is 0: sMAPE counts a 1e-16
    # forecast of an actual 0 as a 200% error
    return np.where(np.abs(forecast) < 1e-12 * magnitude, 0.0, forecast)


BASELINES = ("naive", "seasonal_naive", "theta")
