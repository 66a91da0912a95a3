"""AutoETS and AutoARIMA at the accuracy study's forecast origins, standalone (statsforecast needs
pandas<3, which the project's venv does not have), so it runs in its own venv:

    make .venv-stats/bin/python       # python3 -m venv .venv-stats; pip install statsforecast "pandas<3"
    .venv-stats/bin/python bench/stats_origins.py [--origins 3] [--data-dir ../shared/data] [NAME ...]

(`make accuracy` runs it after the LSTM's study.)

The cuts, season lengths and MASE scale are bench/accuracy.py --origins N's: origin o forecasts
the last horizon of each series cut by o * ceil(horizon / 2) rows, from the rows before it; MASE
divides by the in-sample mean |y_t - y_{t-m}|; panels average over their series. Target only (no
features), one model per series. gasoline (season 52) takes many minutes per origin.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
from statsforecast.models import AutoARIMA, AutoETS

# name: (file, target, id column, horizon, season) as in bench/accuracy.py and lstm's season_length
DATASETS = {
    "a10": ("a10_monthly.csv", "cost_million_aud", None, 12, 12),
    "ausbeer": ("ausbeer_quarterly.csv", "beer_megalitres", None, 8, 4),
    "gasoline": ("gasoline_weekly.csv", "million_barrels_per_day", None, 13, 52),
    "hyndsight": ("hyndsight_daily.csv", "pageviews", None, 14, 7),
    "nile": ("nile_yearly.csv", "volume", None, 5, 1),
    "us_macro": ("us_macro_quarterly.csv", "real_gdp", None, 4, 4),
    "departures": ("departures_monthly_panel.csv", "departures_thousands", "series_id", 12, 12),
    "prison": ("prison_quarterly_panel.csv", "prisoners", "series_id", 8, 4),
}
MODELS = {"ets": AutoETS, "arima": AutoARIMA}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help="data sets (default: all)")
    ap.add_argument("--origins", type=int, default=3)
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    args = ap.parse_args()
    for name, (file, target, id_col, horizon, season) in DATASETS.items():
        if args.names and name not in args.names:
            continue
        frame = pd.read_csv(os.path.join(args.data_dir, file))
        series = ([g[target].to_numpy(float) for _, g in frame.groupby(id_col, sort=True)] if id_col
                  else [frame[target].to_numpy(float)])
        scores = {k: [] for k in MODELS}
        t0 = time.perf_counter()
        for origin in range(args.origins):
            cut = origin * -(-horizon // 2)
            for y in series:
                y = y[: len(y) - cut]
                history, actual = y[:-horizon], y[-horizon:]
                scale = np.mean(np.abs(history[season:] - history[:-season]))
                for key, model in MODELS.items():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        try:
                            forecast = model(season_length=season).forecast(y=history, h=horizon)["mean"]
                            scores[key].append(np.mean(np.abs(actual - forecast)) / scale)
                        except Exception as e:  # a failed fit is reported, not hidden
                            print(f"  {key} failed on {name}: {type(e).__name__}: {e}")
                            scores[key].append(np.nan)
        print(f"{name:12} ets {np.nanmean(scores['ets']):.3f}  arima {np.nanmean(scores['arima']):.3f}  "
              f"({time.perf_counter() - t0:.0f} s, {args.origins} origins)", flush=True)


if __name__ == "__main__":
    main()
