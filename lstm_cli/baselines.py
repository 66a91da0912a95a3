"""The naive baselines every evaluation shows next to the model."""

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


BASELINES = ("naive", "seasonal_naive")
