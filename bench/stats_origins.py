"""AutoETS and AutoARIMA at the accuracy study's forecast origins, standalone (statsforecast needs
pandas<3, which the project's venv does not have), so it runs in its own venv:

    make .venv-stats/bin/python       # python3 -m venv .venv-stats; pip install statsforecast "pandas<3"
    .venv-stats/bin/python bench/stats_origins.py [--origins 3] [--data-dir ../shared/data] [NAME ...]

(`make accuracy` runs it after the LSTM's study.)

The cuts, season lengths and MASE scale are bench/accuracy.py --origins N's: origin o forecasts
the last horizon of each series cut by o * ceil(horizon / 2) rows, from the rows before it; MASE
divides by the in-sample mean |y_t - y_{t-m}|; panels average over their series. Target only (no
features), one model per series. gasoline (season 52) takes many minutes per origin.

A data set with known-future columns (insurance's tv_adverts) also gets "arima_x": AutoARIMA with
those columns as exogenous regressors, their actual values given for the forecast steps, as
lstm's --future-features model gets them (a regression on them with ARIMA errors).
For a single series each score is followed by its origins' values (the last horizon first).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
from statsforecast.models import AutoARIMA, AutoETS

# name: (file, target, id column, horizon, season, known-future columns) as in bench/accuracy.py and
# lstm's season_length
DATASETS = {
    "a10": ("a10_monthly.csv", "cost_million_aud", None, 12, 12, ()),
    "ausbeer": ("ausbeer_quarterly.csv", "beer_megalitres", None, 8, 4, ()),
    "gasoline": ("gasoline_weekly.csv", "million_barrels_per_day", None, 13, 52, ()),
    "hyndsight": ("hyndsight_daily.csv", "pageviews", None, 14, 7, ()),
    "nile": ("nile_yearly.csv", "volume", None, 5, 1, ()),
    "us_macro": ("us_macro_quarterly.csv", "real_gdp", None, 4, 4, ()),
    "departures": ("departures_monthly_panel.csv", "departures_thousands", "series_id", 12, 12, ()),
    "prison": ("prison_quarterly_panel.csv", "prisoners", "series_id", 8, 4, ()),
    "insurance": ("insurance_monthly.csv", "quotes", None, 6, 12, ("tv_adverts",)),
}
MODELS = {"ets": AutoETS, "arima": AutoARIMA}


def fit_forecast(key: str, season: int, history: np.ndarray, horizon: int, known: np.ndarray | None) -> np.ndarray:
    """The mean forecast of model `key`; "arima_x" regresses on `known` (rows x columns, the history's
    rows then the horizon's), the other models see the target alone."""
    if key == "arima_x":
        return AutoARIMA(season_length=season).forecast(y=history, h=horizon, X=known[: len(history)],
                                                         X_future=known[len(history) :])["mean"]
    return MODELS[key](season_length=season).forecast(y=history, h=horizon)["mean"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help="data sets (default: all)")
    ap.add_argument("--origins", type=int, default=3)
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    args = ap.parse_args()
    for name, (file, target, id_col, horizon, season, known_cols) in DATASETS.items():
        if args.names and name not in args.names:
            continue
        frame = pd.read_csv(os.path.join(args.data_dir, file))
        groups = [g for _, g in frame.groupby(id_col, sort=True)] if id_col else [frame]
        series = [(g[target].to_numpy(float), g[list(known_cols)].to_numpy(float) if known_cols else None)
                  for g in groups]
        keys = list(MODELS) + (["arima_x"] if known_cols else [])
        scores = {k: [] for k in keys}
        t0 = time.perf_counter()
        for origin in range(args.origins):
            cut = origin * -(-horizon // 2)
            for y, known in series:
                y = y[: len(y) - cut]
                history, actual = y[:-horizon], y[-horizon:]
                scale = np.mean(np.abs(history[season:] - history[:-season]))
                for key in keys:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        try:
                            forecast = fit_forecast(key, season, history, horizon,
                                                    None if known is None else known[: len(y)])
                            scores[key].append(np.mean(np.abs(actual - forecast)) / scale)
                        except Exception as e:  # a failed fit is reported, not hidden
                            print(f"  {key} failed on {name}: {type(e).__name__}: {e}")
                            scores[key].append(np.nan)
        per_origin = "  ".join(f"{k} {np.nanmean(v):.3f} ({' '.join(f'{x:.3f}' for x in v)})" if len(series) == 1
                               else f"{k} {np.nanmean(v):.3f}" for k, v in scores.items())
        print(f"{name:12} {per_origin}  ({time.perf_counter() - t0:.0f} s, {args.origins} origins)", flush=True)


if __name__ == "__main__":
    main()
