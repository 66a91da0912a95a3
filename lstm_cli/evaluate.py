"""Backtests: hold out the last H points of every series (or N rolling origins S steps apart),
forecast them from what precedes, and score the model next to the naive baselines.

Two modes. `fixed` (the default) forecasts every origin with the model as it was trained. With
`refit`, a new model is trained at every origin on the rows before it only (the options the
model file records: architecture, lookback, quantiles, scaling, optimizer, epochs, seed...), so
no origin has seen its own future: the honest backtest of the whole training procedure.

Origins run one at a time: the history up to one origin (and, with refit, its windows and
network) exists only while that origin is scored."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lstm_cli import baselines, frame, intervals, metrics
from lstm_cli.errors import DataError, UsageError, shown
from lstm_cli.model import FutureInputs
from lstm_cli.pipeline import (
    MIN_TRAIN_WINDOWS,
    TrainRequest,
    load_model,
    read_like_model,
    season_length,
    train_on_series,
)
from lstm_cli.train import TrainConfig

METRIC_NAMES = ("mae", "rmse", "mape", "smape", "mase")
MODES = ("fixed", "refit")


@dataclass
class PanelOrigin:
    """One origin's forecasts for a plot panel: `start` indexes Panel.times/values (first
    forecast step); arrays are (H,) in original units; lo/hi: the widest conformal band of a model
    with intervals, else a quantile model's outermost quantiles, else None."""

    start: int
    lstm: np.ndarray
    seasonal_naive: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


@dataclass
class Panel:
    """What the plot draws for one (series, target): the recent history before the first origin
    and every held-out actual after it (times int64, values float64), the forecasts of every
    origin, and the mean MASE per method over the origins."""

    series: str
    target: str
    times: np.ndarray
    values: np.ndarray
    first_origin: int  # index into times of the first held-out row
    origins: list[PanelOrigin] = field(default_factory=list)
    seen_until: int = 0  # rows of times the model was trained on (up to its last training time): in-sample
    mase: dict[str, float] = field(default_factory=dict)


@dataclass
class Evaluation:
    season: int
    horizon: int
    origins: int
    step: int
    mode: str = "fixed"
    records: list[dict] = field(default_factory=list)  # one per (origin, series, target, method)
    notes: list[str] = field(default_factory=list)
    time_kind: str = "integer"
    freq: str | None = None
    id_col: str | None = None
    quantiles: tuple[float, ...] = ()
    panels: list[Panel] = field(default_factory=list)  # the first `plot_panels` (series, target) pairs
    panels_total: int = 0  # how many (series, target) pairs there are
    known_inputs: dict | None = None  # known_inputs_of(spec): None for a model without inputs known in advance
    future_rows: int = 0  # DATA's future rows (target empty after the last value): split off, not scored
    interval_levels: tuple[float, ...] = ()  # the levels (percent) scored: interval_plan
    interval_kind: str | None = None  # "conformal" (the model's table) or "quantiles" (its central pairs)

    def intervals_header(self) -> dict | None:
        """The JSON header's "intervals": the levels scored and where the model's band comes from."""
        if not self.interval_levels:
            return None
        return {"levels": list(self.interval_levels), "kind": self.interval_kind}

    def interval_labels(self) -> list[str]:
        """The levels as the record keys name them: coverage_80, width_95..."""
        return [intervals.level_name(v) for v in self.interval_levels]

    def overall(self) -> dict[str, dict[str, float]]:
        """Mean of each metric over series, targets and origins, per method (nan-aware)."""
        out = {}
        methods = dict.fromkeys(r["method"] for r in self.records)
        for method in methods:
            rows = [r for r in self.records if r["method"] == method]
            keys = [k for k in rows[0] if k not in ("origin", "series", "target", "method", "in_sample")]
            out[method] = {}
            for k in keys:
                vals = np.array([r[k] for r in rows], dtype=np.float64)
                out[method][k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        return out

    def in_sample_series(self) -> int:
        """How many series had held-out rows (at some origin) that the model was trained on."""
        return len({r["series"] for r in self.records if r.get("in_sample")})

    def skill(self, baseline: str) -> float:
        """1 - MASE(lstm) / MASE(baseline): > 0 means the model beats the baseline."""
        o = self.overall()
        return 1.0 - o["lstm"]["mase"] / o[baseline]["mase"]


def _truncate(series: frame.SeriesSet, cuts: np.ndarray) -> frame.SeriesSet:
    """Every series cut after its first cuts[s] rows, packed again (values and times)."""
    lengths = np.asarray(cuts, dtype=np.int64)
    starts = series.starts
    index = np.concatenate([np.arange(starts[s], starts[s] + lengths[s]) for s in range(len(lengths))])
    new_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return dataclasses.replace(series, values=series.values[index], times=series.times[index], starts=new_starts)


def known_after_cuts(series: frame.SeriesSet, cuts: np.ndarray, spec, horizon: int) -> FutureInputs | None:
    """What is known of the `horizon` steps after each series' cut: its actual rows' times and
    future features (known in advance by definition), for a model with inputs known in advance."""
    if not spec.has_known:
        return None
    index = series.starts[:-1, None] + np.asarray(cuts, dtype=np.int64)[:, None] + np.arange(horizon)[None, :]
    return FutureInputs(times=series.times[index], values=series.values[index][..., spec.n_past :])


KNOWN_FROM = "the actual rows after each origin"


def known_inputs_of(spec) -> dict | None:
    """What the report says of a model's inputs known in advance: which, and where evaluate takes
    them at every origin (known_after_cuts). None for a model without any."""
    if not spec.has_known:
        return None
    return {"future_features": list(spec.future_features), "calendar": list(spec.calendar),
            "holidays": spec.holidays, "from": KNOWN_FROM}


def known_inputs_text(known: dict) -> str:
    """known_inputs_of's dict as the table's line: a backtest that reads the actual future features
    is honest only because they are known in advance by definition; say so."""
    parts = []
    if known["future_features"]:
        parts.append(f"future features {', '.join(known['future_features'])} from {known['from']} "
                     "(known in advance by definition)")
    derived = ([f"calendar {', '.join(known['calendar'])}"] if known["calendar"] else []) + \
        ([f"holidays {known['holidays']}"] if known["holidays"] else [])
    if derived:
        parts.append(f"{' and '.join(derived)} from "
                     + ("their timestamps" if parts else f"the timestamps of {known['from']}"))
    return "; ".join(parts)


def future_rows_note(n_rows: int, n_series: int) -> list[str]:
    """The note for DATA with future rows (the reader splits them off): they have no actual to score,
    so the same file serves predict and evaluate, and the backtest ends at each series' last value."""
    if not n_rows:
        return []
    return [f"{n_rows} future row{'s' if n_rows > 1 else ''} of {n_series} series (the target empty after the "
            "last value) not scored: they have no actuals; the backtest ends at each series' last value"]


def refit_request(model, source: str, threads: int | None) -> tuple[TrainRequest, list[str]]:
    """The TrainRequest that retrains `model` from scratch with the options its file records
    (training.params, the architecture and the data contract). Options a file does not record
    take their defaults, with a note; so does a fine-tuned model's --warm-start (a refit
    starts from scratch)."""
    params = dict(model.training.get("params") or {})
    notes = []
    missing = []

    def get(name, default):
        if name not in params:
            missing.append(name)
            return default
        if params[name] is None:  # recorded as unset (e.g. sample_series): the default
            return default
        value = params[name]
        return type(default)(value) if isinstance(default, (int, float)) and not isinstance(default, bool) else value

    config_defaults = TrainConfig()
    config = TrainConfig(**{f.name: get(f.name, getattr(config_defaults, f.name))
                            for f in dataclasses.fields(TrainConfig)})
    request_defaults = TrainRequest(data="", out="", targets=(), horizon=1)
    arch, spec = model.network.arch, model.spec
    recorded_threads = model.training.get("threads")
    # the network and the data contract come from the architecture and the spec; every other option
    # of TrainRequest (val_frac, forget_bias, and any added later) from training.params
    fixed = {"data": source, "out": "", "targets": spec.targets, "horizon": spec.horizon,
             "features": spec.features, "time_col": spec.time_col, "id_col": spec.id_col, "freq": spec.freq,
             "lookback": model.members[0].spec.lookback if hasattr(model, "members") else spec.lookback,
             "hidden": arch.hidden_size, "layers": arch.num_layers,
             "dtype": arch.dtype, "cell": arch.cell, "quantiles": spec.quantiles, "scaling": spec.scaling,
             "strategy": spec.strategy, "blend": spec.blend, "future_features": spec.future_features,
             "calendar": spec.calendar, "holidays": spec.holidays,
             "threads": threads or (int(recorded_threads) if recorded_threads else None), "train": config}
    request_fields = {f.name for f in dataclasses.fields(TrainRequest)}
    skip = {"sep", "missing", "warm_start"}  # parsing options (the data is already read); a refit starts afresh
    recorded = {name: get(name, getattr(request_defaults, name))
                for name in sorted(request_fields - set(fixed) - skip)
                if name in params or name in ("val_frac", "forget_bias")}
    req = TrainRequest(**fixed, **recorded)
    if missing:
        notes.append(f"--refit: the model file does not record {', '.join(missing)}; using the defaults")
    if params.get("warm_start_sha256"):
        notes.append("--refit: the model was fine-tuned (--warm-start); every refit trains from scratch with "
                     "its settings")
    return req, notes


def fixed_need(spec, backtests: int, step: int) -> tuple[int, str]:
    """Rows every series needs for a fixed-model backtest, and why (for the message)."""
    H = spec.horizon
    return (spec.lookback + H + (backtests - 1) * step,
            f"lookback {spec.lookback} + horizon {H} + {backtests - 1} more origins x step {step}")


def too_short(series: frame.SeriesSet, need: int, why: str) -> tuple[str, str] | None:
    """(id, message) of the first series (in id order) with fewer than `need` rows, else None."""
    lengths = np.diff(series.starts)
    short = np.flatnonzero(lengths < need)
    if not len(short):
        return None
    s = int(short[0])
    who = f"series {series.ids[s]!r} has" if series.id_col else "it has"
    return series.ids[s], (f"{shown(series.source)}: {who} {lengths[s]} rows, need at least {need} ({why}); "
                           f"use fewer --backtest origins or more history")


def seen_in_training(series: frame.SeriesSet, model, cuts: np.ndarray) -> np.ndarray:
    """(S,) bool: the first held-out row of each series (at cuts[s]) is no later than the last
    time the model was trained on for that series id (the model file records it per series), so
    the model saw the rows it is scored on. Series the model does not know: False."""
    known = dict(zip(model.ids, model.last_time, strict=True))
    first_held_out = series.times[series.starts[:-1] + np.asarray(cuts, dtype=np.int64)]
    return np.array([sid in known and int(t) <= int(known[sid]) for sid, t in zip(series.ids, first_held_out,
                                                                                  strict=True)], dtype=bool)


def in_sample_note(ev: Evaluation, trained_until: str | None = None) -> list[str]:
    """The note for scores on rows the model was trained on (none with --refit: every origin's model
    is trained on the rows before it)."""
    n = ev.in_sample_series()
    if not n:
        return []
    total = len({r["series"] for r in ev.records})
    after = f"after {trained_until} (the end of the model's training data)" if trained_until else \
        "after the model's training data"
    return [f"the held-out rows of {n} of {total} series were seen in training: the scores are optimistic; "
            f"evaluate on rows {after}, or use --refit"]


INTERVAL_SCORES = ("coverage", "width", "winkler")


def interval_plan(model) -> tuple[tuple[float, ...], str | None]:
    """The interval levels evaluate scores and their kind: the model's conformal table when it has
    one (what predict --intervals writes), else a quantile model's central quantile pairs (0.1 and
    0.9: 80), else none."""
    table = getattr(model, "intervals", None)
    if table:
        return tuple(float(v) for v in table["levels"]), "conformal"
    grid = metrics.interval_levels(model.spec.quantiles)
    if grid:
        return tuple(float(label) for _, _, label in grid), "quantiles"
    return (), None


def parse_coverage_gate(text: str) -> tuple[float, float]:
    """--fail-if-coverage-below LEVEL[:MIN] -> (level, minimum), both percent; MIN defaults to LEVEL."""
    level_text, _, min_text = str(text).partition(":")
    try:
        level = float(level_text)
        minimum = float(min_text) if min_text.strip() else level
    except ValueError:
        level = minimum = float("nan")
    if not (0.0 < level < 100.0 and 0.0 <= minimum <= 100.0) or ":" in min_text or (":" in text and not min_text.strip()):
        raise UsageError(f"--fail-if-coverage-below {text!r}: give LEVEL[:MIN] in percent, the level in (0, 100) and "
                         "the minimum coverage in [0, 100], e.g. 80 or 95:90")
    return level, minimum


def check_gate_levels(model, gates) -> None:
    """UsageError (exit 2), before any scoring, when --fail-if-coverage-below names a level the
    model has no interval of."""
    levels, kind = interval_plan(model)
    missing = [level for level, _ in gates if level not in levels]
    if not missing:
        return
    name = intervals.level_name(missing[0])
    if levels:
        has = (f"it has {', '.join(map(intervals.level_name, levels))}% "
               + ("(its conformal table)" if kind == "conformal" else "(its quantile pairs)"))
        fix = f"gate on one of those, or retrain with --intervals {intervals.level_name(missing[0])}"
    elif model.spec.quantiles:  # a grid without a central pair: the level needs its two quantiles
        q = round((1.0 - missing[0] / 100.0) / 2.0, 6)
        has = "its quantile grid has no central pair"
        fix = f"retrain it with {q:g},{1 - q:g} in --quantiles, or leave out --fail-if-coverage-below"
    else:
        has = "it has no intervals (trained with --intervals none, a quantile grid without a central pair, or " \
              "an older lstm)"
        fix = "retrain it with --intervals 80,95, or leave out --fail-if-coverage-below"
    raise UsageError(f"--fail-if-coverage-below {name}: the model has no {name}% interval; {has}: {fix}")


def interval_record(actual, lower, upper, label: str) -> dict[str, float]:
    """metrics.interval_scores under the record's keys for the level `label` (percent): coverage_80..."""
    scores = metrics.interval_scores(actual, lower, upper, float(label) / 100.0)
    return {f"{name}_{label}": scores[name] for name in INTERVAL_SCORES}


def score_series(series: frame.SeriesSet, model, *, backtests: int, step: int, season: int, req=None,
                 on_origin: Callable | None = None) -> tuple[list[dict], list[str]]:
    """The backtest of a set of whole series (read_series output): at every origin, forecast the
    horizon after the cut from the rows before it (with req, a TrainRequest, from a model trained
    on those rows only) and score it next to the baselines (naive, seasonal naive, Theta).
    Returns the records, one per (origin, series, target, method) in that order (series in id
    order), and the forecast notes of the first origin (and of every refit origin that could not
    be calibrated). Both engines call this: locally on all series, with --engine dask on each
    partition's. on_origin(origin, cuts, forecast, fitted, seconds, band) after each origin, band:
    {label: (lo, hi) each (S, H, K)} of the model's intervals, or None.

    Intervals (interval_plan): a model with a conformal table is scored on the bounds predict
    --intervals gives from the same history (with req, each origin's model is calibrated on its
    rows as train does, at the table's levels); a quantile model without one on its central
    quantile pairs. The seasonal naive gets its empirical band at the same levels."""
    spec = model.spec
    H = spec.horizon
    lengths = np.diff(series.starts)
    quantiles = spec.quantiles
    median = len(quantiles) // 2
    levels, kind = interval_plan(model)
    labels = [intervals.level_name(v) for v in levels]
    pairs = {intervals.level_name(v): ij for v, ij in intervals.grid_levels(quantiles).items()}
    undefined = dict.fromkeys((f"{name}_{label}" for label in labels for name in INTERVAL_SCORES), float("nan"))
    records: list[dict] = []
    notes: list[str] = []
    for origin in range(backtests):
        t0 = time.perf_counter()
        cuts = lengths - H - (backtests - 1 - origin) * step
        history = _truncate(series, cuts)
        seen = seen_in_training(series, model, cuts) if req is None else np.zeros(len(series.ids), dtype=bool)
        fitted = None
        forecaster = model
        if req is not None:
            forecaster, fitted = train_on_series(history, req)
            if forecaster is None:
                raise DataError(f"{shown(series.source)}: --refit: training at origin {origin + 1} stopped before its "
                                f"first epoch finished ({fitted.stopped_by}); check the data or the model's --lr")
            if kind == "conformal":  # as train does: on the last origins of the rows it was trained on
                try:
                    intervals.attach(forecaster, intervals.calibrate(forecaster, history, levels,
                                                                     val_frac=req.val_frac))
                except intervals.NotCalibrated as e:
                    notes.append(f"--refit: origin {origin + 1} has no interval scores: {e}")
        forecast, forecast_notes = forecaster.forecast(history.ids, history.values, history.starts, H,
                                                       times=history.times,  # known inputs: the actual rows'
                                                       future=known_after_cuts(series, cuts, spec, H))  # (S, H, K, nq)
        band = None  # label -> (lo, hi), each (S, H, K)
        if kind == "conformal" and getattr(forecaster, "intervals", None):
            band = {intervals.level_name(v): b for v, b in intervals.bounds(forecaster, forecast, history,
                                                                            levels).items()}
        elif kind == "quantiles":
            band = {label: (forecast[..., i], forecast[..., j]) for label, (i, j) in pairs.items()}
        del history
        if origin == 0:
            notes += forecast_notes
        for s, sid in enumerate(series.ids):
            lo = series.starts[s]
            for k, target in enumerate(spec.targets):
                past = series.values[lo : lo + cuts[s], k]
                actual = series.values[lo + cuts[s] : lo + cuts[s] + H, k]
                methods = {
                    "lstm": forecast[s, :, k, median],
                    "naive": baselines.naive(past, H),
                    "seasonal_naive": baselines.seasonal_naive(past, H, season),
                    "theta": baselines.theta(past, H, season),
                }
                for method, f in methods.items():
                    rec = {"origin": origin + 1, "series": sid, "target": target, "method": method}
                    rec.update(metrics.point_scores(actual, f, past, season))
                    if method == "lstm":
                        if quantiles:
                            lo_q, hi_q = forecast[s, :, k, 0], forecast[s, :, k, -1]
                            rec[f"coverage_{quantiles[0]:g}_{quantiles[-1]:g}"] = metrics.coverage(actual, lo_q, hi_q)
                            rec["pinball"] = float(np.mean([metrics.pinball(actual, forecast[s, :, k, j], q)
                                                            for j, q in enumerate(quantiles)]))
                        if band is None:  # a refit origin that could not be calibrated: undefined (null)
                            rec.update(undefined)
                        else:
                            for label in labels:
                                rec.update(interval_record(actual, band[label][0][s, :, k], band[label][1][s, :, k],
                                                           label))
                        if quantiles:
                            rec["wql"] = metrics.weighted_quantile_loss(actual, forecast[s, :, k, :], quantiles)
                            rec["crps"] = metrics.crps_from_quantiles(actual, forecast[s, :, k, :], quantiles)
                    if method == "seasonal_naive":  # its own band: the quantiles of its past h-step errors
                        for label in labels:
                            half = metrics.empirical_half_widths(past, H, season, float(label) / 100.0)
                            rec.update(interval_record(actual, f - half, f + half, label))
                    rec["in_sample"] = bool(seen[s])  # last: the CSV's columns keep their order
                    records.append(rec)
        if on_origin is not None:
            on_origin(origin, cuts, forecast, fitted, time.perf_counter() - t0, band)
    return records, notes


def training_end(model, time_kind: str, freq: str | None) -> str | None:
    """The end of the model's training data as text (for in_sample_note), None if it records none."""
    if not len(model.last_time):
        return None
    return frame.format_times(np.asarray([int(model.last_time.max())], dtype=np.int64), time_kind, freq)[0]


def evaluation_of(records: list[dict], notes: list[str], spec, *, backtests: int, step: int, season: int,
                  mode: str = "fixed", time_kind: str | None = None, freq: str | None = None,
                  until: str | None = None, plan: tuple = ((), None)) -> Evaluation:
    """The Evaluation of the records of every series (what both engines report); until: training_end;
    plan: interval_plan(model)."""
    ev = Evaluation(season=season, horizon=spec.horizon, origins=backtests, step=step, mode=mode,
                    records=records, notes=notes, time_kind=time_kind or spec.time_kind, freq=freq or spec.freq,
                    id_col=spec.id_col, quantiles=spec.quantiles, known_inputs=known_inputs_of(spec),
                    interval_levels=tuple(plan[0]), interval_kind=plan[1])
    ev.notes += in_sample_note(ev, until)
    return ev


def evaluate_from_csv(model_path: str, data: str, *, backtests: int = 1, step: int | None = None,
                      season: int | None = None, sep: str = ",", missing: str = "interpolate",
                      threads: int | None = None, refit: bool = False, plot_panels: int = 0,
                      coverage_gates=(), on_progress: Callable[[dict], None] | None = None) -> Evaluation:
    """Score the model (and the naive baselines) at `backtests` origins `step` apart, the last
    one a horizon before the end of every series. With refit, a model trained on the rows before
    each origin forecasts it (on_progress receives a dict per origin: origin, origins, cut (the
    first held-out stamp of the first series), epochs_run, best_epoch, seconds). plot_panels:
    keep what the plot needs for the first n (series, target) pairs. coverage_gates: the
    (level, minimum) pairs of --fail-if-coverage-below, whose levels the model must have (checked
    before the data is read)."""
    model, _ = load_model(model_path, threads)
    check_gate_levels(model, coverage_gates)
    spec = model.spec
    series = read_like_model(data, spec, sep=sep, missing=missing)
    frame.check_model_phase(series, spec.freq, model.ids, model.last_time)  # as predict: the grid's phase
    H = spec.horizon
    step = step or H
    if season is None:
        season = season_length(series.freq or spec.freq, series.step, series.time_kind,
                               series.times[: series.starts[1]])
    lengths = np.diff(series.starts)
    K = len(spec.targets)
    if not K:
        raise UsageError("the model has no targets")
    notes = list(series.warnings)
    req = None
    if refit:
        req, refit_notes = refit_request(model, series.source, threads)
        notes += refit_notes
        from lstm_cli import windows

        # the first origin has the least history; train_on_series needs this much before it
        shortest_train = int(lengths.min()) - H - (backtests - 1) * step
        val_rows = windows.val_rows_for(max(shortest_train, 1), req.val_frac, H)
        need_train = spec.lookback + H + val_rows + MIN_TRAIN_WINDOWS - 1
        need = need_train + H + (backtests - 1) * step
        why = (f"--refit trains at the first origin on lookback {spec.lookback} + horizon {H} + {val_rows} "
               f"validation rows + {MIN_TRAIN_WINDOWS - 1} more, then horizon {H} + {backtests - 1} more origins "
               f"x step {step}")
    else:
        need, why = fixed_need(spec, backtests, step)
    short = too_short(series, need, why)
    if short is not None:
        raise DataError(short[1])
    from lstm_cli import memory

    memory.require(memory.evaluation_bytes(backtests, len(series.ids), H, K, len(spec.quantiles)),
                   f"{shown(series.source)}: scoring {backtests} origins x {len(series.ids):,} series x {K} targets",
                   "use fewer --backtest origins, or score fewer series at a time (split the input, or "
                   "--engine dask)", UsageError if backtests > 1 else DataError)
    result = evaluation_of([], notes, spec, backtests=backtests, step=step, season=season,
                           mode="refit" if refit else "fixed", time_kind=series.time_kind,
                           freq=series.freq or spec.freq, plan=interval_plan(model))
    quantiles = spec.quantiles
    median = len(quantiles) // 2
    n_series = len(series.ids)
    result.panels_total = n_series * K
    first_cuts = lengths - H - (backtests - 1) * step
    context = max(spec.lookback, 3 * season if season > 1 else 0, 2 * H)
    known = {sid: n for n, sid in enumerate(model.ids)}
    for p in range(min(plot_panels, result.panels_total)):
        s, k = divmod(p, K)
        lo = series.starts[s]
        begin = max(0, int(first_cuts[s]) - context)
        rows = slice(lo + begin, lo + int(lengths[s]))
        times = series.times[rows].copy()
        trained_until = model.last_time[known[series.ids[s]]] if series.ids[s] in known and not refit else None
        result.panels.append(Panel(series=series.ids[s], target=spec.targets[k], times=times,
                                   values=series.values[rows, k].copy(), first_origin=int(first_cuts[s]) - begin,
                                   seen_until=0 if trained_until is None else
                                   int(np.searchsorted(times, trained_until, side="right"))))

    widest = intervals.level_name(max(result.interval_levels)) if result.interval_kind == "conformal" else None

    def on_origin(origin, cuts, forecast, fitted, seconds, band):
        for p, panel in enumerate(result.panels):
            s, k = divmod(p, K)
            lo = series.starts[s]
            start = int(cuts[s]) - (int(first_cuts[s]) - panel.first_origin)
            if widest is not None:  # the conformal band (None at a refit origin that could not be calibrated)
                lo_hi = (band[widest][0][s, :, k].copy(), band[widest][1][s, :, k].copy()) if band else (None, None)
            else:
                lo_hi = (forecast[s, :, k, 0].copy(), forecast[s, :, k, -1].copy()) if quantiles else (None, None)
            panel.origins.append(PanelOrigin(
                start=start, lstm=forecast[s, :, k, median].copy(),
                seasonal_naive=baselines.seasonal_naive(series.values[lo : lo + cuts[s], k], H, season),
                lo=lo_hi[0], hi=lo_hi[1]))
        if on_progress is not None:
            cut_time = series.times[series.starts[0] + cuts[0]]
            on_progress({"origin": origin + 1, "origins": backtests, "mode": result.mode,
                         "cut": frame.format_times(np.asarray([cut_time], dtype=np.int64), series.time_kind,
                                                   result.freq)[0],
                         "epochs_run": fitted.epochs_run if fitted else None,
                         "best_epoch": fitted.best_epoch if fitted else None,
                         "seconds": seconds})

    result.records, forecast_notes = score_series(series, model, backtests=backtests, step=step, season=season,
                                                  req=req, on_origin=on_origin)
    result.notes += forecast_notes
    if series.future is not None:
        result.future_rows = int(series.future.starts[-1])
        result.notes += future_rows_note(result.future_rows, int((np.diff(series.future.starts) > 0).sum()))
    result.notes += in_sample_note(result, training_end(model, series.time_kind, result.freq))
    for panel in result.panels:
        for method in ("lstm", "seasonal_naive"):
            vals = np.array([r["mase"] for r in result.records
                             if r["series"] == panel.series and r["target"] == panel.target and r["method"] == method])
            panel.mase[method] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return result
