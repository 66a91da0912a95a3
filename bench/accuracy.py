"""Accuracy study: train on each real series minus its last horizon, forecast that horizon,
and score it (MASE) next to naive, seasonal naive, AutoETS and AutoARIMA. Reproduce with:

    .venv/bin/pip install statsforecast   # development only, for the AutoETS/AutoARIMA columns
    PYTHONPATH=. .venv/bin/python bench/accuracy.py --seeds 3 [--skip-slow] [--data-dir ../shared/data]

Options: --only NAME (repeatable); --set key=value passes training options (e.g. --set scaling=series
--set hidden=64) to compare defaults; --seeds N trains N seeds (0..N-1) and reports the mean and median
MASE over them; --skip-slow leaves out bank_calls (5-minute data, minutes per seed); --no-stats leaves out
the statsforecast columns (they do not depend on --set or --seeds, so tuning runs skip them);
--log FILE appends one JSON line per (data set, seed), with its train seconds; --known-as future|past|none
uses the data sets' known-future columns (insurance's tv_adverts) as --future-features (default),
--features or not at all. --set takes tuple fields as comma lists (--set future_features=a,b) and
--set calendar=auto|none|month,... as lstm train's --calendar. --intervals trains with the default conformal
intervals and prints their coverage and interval score next to seasonal naive's empirical bands (issue 18).

MASE is scaled by the in-sample seasonal-naive error with the season the evaluation uses
(lstm_cli.pipeline.season_length: 12 monthly, 4 quarterly, 52 weekly, 7 daily, 169 for bank_calls,
1 yearly); on a panel it is the mean over its series. AutoETS and AutoARIMA are fitted per series on the
same training part (the target alone: no features) with that season length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lstm_cli import baselines, frame, metrics  # noqa: E402
from lstm_cli.evaluate import evaluate_from_csv  # noqa: E402
from lstm_cli.pipeline import TrainRequest, season_length, train_from_csv  # noqa: E402
from lstm_cli.train import TrainConfig  # noqa: E402

# name: (file, target, id_col, features, horizon, future features). insurance: 40 months; horizon 6 (half
# the planning year) leaves the earliest of 3 origins 28 rows, more than two years, so that `--calendar auto`
# keeps `month` at every origin and seasonal naive's MASE scale has 16 differences; 8 would leave 24 rows
# (23 months: no month), 12 too few rows to train.
DATASETS = {
    "a10": ("a10_monthly.csv", "cost_million_aud", None, (), 12, ()),
    "ausbeer": ("ausbeer_quarterly.csv", "beer_megalitres", None, (), 8, ()),
    "gasoline": ("gasoline_weekly.csv", "million_barrels_per_day", None, (), 13, ()),
    "hyndsight": ("hyndsight_daily.csv", "pageviews", None, (), 14, ()),
    "nile": ("nile_yearly.csv", "volume", None, (), 5, ()),
    "bank_calls": ("bank_calls_5min.csv", "calls", None, (), 169, ()),
    "us_macro": ("us_macro_quarterly.csv", "real_gdp", None, ("real_investment", "real_government"), 4, ()),
    "departures": ("departures_monthly_panel.csv", "departures_thousands", "series_id", (), 12, ()),
    "prison": ("prison_quarterly_panel.csv", "prisoners", "series_id", (), 8, ()),
    "insurance": ("insurance_monthly.csv", "quotes", None, (), 6, ("tv_adverts",)),
}
SLOW = ("bank_calls",)


def cut_tail(path: str, id_col: str | None, horizon: int, out: str) -> None:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if id_col:
        df = df[df.groupby(id_col, sort=False).cumcount(ascending=False) >= horizon]
    else:
        df = df.iloc[: len(df) - horizon]  # not [:-horizon]: a cut of 0 keeps every row
    df.to_csv(out, index=False)


class _Baseline:
    def __init__(self, fn):
        self.fn = fn

    def forecast(self, y, h):
        return {"mean": self.fn(y, h)}


def stats_scores(path: str, target: str, id_col: str | None, horizon: int) -> dict[str, tuple[float, float]]:
    """{'ets'|'arima'|'naive'|'seasonal_naive': (mean MASE over series, seconds)}: statsforecast's AutoETS and AutoARIMA fitted
    per series on all but the last `horizon` rows of the target, with the evaluation's season length."""
    from statsforecast.models import AutoARIMA, AutoETS

    series = frame.read_series(path, targets=(target,), id_col=id_col)
    season = season_length(series.freq, series.step, series.time_kind, series.times[: series.starts[1]])
    out = {}
    for name, make in (("naive", lambda: _Baseline(baselines.naive)),
                       ("seasonal_naive", lambda: _Baseline(lambda hist, h: baselines.seasonal_naive(hist, h, season))),
                       ("ets", lambda: AutoETS(season_length=season)),
                       ("arima", lambda: AutoARIMA(season_length=season))):
        t0 = time.perf_counter()
        scores = []
        for s in range(len(series.ids)):
            y = series.values[series.starts[s] : series.starts[s + 1], 0].astype(np.float64)
            history, actual = y[:-horizon], y[-horizon:]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    f = make().forecast(y=history, h=horizon)["mean"]
                scores.append(metrics.mase(actual, f, history, season))
            except Exception as e:  # a failed fit is reported as nan, not hidden
                print(f"  {name} failed on {series.ids[s]!r}: {type(e).__name__}: {e}", file=sys.stderr)
                scores.append(float("nan"))
        out[name] = (float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan"),
                     time.perf_counter() - t0)
    return out


def ensemble_mase(model_paths: list[str], path: str) -> float:
    """MASE (mean over series and targets) of the average of the models' forecasts of the last horizon:
    what ensembling over seeds would give (measured here only; the tool does not do it)."""
    from lstm_cli.evaluate import _truncate, known_after_cuts
    from lstm_cli.pipeline import load_model, read_like_model

    forecasts = []
    for mp in model_paths:
        model, _ = load_model(mp)
        spec = model.spec
        series = read_like_model(path, spec)
        H = spec.horizon
        lengths = np.diff(series.starts)
        past = _truncate(series, lengths - H)
        f, _ = model.forecast(past.ids, past.values, past.starts, H, times=past.times,
                              future=known_after_cuts(series, lengths - H, spec, H))  # (S, H, K, nq)
        forecasts.append(f[..., len(spec.quantiles) // 2])
    mean = np.mean(forecasts, axis=0)
    season = season_length(series.freq or spec.freq, series.step, series.time_kind, series.times[: series.starts[1]])
    scores = []
    for s in range(len(series.ids)):
        lo, n = series.starts[s], lengths[s]
        for k in range(len(spec.targets)):
            y = series.values[lo : lo + n, k]
            scores.append(metrics.mase(y[-H:], mean[s, :, k], y[:-H], season))
    return float(np.nanmean(scores))


def _number_or_text(v: str):
    """'3' -> 3, '0.5' -> 0.5, 'gru' -> 'gru': TrainRequest's numeric fields (hidden, threads, blend,
    val_frac, ...) must not receive strings."""
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def _field_value(default, text: str):
    """--set text as the TrainRequest field wants it: a comma list for the tuple fields (targets,
    features, future_features, quantiles: 'a,b' -> ('a', 'b'), '' -> ()), else _number_or_text.
    calendar stays text ('auto', 'none', 'month,hour'): train resolves it as it does --calendar."""
    if isinstance(default, tuple):
        return tuple(_number_or_text(item.strip()) for item in text.split(",") if item.strip())
    return _number_or_text(text)


def parse_overrides(pairs: list[str], req: TrainRequest) -> TrainRequest:
    overrides = dict(kv.split("=", 1) for kv in pairs)
    cfg = {k: type(getattr(req.train, k))(v) for k, v in overrides.items() if hasattr(req.train, k)}
    top = {k: _field_value(getattr(req, k), v) for k, v in overrides.items() if not hasattr(req.train, k)}
    return replace(req, train=replace(req.train, **cfg), **top)


def unknown_overrides(pairs: list[str]) -> list[str]:
    """The --set keys that are neither a TrainRequest nor a TrainConfig field (or have no '=')."""
    fields = set(TrainRequest.__dataclass_fields__) | set(TrainConfig.__dataclass_fields__)
    return [kv for kv in pairs if "=" not in kv or kv.split("=", 1)[0] not in fields]


def known_columns(features: tuple[str, ...], future_features: tuple[str, ...],
                  known_as: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(features, future_features) of a data set with its known-future columns used as --known-as
    says: 'future' (--future-features), 'past' (--features: seen only up to the forecast origin)
    or 'none' (left out), to measure what knowing them in advance is worth."""
    if known_as == "past":
        return features + future_features, ()
    if known_as == "none":
        return features, ()
    return features, future_features


def use_lookback_rule(expr: str) -> None:
    """Replace pipeline.default_lookback for this process: `want` from expr, the same floor and cut."""
    from lstm_cli import pipeline

    def rule(horizon: int, season: int, shortest: int, val_rows: int) -> int:
        want = int(eval(expr, {"max": max, "min": min}, {"h": horizon, "m": season if season > 1 else 1}))
        floor = min(want, max(horizon, 4))
        room = shortest - val_rows - horizon - pipeline.MIN_TRAIN_WINDOWS + 1
        return max(floor, min(want, room))

    pipeline.default_lookback = rule


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--only", action="append")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--origins", type=int, default=1,
                    help="forecast origins per data set: the last horizon, then origins-1 earlier ones "
                         "ceil(horizon/2) steps apart, each trained on the rows before it; scores are "
                         "averaged over origins (baselines too; AutoETS/AutoARIMA at the last origin only)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed+seeds-1")
    ap.add_argument("--skip-slow", action="store_true", help=f"leave out {', '.join(SLOW)}")
    ap.add_argument("--no-stats", action="store_true", help="leave out the AutoETS/AutoARIMA columns")
    ap.add_argument("--no-lstm", action="store_true", help="only the baselines and the statsforecast columns")
    ap.add_argument("--ensemble", action="store_true",
                    help="also score the average of the --seeds models' forecasts (column 'ens')")
    ap.add_argument("--log", help="append one JSON line per (data set, seed) to this file")
    ap.add_argument("--known-as", choices=("future", "past", "none"), default="future",
                    help="how the data sets' known-future columns (insurance's tv_adverts) are used: "
                         "future = --future-features (default), past = --features, none = left out")
    ap.add_argument("--intervals", action="store_true",
                    help="train with lstm train's default conformal intervals (80,95) and report, per data set, "
                         "the empirical coverage, mean width and interval (Winkler) score of the model's bands "
                         "and of seasonal naive's empirical bands, averaged over seeds and origins")
    ap.add_argument("--lookback-rule", help="try another default lookback rule: a Python expression of h "
                    "(horizon) and m (season, 1 without), e.g. 'max(2*h, 3*m, 8)'; cut by data as the default is")
    args = ap.parse_args()
    if unknown_overrides(args.set):
        ap.error(f"--set takes key=value with a TrainRequest or TrainConfig field as key: {unknown_overrides(args.set)}")
    if args.lookback_rule:
        use_lookback_rule(args.lookback_rule)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    print(f"{'data':12} {'lstm':>7} {'median':>7} {'naive':>7} {'snaive':>7} {'ets':>7} {'arima':>7} "
          f"{'lstm s':>7} {'stats s':>7}   seeds {args.seeds}, origins {args.origins}, options {overrides}"
          + ("" if args.known_as == "future" else f", known-future columns as {args.known_as}")
          + (f", lookback rule {args.lookback_rule}" if args.lookback_rule else ""), flush=True)
    wins = {"seasonal_naive": 0, "ets": 0, "arima": 0}
    interval_rows = []
    ratios, n_data = [], 0
    for name, (file, target, id_col, features, horizon, future_features) in DATASETS.items():
        if args.only and name not in args.only:
            continue
        if args.skip_slow and name in SLOW and not args.only:
            continue
        path = os.path.join(args.data_dir, file)
        features, future_features = known_columns(features, future_features, args.known_as)
        probe = parse_overrides(args.set, TrainRequest(data=path, out="", targets=(target,), horizon=horizon,
                                                       features=features, future_features=future_features))
        if probe.features and probe.strategy == "recursive":  # lstm train refuses it (exit 2)
            print(f"{name:12} skipped: --strategy recursive cannot use its features {', '.join(probe.features)}",
                  flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            train_csv = os.path.join(tmp, "train.csv")
            cut_tail(path, id_col, horizon, train_csv)
            scores, train_seconds = [], []
            t0 = time.perf_counter()
            for seed in range(args.first_seed, args.first_seed + (0 if args.no_lstm else args.seeds)):
                per_origin, seed_train_seconds = [], 0.0
                for origin in range(args.origins):
                    eval_csv, fit_csv = path, train_csv
                    if origin:  # the data as it was `origin` steps earlier
                        eval_csv = os.path.join(tmp, f"eval{origin}.csv")
                        fit_csv = os.path.join(tmp, f"train{origin}.csv")
                        cut_tail(path, id_col, origin * -(-horizon // 2), eval_csv)
                        cut_tail(eval_csv, id_col, horizon, fit_csv)
                    req = TrainRequest(data=fit_csv, out=os.path.join(tmp, f"m{seed}_{origin}.lstm"),
                                       targets=(target,), horizon=horizon, features=features,
                                       future_features=future_features, id_col=id_col)
                    req = parse_overrides(args.set, req)
                    req = replace(req, train=replace(req.train, seed=seed))
                    t_train = time.perf_counter()
                    train_from_csv(req, intervals=LEVELS if args.intervals else ())
                    seed_train_seconds += time.perf_counter() - t_train
                    per_origin.append(evaluate_from_csv(req.out, eval_csv).overall())
                scores.append({m: {k: float(np.mean([o[m].get(k, np.nan) for o in per_origin]))
                                   for k in per_origin[0][m] if k == "mase" or k.split("_")[0] in INTERVAL_KEYS}
                               for m in per_origin[0]})
                train_seconds.append(seed_train_seconds)
                if args.log:
                    with open(args.log, "a") as fh:
                        fh.write(json.dumps({"data": name, "seed": seed, "options": overrides, "rule": args.lookback_rule,
                                             "known_as": args.known_as, "origins": args.origins,
                                             "train_seconds": round(seed_train_seconds, 2),
                                             "mase": {m: s["mase"] for m, s in scores[-1].items()},
                                             **({"intervals": {m: {k: v for k, v in s.items() if k != "mase"}
                                                               for m, s in scores[-1].items()}}
                                                if args.intervals else {})}) + "\n")
            seconds = (time.perf_counter() - t0) / args.seeds
            ens = ensemble_mase([os.path.join(tmp, f"m{seed}_0.lstm")
                                 for seed in range(args.first_seed, args.first_seed + args.seeds)], path) \
                if args.ensemble and scores else None
        per_seed = [s["lstm"]["mase"] for s in scores] or [float("nan")]
        mase = {m: float(np.mean([s[m]["mase"] for s in scores])) if scores else float("nan")
                for m in ("lstm", "naive", "seasonal_naive")}
        stats = {"ets": (float("nan"), 0.0), "arima": (float("nan"), 0.0)} if args.no_stats else \
            stats_scores(path, target, id_col, horizon)
        mase["ets"], mase["arima"] = stats["ets"][0], stats["arima"][0]
        if args.no_lstm and not args.no_stats:
            mase["naive"], mase["seasonal_naive"] = stats["naive"][0], stats["seasonal_naive"][0]
        n_data += 1
        for other in wins:
            wins[other] += mase["lstm"] < mase[other]
        ratios.append(mase["lstm"] / mase["seasonal_naive"])
        if args.no_lstm:
            print(f"{name:12} {'-':>7} {'-':>7} {mase['naive']:7.3f} {mase['seasonal_naive']:7.3f} {mase['ets']:7.3f} "
                  f"{mase['arima']:7.3f} {'-':>7} {stats['ets'][1] + stats['arima'][1]:7.1f}", flush=True)
            continue
        if args.intervals and scores:
            interval_rows.append((name, {m: {k: float(np.mean([sc[m][k] for sc in scores])) for k in scores[0][m]}
                                         for m in ("lstm", "seasonal_naive")}))
        print(f"{name:12} {mase['lstm']:7.3f} {float(np.median(per_seed)):7.3f} {mase['naive']:7.3f} "
              f"{mase['seasonal_naive']:7.3f} {mase['ets']:7.3f} {mase['arima']:7.3f} {seconds:7.1f} "
              f"{stats['ets'][1] + stats['arima'][1]:7.1f}   per seed {' '.join(f'{v:.3f}' for v in per_seed)}"
              + ("" if ens is None else f"   ens {ens:.3f}"),
              flush=True)
    if n_data and not args.no_lstm:
        print(f"lstm (mean over seeds) beats snaive on {wins['seasonal_naive']}/{n_data}"
              + ("" if args.no_stats else f", ets on {wins['ets']}/{n_data}, arima on {wins['arima']}/{n_data}")
              + f"; geometric mean of lstm/snaive MASE {float(np.exp(np.mean(np.log(ratios)))):.3f}")
    if interval_rows:
        print_intervals(interval_rows)


LEVELS = (80.0, 95.0)
INTERVAL_KEYS = ("coverage", "width", "winkler")


def print_intervals(rows) -> None:
    """The coverage table: per data set and level, the model's coverage and interval score next to
    seasonal naive's empirical band (Winkler ratio < 1: the model's band is better)."""
    head = "".join(f" {'cov' + format(v, 'g'):>7} {'sn cov':>7} {'wink/sn':>7}" for v in LEVELS)
    print(f"\n{'data':12}{head}   (coverage %, mean over seeds x origins; wink/sn: interval score ratio)")
    covs = {v: [] for v in LEVELS}
    better = {v: 0 for v in LEVELS}
    for name, m in rows:
        cells = ""
        for v in LEVELS:
            key = format(v, "g")
            cov, sn = m["lstm"].get(f"coverage_{key}", np.nan), m["seasonal_naive"].get(f"coverage_{key}", np.nan)
            ratio = m["lstm"].get(f"winkler_{key}", np.nan) / m["seasonal_naive"].get(f"winkler_{key}", np.nan)
            covs[v].append(cov)
            better[v] += bool(ratio <= 1.0)
            cells += f" {cov:7.1f} {sn:7.1f} {ratio:7.3f}"
        print(f"{name:12}{cells}", flush=True)
    print("mean coverage " + ", ".join(f"{v:g}%: {np.nanmean(covs[v]):.1f}" for v in LEVELS)
          + "; interval score no worse than seasonal naive's on "
          + ", ".join(f"{better[v]}/{len(rows)} ({v:g}%)" for v in LEVELS))


if __name__ == "__main__":
    main()
