"""Accuracy study: train on each real series minus its last horizon, forecast that horizon,
and score it (MASE) next to naive and seasonal naive. Reproduce with:

    .venv/bin/python bench/accuracy.py [--data-dir ../shared/data] [--only NAME] [--set key=value ...]

--set passes training options (e.g. --set scaling=series --set hidden=64) to compare defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lstm_cli.evaluate import evaluate_from_csv  # noqa: E402
from lstm_cli.pipeline import TrainRequest, train_from_csv  # noqa: E402
from lstm_cli.train import TrainConfig  # noqa: E402

# name: (file, target, id_col, features, horizon)
DATASETS = {
    "a10": ("a10_monthly.csv", "cost_million_aud", None, (), 12),
    "ausbeer": ("ausbeer_quarterly.csv", "beer_megalitres", None, (), 8),
    "gasoline": ("gasoline_weekly.csv", "million_barrels_per_day", None, (), 13),
    "hyndsight": ("hyndsight_daily.csv", "pageviews", None, (), 14),
    "nile": ("nile_yearly.csv", "volume", None, (), 5),
    "bank_calls": ("bank_calls_5min.csv", "calls", None, (), 169),
    "us_macro": ("us_macro_quarterly.csv", "real_gdp", None, ("real_investment", "real_government"), 4),
    "departures": ("departures_monthly_panel.csv", "departures_thousands", "series_id", (), 12),
    "prison": ("prison_quarterly_panel.csv", "prisoners", "series_id", (), 8),
}


def cut_tail(path: str, id_col: str | None, horizon: int, out: str) -> None:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if id_col:
        df = df[df.groupby(id_col, sort=False).cumcount(ascending=False) >= horizon]
    else:
        df = df.iloc[:-horizon]
    df.to_csv(out, index=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--only", action="append")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    print(f"{'data':12} {'lstm':>8} {'naive':>8} {'snaive':>8} {'seconds':>8}   options {overrides}")
    for name, (file, target, id_col, features, horizon) in DATASETS.items():
        if args.only and name not in args.only:
            continue
        path = os.path.join(args.data_dir, file)
        with tempfile.TemporaryDirectory() as tmp:
            train_csv = os.path.join(tmp, "train.csv")
            cut_tail(path, id_col, horizon, train_csv)
            scores = []
            t0 = time.perf_counter()
            for seed in range(args.seeds):
                req = TrainRequest(data=train_csv, out=os.path.join(tmp, "m.lstm"), targets=(target,),
                                   horizon=horizon, features=features, id_col=id_col)
                cfg = {k: type(getattr(req.train, k))(v) for k, v in overrides.items() if hasattr(req.train, k)}
                top = {k: (int(v) if k in ("hidden", "layers", "lookback") else
                           float(v) if k in ("val_frac", "forget_bias") else v)
                       for k, v in overrides.items() if not hasattr(req.train, k)}
                req = replace(req, train=replace(req.train, seed=seed, **cfg), **top)
                train_from_csv(req)
                ev = evaluate_from_csv(req.out, path)
                scores.append(ev.overall())
            seconds = (time.perf_counter() - t0) / args.seeds
        mase = {m: float(np.mean([s[m]["mase"] for s in scores])) for m in ("lstm", "naive", "seasonal_naive")}
        print(f"{name:12} {mase['lstm']:8.3f} {mase['naive']:8.3f} {mase['seasonal_naive']:8.3f} {seconds:8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
