"""Backtests: hold out the last H points of every series (or N rolling origins S steps apart),
forecast them from what precedes, and score the model next to the naive baselines."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lstm_cli import baselines, frame, metrics
from lstm_cli.errors import DataError, UsageError
from lstm_cli.pipeline import load_model, season_length

METRIC_NAMES = ("mae", "rmse", "mape", "smape", "mase")


@dataclass
class Evaluation:
    season: int
    horizon: int
    origins: int
    step: int
    records: list[dict] = field(default_factory=list)  # one per (origin, series, target, method)
    notes: list[str] = field(default_factory=list)

    def overall(self) -> dict[str, dict[str, float]]:
        """Mean of each metric over series, targets and origins, per method (nan-aware)."""
        out = {}
        methods = dict.fromkeys(r["method"] for r in self.records)
        for method in methods:
            rows = [r for r in self.records if r["method"] == method]
            keys = [k for k in rows[0] if k not in ("origin", "series", "target", "method")]
            out[method] = {}
            for k in keys:
                vals = np.array([r[k] for r in rows], dtype=np.float64)
                out[method][k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        return out

    def skill(self, baseline: str) -> float:
        """1 - MASE(lstm) / MASE(baseline): > 0 means the model beats the baseline."""
        o = self.overall()
        return 1.0 - o["lstm"]["mase"] / o[baseline]["mase"]


def _truncate(values: np.ndarray, starts: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every series cut after its first cuts[s] rows, packed again."""
    lengths = np.asarray(cuts, dtype=np.int64)
    index = np.concatenate([np.arange(starts[s], starts[s] + lengths[s]) for s in range(len(lengths))])
    new_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return values[index], new_starts


def evaluate_from_csv(model_path: str, data: str, *, backtests: int = 1, step: int | None = None,
                      season: int | None = None, sep: str = ",", missing: str = "interpolate",
                      threads: int | None = None) -> Evaluation:
    model, _ = load_model(model_path, threads)
    spec = model.spec
    series = frame.read_series(data, targets=spec.targets, features=spec.features, time_col=spec.time_col,
                               id_col=spec.id_col, sep=sep, freq=spec.freq, missing=missing)
    H = spec.horizon
    step = step or H
    if season is None:
        season = season_length(series.freq or spec.freq, series.step, series.time_kind,
                               series.times[: series.starts[1]])
    lengths = np.diff(series.starts)
    need = spec.lookback + H + (backtests - 1) * step
    for s in np.flatnonzero(lengths < need):
        who = f"series {series.ids[s]!r} has" if series.id_col else "it has"
        raise DataError(f"{series.source}: {who} {lengths[s]} rows, need at least {need} (lookback "
                        f"{spec.lookback} + horizon {H} + {backtests - 1} more origins x step {step}); "
                        f"use fewer --backtest origins or more history")
    result = Evaluation(season=season, horizon=H, origins=backtests, step=step, notes=list(series.warnings))
    K = len(spec.targets)
    quantiles = spec.quantiles
    median = len(quantiles) // 2
    for origin in range(backtests):
        cuts = lengths - H - (backtests - 1 - origin) * step
        values, starts = _truncate(series.values, series.starts, cuts)
        forecast, notes = model.forecast(series.ids, values, starts, H)  # (S, H, K, nq)
        if origin == 0:
            result.notes += notes
        for s, sid in enumerate(series.ids):
            lo = series.starts[s]
            for k, target in enumerate(spec.targets):
                history = series.values[lo : lo + cuts[s], k]
                actual = series.values[lo + cuts[s] : lo + cuts[s] + H, k]
                methods = {
                    "lstm": forecast[s, :, k, median],
                    "naive": baselines.naive(history, H),
                    "seasonal_naive": baselines.seasonal_naive(history, H, season),
                }
                for method, f in methods.items():
                    rec = {"origin": origin + 1, "series": sid, "target": target, "method": method}
                    rec.update(metrics.point_scores(actual, f, history, season))
                    if method == "lstm" and quantiles:
                        lo_q, hi_q = forecast[s, :, k, 0], forecast[s, :, k, -1]
                        rec[f"coverage_{quantiles[0]:g}_{quantiles[-1]:g}"] = metrics.coverage(actual, lo_q, hi_q)
                        rec["pinball"] = float(np.mean([metrics.pinball(actual, forecast[s, :, k, j], q)
                                                        for j, q in enumerate(quantiles)]))
                    result.records.append(rec)
    if not K:
        raise UsageError("the model has no targets")
    return result
