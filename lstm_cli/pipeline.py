"""One function per command: CSV -> frame -> windows -> scaled arrays -> kernels -> model file ->
forecast. The CLI parses options and renders; everything it does goes through here."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from lstm_cli import atomic, frame, limits, modelfile, scaling, windows
from lstm_cli.errors import DataError, FreqNotApplicable, ModelFileError, StaleInputError, UsageError, shown
from lstm_cli.model import (
    STRATEGIES,
    DataSpec,
    Ensemble,
    Forecaster,
    FutureInputs,
    forecaster_of,
    unknown_features,
)
from lstm_cli.network import MIN_SHARD, Architecture, Network, default_threads
from lstm_cli.train import TrainConfig, TrainResult, fit

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class TrainRequest:
    data: str
    out: str
    targets: tuple[str, ...]
    horizon: int
    features: tuple[str, ...] = ()
    time_col: str | None = None
    id_col: str | None = None
    sep: str = ","
    freq: str | None = None
    missing: str = "interpolate"
    lookback: int | None = None
    hidden: int = 64
    layers: int = 1
    cell: str = "lstm"
    dtype: str = "float32"
    quantiles: tuple[float, ...] = ()
    val_frac: float = 0.1
    forget_bias: float = 1.0
    head_init: str = "torch"
    scaling: str | None = None  # None: scaling_for_size (level, or series for few training windows)
    strategy: str = "direct"  # "recursive": a one-step network fed its own forecasts, horizon times
    sample_series: int | None = None  # train on a seeded sample of this many series (all keep scalers)
    calibrate: str = "val"  # shrink the head toward the anchor by a factor fitted on validation; "none"
    blend: float | None = None  # weight of seasonal naive in the forecast (scale_head); None: blend_default
    future_features: tuple[str, ...] = ()  # columns known for the forecast steps too (DataSpec.future_features)
    calendar: str | tuple[str, ...] | None = None  # parse_option's result, resolved components; None: "none"
    # (a warm start: the old model's)
    holidays: str | None = None  # a holidays-package code (calendar.check_holidays)
    ensemble: int = 1  # members of the model (member_plan): they differ in lookback, anchor and seed
    threads: int | None = None
    warm_start: str | None = None
    train: TrainConfig = TrainConfig()


def season_length(freq: str | None, step: int, time_kind: str, times: np.ndarray | None = None) -> int:
    """Steps per seasonal cycle: from the frequency alias, else rows per day for intraday data
    (business-hours data has fewer rows a day than 24h/step), else 1 (no season)."""
    if time_kind != "datetime":
        return 1
    if freq:
        # pandas' own name of the offset, case kept: 'ms' is milliseconds, not month starts, and
        # 'w', '1W' and 'W-SUN' are one offset (its multiple is not part of the rule code)
        base = frame._offset(freq).rule_code.split("-")[0]
        table = {"MS": 12, "ME": 12, "BMS": 12, "BME": 12, "SMS": 24, "SME": 24,
                 "QS": 4, "QE": 4, "BQS": 4, "BQE": 4, "W": 52, "D": 7, "B": 5,
                 "YS": 1, "YE": 1, "BYS": 1, "BYE": 1}
        if base in table:
            return table[base]
    if 0 < step < DAY_NS:
        if times is not None and len(times) > 1:
            days = times // DAY_NS
            _, counts = np.unique(days, return_counts=True)
            if len(counts) > 2:  # the typical full day, not the first or last partial one
                values, freq_of = np.unique(counts[1:-1] if len(counts) > 3 else counts, return_counts=True)
                return int(values[np.argmax(freq_of)])
        return int(DAY_NS // step)
    return 1


MIN_TRAIN_WINDOWS = 4
SHORT_DATA_WINDOWS = 120  # fewer training windows than this: per-series scaling by default (docs/accuracy.md)


def scaling_for_size(train_rows: np.ndarray, lookback: int, steps: int) -> str:
    """The default --scaling: "level" (the window's last row is the anchor: follows trends), or
    "series" when the training rows give fewer than SHORT_DATA_WINDOWS windows. On short data the
    level-anchored network learns the changes from too few examples and misses by far; a plain
    standard-scaled network stays near the mean (issue 17's short-series study: nile, 76 windows,
    and insurance, 5, gain; six of the seven sets with 149 or more lose, docs/accuracy.md)."""
    n_train = int(np.maximum(0, np.asarray(train_rows) - lookback - steps + 1).sum())
    return "series" if n_train < SHORT_DATA_WINDOWS else "level"


def longest_lookback(series: frame.SeriesSet, req: TrainRequest) -> int:
    """The lookback training will use (an ensemble's longest member's; one model is member 0)."""
    return max(member.lookback for member in member_plan(req, series))


def training_rows(lengths: np.ndarray, val_frac: float, horizon: int) -> np.ndarray:
    """(S,) each series' rows before its validation part: the rows windows train on."""
    return np.array([n - windows.val_rows_for(int(n), val_frac, horizon) for n in lengths])


def default_lookback(horizon: int, season: int, shortest: int, val_rows: int) -> int:
    """Two seasons or two horizons, whichever is longer, cut so the shortest series still gives
    a few training windows, but never shorter than one horizon (or 4 steps)."""
    want = min(max(2 * horizon, 2 * season if season > 1 else 0, 8), limits.MAX_STEPS)  # the file's limit
    floor = min(want, max(horizon, 4))
    room = shortest - val_rows - horizon - MIN_TRAIN_WINDOWS + 1
    return max(floor, min(want, room))


def data_fingerprint(series: frame.SeriesSet) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(series.values).tobytes())
    h.update(np.ascontiguousarray(series.times).tobytes())
    h.update("\x00".join(series.ids).encode())
    return h.hexdigest()


def _check_lengths(series: frame.SeriesSet, need: int, why: str) -> None:
    lengths = np.diff(series.starts)
    for s in np.flatnonzero(lengths < need):
        who = f"series {series.ids[s]!r} has" if series.id_col else "it has"
        raise DataError(f"{shown(series.source)}: {who} {lengths[s]} rows, need at least {need} ({why}); "
                        f"supply more history or lower --lookback/--horizon")


def calibrate_head(network: Network, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """Scale the dense head by the factor a in [0, 1] that minimises the squared validation error
    of a * outputs (least squares, a = <out, y> / <out, out>): the outputs are departures from the
    anchor, so a < 1 shrinks the forecast toward naive (level) or seasonal naive (seasonal) as far
    as the held-out windows say the network's departures are noise. Returns a."""
    out = network.predict(x_val).astype(np.float64)
    denom = float(np.sum(out * out))
    a = 1.0 if denom == 0.0 else float(np.clip(np.sum(out * y_val) / denom, 0.0, 1.0))
    scale_head(network, a)
    return a


def scale_head(network: Network, factor: float) -> None:
    """Multiply the dense head (weight and bias) by factor: every output scales by it.

    --blend W uses it with factor 1 - W: with the anchor mixed as windows.split_anchor does, the
    forecast becomes (1 - W) * network forecast + W * seasonal naive. An equal-weight combination
    with a simple baseline was the most reliable accuracy gain the study found (docs/accuracy.md):
    its absolute error is never above the mean of the two forecasts' errors."""
    views = network.layout.views(network.params)
    views["head.weight"] *= network.arch.np_dtype(factor)
    views["head.bias"] *= network.arch.np_dtype(factor)


def sample_of_series(n_series: int, size: int | None, seed: int) -> np.ndarray | None:
    """The sorted positions of a seeded sample of `size` series, or None to train on all: a
    global model over 10^5+ series learns as well from a few thousand (docs/scaling.md)."""
    if not size or n_series <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_series, size, replace=False))


def take_series(values: np.ndarray, starts: np.ndarray, picked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the picked series, packed again: (values, starts)."""
    lengths = np.diff(starts)[picked]
    new_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.arange(new_starts[-1]) + np.repeat(starts[picked] - new_starts[:-1], lengths)
    return values[index], new_starts


def _check_seasonal(req: TrainRequest, season: int, lookback: int) -> None:
    if req.scaling == "seasonal" and season > lookback:
        cut = "" if req.lookback else " (the default, cut to fit the shortest series)"
        raise UsageError(f"--scaling seasonal forecasts from the values one season ({season} steps) back, "
                         f"so it needs --lookback >= {season}, got {lookback}{cut}; use --scaling level "
                         f"or supply more history")


def check_training_memory(req: TrainRequest, n_inputs: int, n_outputs: int, lookback: int, threads: int,
                          n_windows: int | None = None) -> None:
    """Refuse, before anything is allocated, a training run that cannot fit in memory: the
    network's weights, gradients and optimizer state (and, once the windows are counted, one
    batch's caches): the options decide those (UsageError, exit 2); then with the windows, which
    the data decides (DataError, exit 65)."""
    from lstm_cli import memory
    from lstm_cli.cells import GATES

    itemsize = 4 if req.dtype == "float32" else 8
    gates = GATES.get(req.cell, 4)
    weights = memory.parameter_count(n_inputs, req.hidden, req.layers, n_outputs, gates)
    batch = min(req.train.batch_size, n_windows) if n_windows else req.train.batch_size
    shards = max(1, min(threads, batch // MIN_SHARD))
    need = memory.model_state_bytes(weights, itemsize, shards, req.train.optimizer)
    what = f"--hidden {req.hidden} --layers {req.layers} ({weights:,} weights, {req.dtype})"
    remedy = "use a smaller --hidden or --layers"
    if n_windows:
        need += memory.batch_bytes(batch, lookback, n_inputs, req.hidden, req.layers, n_outputs, gates, itemsize,
                                   req.train.dropout > 0)
        what += f" with --batch-size {req.train.batch_size}"
        remedy += ", or a smaller --batch-size"
    memory.require(need, what + " for the weights, gradients and optimizer state", remedy, UsageError)
    if n_windows:
        need += memory.windows_bytes(n_windows, lookback, n_inputs, n_outputs, itemsize)
        memory.require(need, f"training on {n_windows:,} windows of lookback {lookback} x {n_inputs} columns",
                       "train on a sample of the series (--sample-series N), with a shorter --lookback, "
                       "or on less history", DataError)


def check_column_roles(req: TrainRequest) -> None:
    """A column has one role: a target, a past-only feature (--features) or a future feature."""
    roles = (("--target", req.targets), ("--features", req.features), ("--future-features", req.future_features))
    for a, (name_a, cols_a) in enumerate(roles):
        for name_b, cols_b in roles[a + 1 :]:
            both = sorted(set(cols_a) & set(cols_b))
            if both:
                raise UsageError(f"column {both[0]!r} is in both {name_a} and {name_b}; give it one role "
                                 "(--future-features: known for the forecast steps too; --features: known "
                                 "only up to the last row)")


def _check_strategy(req: TrainRequest) -> None:
    if req.strategy not in STRATEGIES:
        raise UsageError(f"unknown --strategy {req.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if req.strategy == "recursive" and req.features:
        raise UsageError(f"--strategy recursive feeds each forecast back as the newest input row, so it would "
                         f"need {unknown_features(req.features)}; use --strategy direct or drop --features")


def check_model_limits(req: TrainRequest) -> None:
    """Refuse, before DATA is read, options that make a model the model file cannot hold (the
    limits modelfile.validate_header enforces, lstm_cli.limits): exit 2 now, not exit 70 at save."""
    from lstm_cli import memory

    n_targets = len(req.targets)
    n_inputs = n_targets + len(req.features) + len(req.future_features)  # + calendar columns, known after reading
    if n_targets > limits.MAX_TARGETS:
        raise UsageError(f"--target names {n_targets} columns, more than the {limits.MAX_TARGETS} a model can "
                         f"forecast; train one model per group of at most {limits.MAX_TARGETS} targets")
    if n_inputs > limits.MAX_INPUTS:
        raise UsageError(f"--target, --features and --future-features name {n_inputs} input columns, more than the "
                         f"{limits.MAX_INPUTS} a model can read; drop some --features or --future-features")
    for option, value in (("--horizon", req.horizon), ("--lookback", req.lookback)):
        if value is not None and value > limits.MAX_STEPS:
            raise UsageError(f"{option} {value} is more than the {limits.MAX_STEPS:,} steps a model can hold; "
                             f"give at most {limits.MAX_STEPS:,}")
    steps = 1 if req.strategy == "recursive" else req.horizon
    nq = max(1, len(req.quantiles))
    outputs = steps * n_targets * nq
    if outputs > limits.MAX_OUTPUTS:
        what = f"{'one step (recursive)' if steps == 1 else f'--horizon {steps}'} x {n_targets} targets x {nq} quantiles"
        raise UsageError(f"the network would have {outputs:,} outputs ({what}), more than the {limits.MAX_OUTPUTS:,} "
                         "a model can hold; use fewer --quantiles or targets, a shorter --horizon, or --strategy "
                         "recursive (outputs for one step)")
    arch = {"cell": req.cell, "input_size": n_inputs, "hidden_size": req.hidden, "num_layers": req.layers,
            "output_size": outputs, "dtype": req.dtype}
    weights = modelfile.payload_bytes(modelfile.expected_arrays(arch, 0))
    if weights > modelfile.MAX_PAYLOAD_BYTES:
        raise UsageError(f"--hidden {req.hidden} --layers {req.layers} ({req.dtype}) make {memory.fmt(weights)} of "
                         f"weights, more than the {memory.fmt(modelfile.MAX_PAYLOAD_BYTES)} a model file can hold; "
                         "use a smaller --hidden or --layers, or --dtype float32")


class _Unbuilt:
    """A network's architecture without its weights: all the model header says of the network."""

    def __init__(self, arch: Architecture):
        self.arch = arch

    def tensors(self) -> dict:
        return {}


def check_model_fits(series: frame.SeriesSet, req: TrainRequest, arch: Architecture, **record) -> None:
    """Refuse, before the windows are cut and the network trained, data whose model the model file
    cannot hold (too many series, scalers too large, a header beyond its limits): the header train
    will write, with every epoch run and the longest losses, must pass modelfile.check_fits (the
    checks of save). record: what model_of takes besides the network, result and digests."""
    from lstm_cli import memory

    n = len(series.ids)
    split = (f"split the data by {series.id_col!r} and train one model per part" if series.id_col
             else "train on fewer columns")
    if req.scaling in ("auto", None):  # decided later, on the windows: the longest name each can take
        req = replace(req, scaling="seasonal" if req.scaling == "auto" else "series")
    if n > modelfile.MAX_SERIES:
        raise DataError(f"{shown(series.source)}: {n:,} series, more than the {modelfile.MAX_SERIES:,} a model file can "
                        f"hold; {split}")
    epochs = req.train.epochs
    longest = -1.2345678901234567e-300  # the longest text a loss takes in the header
    regressors = len(data_spec(series, req, lookback=1, season=1).regressors)
    placeholder = ((longest,) * len(req.targets),) * regressors, (longest,) * len(req.targets) * bool(regressors)
    model = model_of(_Unbuilt(arch), series, req, result=TrainResult(epochs, epochs, [longest] * epochs,
                                                                     [longest] * epochs),
                     output_scale=0.12345678901234568 if req.calibrate == "val" else None, data_sha256="0" * 64,
                     warm_sha="0" * 64 if req.warm_start else None, known_effect=placeholder, **record)
    header, _ = model.to_file_parts()
    shapes = modelfile.expected_arrays(header["arch"], n)
    payload = modelfile.payload_bytes(shapes)
    if payload > modelfile.MAX_PAYLOAD_BYTES:
        raise DataError(f"{shown(series.source)}: the model of {n:,} series x {arch.input_size} columns would hold "
                        f"{memory.fmt(payload)} of arrays, more than the {memory.fmt(modelfile.MAX_PAYLOAD_BYTES)} "
                        f"a model file can hold; {split}, or use fewer --features")
    try:
        modelfile.check_fits(header, shapes)
    except ValueError as e:
        raise DataError(f"{shown(series.source)}: a model file cannot hold the model of this data ({e}); {split}, or "
                        "shorten its longest ids and column names") from None


def check_warm_start(old: Forecaster, series: frame.SeriesSet, req: TrainRequest) -> list[str]:
    """A fine-tune must keep the old model's contract: same columns, time kind, frequency and
    horizon, and data that continues (not precedes) what the old model was trained on. The old
    model's architecture, lookback, quantiles and scaling are kept; returns notes for the user."""
    spec = old.spec
    where = f"--warm-start {shown(req.warm_start)}"
    members = len(old.members) if isinstance(old, Ensemble) else 1
    if req.ensemble > 1 and req.ensemble != members:  # (1, the default, keeps the old model's members)
        raise UsageError(f"{where}: a warm start fine-tunes the old model's {members} network"
                         f"{'s' if members > 1 else ''} as they are; --ensemble {req.ensemble} cannot change their "
                         f"number: drop --ensemble, or train from scratch without --warm-start")
    given = resolve_known_inputs(series, req)  # --calendar and --holidays as given (None: the old model's)
    plain = lambda v: (", ".join(v) or "none") if isinstance(v, tuple) else repr(v)  # noqa: E731
    for what, ours, theirs in (("targets", tuple(req.targets), spec.targets),
                               ("features", tuple(req.features), spec.features),
                               ("future features", tuple(req.future_features), spec.future_features),
                               ("calendar", given.calendar if req.calendar is not None else spec.calendar,
                                spec.calendar),
                               ("holidays", given.holidays if req.holidays is not None else spec.holidays,
                                spec.holidays),
                               ("time column", series.time_col, spec.time_col),
                               ("id column", series.id_col, spec.id_col),
                               ("time kind", series.time_kind, spec.time_kind),
                               ("horizon", req.horizon, spec.horizon)):
        if ours != theirs:
            raise DataError(f"{where}: {what} {plain(theirs)} in the old model, {plain(ours)} here; warm start needs "
                            f"the same contract (train from scratch without --warm-start to change it)")
    if spec.freq and series.freq and spec.freq != series.freq and not frame._same_grid(spec.freq, series.freq):
        raise DataError(f"{where}: frequency {spec.freq} in the old model, {series.freq} in {shown(series.source)}")
    try:  # also without a frequency on either side (integer times, irregular or gappy data)
        frame.check_model_step(series, spec.time_kind, spec.freq, spec.step)
        frame.check_model_phase(series, spec.freq, old.ids, old.last_time)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    ends = series.times[series.starts[1:] - 1]
    known = dict(zip(old.ids, old.last_time, strict=True))
    for sid, end in zip(series.ids, ends, strict=True):
        if sid in known and end < known[sid]:
            fmt = lambda t: frame.format_times(np.asarray([t], dtype=np.int64), series.time_kind, series.freq)[0]  # noqa: E731
            who = f"series {sid!r}" if series.id_col else "the data"
            raise DataError(f"{shown(series.source)}: {who} ends at {fmt(int(end))}, before the old model's training "
                            f"data did ({fmt(int(known[sid]))}); warm start continues a model with newer data")
    notes = []
    new_ids = [sid for sid in series.ids if sid not in known]
    if new_ids:
        notes.append(f"warm start: {len(new_ids)} series new to the model ({', '.join(map(repr, new_ids[:3]))}"
                     f"{' ...' if len(new_ids) > 3 else ''}) get scalers fitted on their own training rows")
    return notes


def train_from_csv(req: TrainRequest, *, on_event: Callable[[str, object], None] = lambda kind, x: None,
                   should_stop: Callable[[], str | None] | None = None, resume: bool = False,
                   max_input_bytes: int = 2_000_000_000, intervals: tuple[float, ...] | None = (),
                   calibration_windows: int | None = None) -> tuple[Forecaster | None, TrainResult]:
    """Read, check, window, scale, train and save atomically to req.out. on_event receives
    ('data', info dict), ('resume', {'epoch' (0: none), 'epochs', 'path', 'problem' (why a damaged
    checkpoint was not used, or None)}), ('epoch', EpochReport), ('fitted', TrainResult),
    ('saved', path); before each slow step ('phase', {'phase': 'reading' (+ 'source'), 'windows'
    (+ 'series', 'rows') or 'compiling'}), and inside long epochs ('batch', {'epoch', 'epochs',
    'batch', 'batches', 'seconds'}) at most every train.BATCH_REPORT_SECONDS.

    The caller holds atomic.output_lock(req.out) for the whole call (the CLI does): after every
    epoch a checkpoint is written atomically beside req.out (checkpoint.py), and removed once the
    model is saved. With `resume`, training continues from that checkpoint when there is one
    (DataError if it belongs to other data or settings; a damaged one is reported and ignored).
    Stopped by a signal (should_stop returned 'signal') or before the first epoch finished:
    nothing is saved, req.out is left as it was, and (None, result) is returned. intervals: the
    levels (percent) whose conformal quantiles the model file stores (lstm_cli.intervals: absolute
    errors for point models, CQR for quantile models), None for the model's default
    (intervals.train_levels: known only after a warm start loaded the old model's quantiles), from
    calibration_windows origins (None: those inside the validation rows)."""
    from lstm_cli import checkpoint
    from lstm_cli import intervals as conformal

    atomic.check_output_path(req.out, inputs=() if req.data == "-" else (req.data,))
    check_column_roles(req)
    if not req.warm_start:  # a warm start's quantiles are the old model's: its levels are resolved after loading it
        intervals = _interval_levels(intervals, req.quantiles, calibration_windows, on_event)
        conformal.check_size(intervals, req.horizon, len(req.targets))
    if resume and req.ensemble > 1:
        raise UsageError(f"--resume continues a checkpoint, and --ensemble {req.ensemble} writes none (its members "
                         "train at once); rerun without --resume")
    if not req.warm_start:  # a warm start keeps the old model's strategy (checked in train_on_series)
        _check_strategy(req)
        check_model_limits(req)  # before reading: what the model file cannot hold is refused now, not at save
        steps = 1 if req.strategy == "recursive" else req.horizon  # before reading: the network alone may not fit
        check_training_memory(req, len(req.targets) + len(req.features),
                              steps * len(req.targets) * max(1, len(req.quantiles)), req.lookback or 1,
                              req.threads or default_threads())
    ckpt_path = checkpoint.checkpoint_path_for(req.out)
    found = checkpoint.claim(ckpt_path)  # a file there that lstm did not write: refused, never replaced
    atomic.check_output_path(ckpt_path)
    checkpoint.remove_stale_temps(req.out)  # of a killed run (we hold the lock)
    # without --resume a stopped run's checkpoint is ignored, said so, and kept until this run's
    # first checkpoint replaces it: a rerun that forgot --resume can be stopped and rerun with it
    ckpt_notes = [] if resume or found is None else [checkpoint.kept_note(ckpt_path, found)]
    on_event("phase", {"phase": "reading", "source": "<stdin>" if req.data == "-" else req.data})
    # a model with future features trains on the observed rows of a file that also holds its future
    # rows (predict's "future frame"): they are split off and said so, not mistaken for missing values
    series = frame.read_series(req.data, targets=req.targets, features=req.features,
                               future_features=req.future_features, time_col=req.time_col, id_col=req.id_col,
                               sep=req.sep, freq=req.freq, missing=req.missing, max_bytes=max_input_bytes,
                               future_rows="split" if req.future_features else "no")
    if series.future is not None and len(series.future.times):
        ckpt_notes = ckpt_notes + [f"{shown(series.source)}: {len(series.future.times)} future rows (the target "
                                   "empty after the last value) are not trained on"]
        series = replace(series, future=None)
    frame.check_given_freq(series, req.freq)
    frame.check_forecast_fits(series, req.horizon)  # a model that could not forecast its own data: refused now
    if calibration_windows is not None:  # before the epochs, with the lookback known so far (again after them)
        conformal.calibration_origins(np.diff(series.starts), req.horizon, longest_lookback(series, req), req.val_frac,
                                      calibration_windows)
    old = None
    warm_notes: list[str] = ckpt_notes
    if req.warm_start:
        old, _ = load_model(req.warm_start, req.threads)
        warm_notes += check_warm_start(old, series, req)
        req = replace(req, hidden=old.network.arch.hidden_size, layers=old.network.arch.num_layers,
                      cell=old.network.arch.cell, dtype=old.network.arch.dtype, quantiles=old.spec.quantiles,
                      scaling=old.spec.scaling, lookback=old.spec.lookback, strategy=old.spec.strategy,
                      calendar=old.spec.calendar, holidays=old.spec.holidays)
        if intervals is None and getattr(old, "intervals", None):  # a nightly fine-tune keeps the levels it gave
            intervals = tuple(float(v) for v in old.intervals["levels"])
        intervals = _interval_levels(intervals, req.quantiles, calibration_windows, on_event)  # the old model's grid
        conformal.check_size(intervals, req.horizon, len(req.targets))
    model, result = train_on_series(series, req, old=old, notes=warm_notes, on_event=on_event,
                                    should_stop=should_stop, checkpoint_path=ckpt_path, resume=resume, saving=True)
    if model is not None and intervals:
        try:
            conformal.attach(model, conformal.calibrate(model, series, intervals, val_frac=req.val_frac,
                                                        origins=calibration_windows))
        except conformal.NotCalibrated as e:  # the model itself is good: it is saved without intervals
            on_event("note", f"{shown(series.source)}: no intervals: {e}")
    if model is not None:
        header, arrays = model.to_file_parts()
        modelfile.save(req.out, header, arrays)
        on_event("saved", req.out)
        checkpoint.remove(ckpt_path)
    return model, result


def _interval_levels(asked, quantiles, calibration_windows, on_event) -> tuple[float, ...]:
    """The levels train calibrates for a model with these quantiles (intervals.train_levels), and
    --calibration-windows refused when there are none (a quantile grid without a pair q, 1 - q).
    A grid of more central levels than a table holds gets none by default, with a note (a dense
    grid approximates a distribution; the user picks the levels a planner needs)."""
    from lstm_cli import intervals as conformal

    levels = conformal.train_levels(asked, quantiles)
    if asked is None and len(levels) > conformal.MAX_LEVELS:
        on_event("note", f"--quantiles: the grid holds {len(levels)} central levels, more than the "
                         f"{conformal.MAX_LEVELS} a model file's intervals hold, so none are calibrated; give "
                         "--intervals LEVELS (levels of the grid, e.g. 80,95) for some")
        levels = ()
    if calibration_windows is not None and not levels:
        why = (f"the quantile grid {','.join(f'{q:g}' for q in quantiles)} has no pair q, 1 - q to calibrate; leave "
               "it out, or add a pair (0.1,0.9: 80%) to --quantiles" if quantiles and not conformal.grid_levels(quantiles) else
               "this run calibrates none; leave it out or give --intervals")
        raise UsageError(f"--calibration-windows calibrates intervals, and {why}")
    return levels


def load_model(path: str, threads: int | None = None) -> tuple[Forecaster, dict]:
    header, arrays = modelfile.load(path)
    return forecaster_of(header, arrays, threads=threads), header


def read_like_model(data: str, spec: DataSpec, *, sep: str = ",", missing: str = "interpolate",
                    max_bytes: int = 2_000_000_000, stdin=None, check_step: bool = True,
                    future_path: str | None = None) -> frame.SeriesSet:
    """DATA read with the model's columns and frequency: the one reader of predict, evaluate,
    validate --model and the dask partitions. DATA must step like the model (check_step; validate
    reports it as a check of its own).

    A model with future features takes the rows after each series' last target (the target empty)
    as its future rows (series.future), or, with future_path (predict --future FILE), that file's
    rows; a model without them refuses such rows, naming them."""
    if future_path == "-" and data == "-":
        raise UsageError("DATA and --future cannot both be read from stdin; give one of them as a file")
    if future_path is not None and not spec.future_features:
        raise UsageError(f"--future {shown(future_path)}: this model reads no future features"
                         f"{' (its calendar inputs come from the timestamps)' if spec.has_known else ''}; "
                         "leave --future out")
    try:
        series = frame.read_series(data, targets=spec.targets, features=spec.features,
                                   future_features=spec.future_features, time_col=spec.time_col,
                                   id_col=spec.id_col, sep=sep, freq=spec.freq, missing=missing,
                                   max_bytes=max_bytes, stdin=stdin,
                                   future_rows="split" if spec.future_features else "refuse")
    except FreqNotApplicable:  # the frequency is the model's, not an option the user can leave out
        raise DataError(f"{'<stdin>' if data == '-' else data}: the time column {spec.time_col!r} holds integers, "
                        f"but the model was trained on dates (freq {spec.freq}); give dates, or retrain on "
                        "this data") from None
    except DataError as e:  # off the model's grid: "pass the right --freq" cannot apply either
        if not hasattr(e, "for_model"):
            raise
        raise DataError(e.for_model) from None
    if check_step:
        frame.check_model_step(series, spec.time_kind, spec.freq, spec.step)
    if future_path is not None:
        if series.future is not None and len(series.future.times):
            raise DataError(f"{shown(series.source)}: holds future rows (the target empty after the last value) and "
                            f"--future {shown(future_path)} gives them too; give them in one place")
        future = frame.read_future_file(future_path, future_features=spec.future_features, time_col=spec.time_col,
                                        id_col=spec.id_col, sep=sep, freq=spec.freq, max_bytes=max_bytes,
                                        time_kind=spec.time_kind)
        series = replace(series, future=future)
    return series


def check_freshness(series: frame.SeriesSet, model: Forecaster, max_age: float | None,
                    now_ns: int | None) -> list[str]:
    """Refuse a stalled feed (newest row older than max_age seconds before now); note series
    that end before the model's own training data did (their forecast starts in the past)."""
    ends = series.times[series.starts[1:] - 1]
    fmt = lambda t: frame.format_times(np.asarray([t], dtype=np.int64), series.time_kind, series.freq)[0]  # noqa: E731
    if max_age is not None:
        if series.time_kind != "datetime":
            raise UsageError(f"--max-age needs dates, but {series.time_col!r} in {shown(series.source)} holds integers")
        now = now_ns if now_ns is not None else time.time_ns()
        newest = int(ends.max())
        if now - newest > max_age * 1e9:
            age = frame._fmt_duration(round(max_age * 1e9), "datetime")
            second = now - (now % 10**9 if now >= 0 else -(-now % 10**9))  # toward 1970: stays a valid stamp
            raise StaleInputError(f"{shown(series.source)}: the newest row is from {fmt(newest)}, more than --max-age "
                                  f"{age} before {fmt(second)}; is the feed stalled?")
    known = dict(zip(model.ids, model.last_time, strict=True))
    behind = [sid for sid, end in zip(series.ids, ends, strict=True) if sid in known and end < known[sid]]
    if behind:
        who = f"{len(behind)} series ({', '.join(repr(b) for b in behind[:3])}{' ...' if len(behind) > 3 else ''})" \
            if series.id_col else "the data"
        return [f"{shown(series.source)}: {who} ended before the model's training data did; the forecast starts in the past"]
    return []


@dataclass(frozen=True)
class Provenance:
    """What --provenance stamps on every forecast row: the model file's SHA-256 and creation time."""

    model_sha256: str
    model_created: str | None


PROVENANCE_COLUMNS = ("origin", "step", "model_sha256", "model_created")


def value_columns(targets, quantiles) -> list[str]:
    """One forecast column per target, or per target and quantile (sales_q0.1) for quantile models."""
    return [f"{t}_q{q:g}" for t in targets for q in quantiles] if quantiles else list(targets)


def output_column_clash(time_col: str, id_col: str | None, targets, quantiles) -> str | None:
    """Why the forecast's own columns would repeat a name (an id column named like the quantile
    column sales_q0.5 of target sales), or None: a CSV header or JSON record must not hold a name twice."""
    seen: dict[str, str] = {}
    named = [(time_col, "the time column"), (id_col, "the id column")]
    for t in targets:
        named += ([(f"{t}_q{q:g}", f"the forecast of {t!r} at quantile {q:g}") for q in quantiles] if quantiles
                  else [(t, f"the forecast of {t!r}")])
    for name, what in named:
        if name is None:
            continue
        if name in seen:
            return f"the output column {name!r} would be both {seen[name]} and {what}"
        seen[name] = what
    return None


def provenance_columns(data_columns: list[str]) -> list[str]:
    """origin, step, model_sha256 and model_created, each prefixed with 'lstm_' (again, until the
    name is free) when the forecast's own columns use it: an id column named 'origin' keeps its
    name and the forecast origin goes to 'lstm_origin', so no name is ever written twice."""
    taken = set(data_columns)
    out = []
    for name in PROVENANCE_COLUMNS:
        while name in taken:
            name = "lstm_" + name
        taken.add(name)
        out.append(name)
    return out


def forecast_columns(spec: DataSpec, provenance: bool = False) -> list[str]:
    """Output columns: time, id (if any), provenance columns (if asked, see provenance_columns),
    one value column per target (per target and quantile for quantile models). All distinct:
    a model whose own columns clash (made before train refused that) is a ModelFileError."""
    clash = output_column_clash(spec.time_col, spec.id_col, spec.targets, spec.quantiles)
    if clash:
        raise ModelFileError(f"the model's forecast columns clash: {clash}; retrain it with the column renamed")
    data = [spec.time_col] + ([spec.id_col] if spec.id_col else [])
    values = value_columns(spec.targets, spec.quantiles)
    return data + (provenance_columns(data + values) if provenance else []) + values


def check_forecast_memory(series: frame.SeriesSet, spec: DataSpec, h: int, *, given: bool,
                          provenance: bool) -> None:
    """Refuse, before forecasting, a forecast whose arrays and output rows cannot fit in memory
    (n_series x horizon x outputs, the roll-forward past the trained horizon included): an
    explicit --horizon is the option's doing (UsageError), the trained one the data's."""
    from lstm_cli import memory

    n = len(series.ids)
    values = len(spec.targets) * max(1, len(spec.quantiles))
    origins = len(np.unique(series.times[series.starts[1:] - 1]))
    need = (memory.forecast_bytes(n, h, values, spec.lookback, len(spec.columns))
            + memory.output_rows_bytes(n * h, values, spec.id_col is not None, provenance, origins * h))
    memory.require(need, f"{shown(series.source)}: forecasting {n:,} series x {h:,} steps ({n * h:,} rows)",
                   "forecast fewer steps (--horizon) or fewer series at a time (split the input, or "
                   "--engine dask)", UsageError if given else DataError)


def horizon_notes(spec: DataSpec, h: int) -> list[str]:
    if h > spec.horizon:
        return [f"horizon {h} > trained horizon {spec.horizon}: steps after {spec.horizon} are recursive"]
    return []


def origin_stamps(series: frame.SeriesSet, origins: np.ndarray, which: np.ndarray, freq: str | None,
                  n: int) -> np.ndarray:
    """The n stamps after each distinct forecast origin (U, n): computed once per origin (a nightly
    run has one), never once per series. which: the origin of each series, to name one in errors."""
    table = np.empty((len(origins), n), dtype=np.int64)
    for u, t in enumerate(origins):
        try:
            table[u] = frame.future_times(int(t), series.step, freq, series.time_kind, n)
        except DataError as e:  # past 2262 or int64: name the (first) series that ends there
            who = f"series {series.ids[int(np.argmax(which == u))]!r}" if series.id_col else "the series"
            raise DataError(f"{shown(series.source)}: {who}: {e}") from None
    return table


def future_inputs(series: frame.SeriesSet, spec: DataSpec, h: int, stamps: np.ndarray) -> FutureInputs:
    """What a model with inputs known in advance reads of the steps it forecasts (spec.future_steps(h)
    of them): the future features from the future rows of DATA or --future (frame.future_block, which
    refuses missing, short or off-grid rows), or, for calendar and holiday inputs alone, nothing but
    the steps' stamps."""
    n = spec.future_steps(h)
    if not spec.future_features:
        return FutureInputs(times=stamps, values=np.zeros((len(series.ids), n, 0)))
    future = series.future
    if future is None:
        future = frame.FutureRows(source=series.source, ids=series.ids, starts=np.zeros(len(series.ids) + 1, np.int64),
                                  times=np.zeros(0, np.int64), values=np.zeros((0, len(spec.future_features))),
                                  lines=np.zeros(0, np.int64))
    why = ("the forecast's steps" if n == h else f"the {h} steps asked, rounded up to whole calls of the "
           f"trained horizon {spec.horizon}: each call reads the known inputs of all its steps")
    rows = (f" with the target empty and {', '.join(map(repr, spec.future_features))} filled"
            if future.source == series.source else "")  # (not for a --future file's rows)
    times, values = frame.future_block(series, future, n, spec.freq or series.freq, why=why, rows=rows)
    return FutureInputs(times=times, values=values)


def ignored_future_rows(series: frame.SeriesSet) -> list[str]:
    """A note for --future rows at or before DATA's last time of their series: not used (DATA has
    those times), so a conflict between the two files is at least said."""
    future = series.future
    if future is None or future.source == series.source or not len(future.times):
        return []
    known = {sid: s for s, sid in enumerate(series.ids)}
    owner = np.repeat(np.array([known.get(i, -1) for i in future.ids], dtype=np.int64), np.diff(future.starts))
    last = series.times[series.starts[1:] - 1]
    old = int(np.sum((owner >= 0) & (future.times <= last[np.maximum(owner, 0)])))
    if not old:
        return []
    return [f"--future {shown(future.source)}: {old} row{'s' if old > 1 else ''} at or before DATA's last time of "
            "their series not used (DATA's own rows are)"]


def predict_series(series: frame.SeriesSet, model: Forecaster, *, horizon: int | None = None,
                   provenance: Provenance | None = None, max_age: float | None = None,
                   now_ns: int | None = None, precision: int | None = None, intervals=()
                   ) -> tuple[list[str], dict[str, list], list[str]]:
    """The partition function of both engines: validated rows of whole series (all of the input
    for --engine local, one shuffled partition for --engine dask) -> (columns, rows, notes).
    Forecasts are floats whose repr is as short as the model's precision allows
    (frame.output_floats; `precision`: that many significant digits instead).

    One batched forecast for all series, and the rows are built with array operations: ids are
    repeated, steps tiled, and future stamps computed and formatted once per distinct forecast
    origin (a nightly run has one), never once per series. intervals: levels (or "all") of the
    conformal intervals to add after each target's column (lstm_cli.intervals)."""
    from lstm_cli import intervals as conformal

    spec = model.spec  # series came through read_like_model: its time kind and step are the model's
    levels = conformal.check_request(model, intervals, horizon or spec.horizon) if intervals else ()
    frame.check_model_phase(series, spec.freq, model.ids, model.last_time)  # and on its grid's phase
    stale_notes = check_freshness(series, model, max_age, now_ns)
    h = horizon or spec.horizon
    check_forecast_memory(series, spec, h, given=horizon is not None, provenance=provenance is not None)
    freq = spec.freq or series.freq
    last = series.times[series.starts[1:] - 1]  # (S,)
    origins, which = np.unique(last, return_inverse=True)  # forecast origins; series -> origin
    table = origin_stamps(series, origins, which, freq, spec.future_steps(h) if spec.has_known else h)
    future = future_inputs(series, spec, h, table[which]) if spec.has_known else None
    try:
        values, forecast_notes = model.forecast(series.ids, series.values, series.starts, h, times=series.times,
                                                future=future)  # (S, h, K, nq)
    except DataError as e:  # too few rows: the forecaster does not know the file's name
        raise DataError(f"{shown(series.source)}: {e}; supply more history") from None
    finite = np.isfinite(values).reshape(len(series.ids), -1).all(axis=1)
    if not finite.all():  # values near the float64 limit: the forecast, back in their units, overflows
        who = f"series {series.ids[int(np.argmin(finite))]!r}" if spec.id_col else "the series"
        raise DataError(f"{shown(series.source)}: the forecast of {who} overflows 64-bit floats (its values are too "
                        "large); rescale the column, e.g. to thousands, and retrain")
    n = len(series.ids)
    if future is not None and spec.future_features:  # the stamps of the future rows the user gave
        table, which = np.unique(future.times[:, :h], axis=0, return_inverse=True)
        which = which.reshape(-1)
    stamps = np.empty((len(table), h), dtype=object)  # (U, h) formatted future times
    for u, future_row in enumerate(table):  # once per distinct origin: the output equals per-series formatting
        stamps[u] = frame.format_times(future_row[:h], series.time_kind, freq)
    columns = forecast_columns(spec, provenance is not None)
    rows: dict[str, list] = {spec.time_col: stamps[which].ravel().tolist()}  # (S * h,), series-major
    if spec.id_col:
        rows[spec.id_col] = np.repeat(np.asarray(series.ids, dtype=object), h).tolist()
    notes = list(series.warnings) + stale_notes + ignored_future_rows(series) + forecast_notes
    if provenance is not None:
        origin_col, step_col, sha_col, created_col = columns[len(rows) : len(rows) + 4]
        origin_text = np.array([frame.format_times(origins[u : u + 1], series.time_kind, freq)[0]
                                for u in range(len(origins))], dtype=object)  # (U,)
        rows[origin_col] = np.repeat(origin_text[which], h).tolist()
        rows[step_col] = np.tile(np.arange(1, h + 1), n).tolist()
        rows[sha_col] = [provenance.model_sha256] * (n * h)
        rows[created_col] = [provenance.model_created] * (n * h)
        renamed = [(old, new) for old, new in zip(PROVENANCE_COLUMNS, columns[len(rows) - 4 : len(rows)],
                                                  strict=True) if new != old]
        if renamed:
            many = "s" if len(renamed) > 1 else ""
            notes.append(f"--provenance: the forecast has its own column{many} "
                         f"{', '.join(repr(old) for old, _ in renamed)}, so the provenance column{many} "
                         f"{'are' if many else 'is'} {', '.join(repr(new) for _, new in renamed)}")
    value_cols = columns[len(rows):]
    rounded = frame.output_floats(values, model.network.arch.dtype, precision)  # (S, h, K, nq)
    col = 0
    for k in range(len(spec.targets)):
        for q in range(max(1, len(spec.quantiles))):
            rows[value_cols[col]] = rounded[:, :, k, q].ravel().tolist()
            col += 1
    if levels:
        columns = columns[: len(columns) - len(value_cols)]
        for level, (lo, hi) in conformal.bounds(model, values, series, levels).items():
            lo, hi = frame.output_floats(lo, model.network.arch.dtype, precision), \
                frame.output_floats(hi, model.network.arch.dtype, precision)
            for k, target in enumerate(spec.targets):
                rows[f"{target}_lo{conformal.level_name(level)}"] = lo[:, :, k].ravel().tolist()
                rows[f"{target}_hi{conformal.level_name(level)}"] = hi[:, :, k].ravel().tolist()
        for target in spec.targets:  # a target named like another's bound (y and y_lo80) would overwrite it
            added = value_columns((target,), spec.quantiles) + conformal.interval_columns(target, levels)
            if clash := set(added) & set(columns):
                raise UsageError(f"--intervals: the output column {sorted(clash)[0]!r} would be both an interval "
                                 "bound and another column (of the data or the forecast); leave out --intervals or "
                                 "rename that column")
            columns += added
    return columns, rows, notes


def predict_from_csv(model_path: str, data: str, *, horizon: int | None = None, sep: str = ",",
                     missing: str = "interpolate", threads: int | None = None, max_bytes: int = 2_000_000_000,
                     max_age: float | None = None, now_ns: int | None = None, provenance: bool = False,
                     precision: int | None = None, future_path: str | None = None, intervals=()):
    """Forecast the steps after the end of every series in data (--engine local: the whole input
    is one partition for predict_series). Returns (columns, rows dict, notes, meta) ready for CSV
    or JSON. With provenance every row also carries its forecast origin, step number, and the
    model's SHA-256 and creation time. future_path: predict --future FILE (read_like_model)."""
    t0 = time.perf_counter()
    model, header = load_model(model_path, threads)
    spec = model.spec
    series = read_like_model(data, spec, sep=sep, missing=missing, max_bytes=max_bytes, future_path=future_path)
    model_sha = modelfile.file_sha256(model_path)
    prov = Provenance(model_sha, header.get("created")) if provenance else None
    columns, rows, notes = predict_series(series, model, horizon=horizon, provenance=prov, max_age=max_age,
                                          now_ns=now_ns, precision=precision, intervals=intervals)
    h = horizon or spec.horizon
    notes += horizon_notes(spec, h)
    meta = {"model": model_path, "model_sha256": model_sha,
            "model_created": header.get("created"), "series": len(series.ids), "horizon": h,
            "seconds": round(time.perf_counter() - t0, 4)}
    return columns, rows, notes, meta


def warm_up() -> None:
    """Run every kernel once per dtype on tiny arrays: compiles (or loads from the disk cache)
    exactly the signatures that train and predict use."""
    from lstm_cli import kernels
    from lstm_cli.optim import make_optimizer

    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        net = Network(Architecture(2, 4, 2, 3, dtype), seed=0, threads=2)
        x = rng.normal(size=(16, 5, 2))
        y = rng.normal(size=(16, 3))
        grad = np.empty_like(net.params)
        for dropout, quantiles in ((0.0, None), (0.5, np.array([0.1, 0.5, 0.9]))):
            net.loss_and_grad(x, y, dropout=dropout, rng=rng, quantiles=quantiles, grad_out=grad)
        kernels.clip_grad_norm(grad, 1.0)
        for name in ("adam", "sgd"):
            make_optimizer(name, net.params, lr=1e-3, momentum=0.9).step(grad)
        net.predict(x)


def compile_kernels(network: Network, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, config: TrainConfig,
                    quantiles: np.ndarray | None) -> None:
    """One training step's kernels run on one window, with a throwaway gradient, RNG and optimizer
    (network.params untouched), so that Numba compiles or loads them now, as a phase the progress
    shows, and not silently inside the first batch (up to ~20 s on a first run)."""
    from lstm_cli import kernels
    from lstm_cli.optim import make_optimizer

    dt = network.arch.np_dtype
    grad = np.empty_like(network.params)
    network.loss_and_grad(np.ascontiguousarray(x, dtype=dt), np.ascontiguousarray(y, dtype=dt),
                          dropout=config.dropout, rng=np.random.default_rng(0), quantiles=quantiles, grad_out=grad)
    kernels.clip_grad_norm(grad, config.clip)
    make_optimizer(config.optimizer, network.params.copy(), lr=config.lr, weight_decay=config.weight_decay,
                   momentum=config.momentum).step(grad)
    if len(x_val):
        network.predict(np.ascontiguousarray(x_val, dtype=dt))


def train_on_series(series: frame.SeriesSet, req: TrainRequest, *, old: Forecaster | None = None,
                    notes: list[str] | tuple[str, ...] = (),
                    on_event: Callable[[str, object], None] = lambda kind, x: None,
                    should_stop: Callable[[], str | None] | None = None, checkpoint_path: str | None = None,
                    resume: bool = False, saving: bool = False) -> tuple[Forecaster | None, TrainResult]:
    """Train a model on series already in memory: the checks, the scaler fitted on the training
    rows, the windows, the validation split, the network and the training loop. train_from_csv
    reads and saves around it; `evaluate --refit` calls it once per backtest origin. Nothing is
    written unless checkpoint_path is given (train_from_csv: a checkpoint after every epoch,
    resumed from with `resume`). old: the model a warm start continues (req already carries its
    architecture), whose weights and known series' scalers are kept. on_event as train_from_csv's.
    saving (train_from_csv): refuse, before the windows, data whose model the model file cannot hold.
    Returns (None, result) when stopped by a signal or before the first epoch finished."""
    from lstm_cli import checkpoint

    if req.warm_start and old is None:
        raise UsageError("train_on_series: a warm start needs the old model (old=)")
    if req.ensemble > 1 or isinstance(old, Ensemble):
        return train_ensemble(series, req, old=old, notes=notes, on_event=on_event, should_stop=should_stop,
                              saving=saving)
    _check_strategy(req)
    check_model_limits(req)  # again: a warm start's and a refit's settings come from a model
    clash = output_column_clash(series.time_col, series.id_col, req.targets, req.quantiles)
    if clash:
        raise UsageError(f"{shown(series.source)}: {clash}; rename that column in the data")
    lengths = np.diff(series.starts)
    horizon = req.horizon
    steps = 1 if req.strategy == "recursive" else horizon  # what one window's targets cover
    targets_what = "one step (recursive)" if req.strategy == "recursive" else f"horizon {horizon}"
    shortest = int(lengths.min())
    val_rows = windows.val_rows_for(shortest, req.val_frac, horizon)
    season = season_length(series.freq, series.step, series.time_kind, series.times[: series.starts[1]])
    lookback = req.lookback or default_lookback(horizon, season, shortest, val_rows)
    _check_seasonal(req, season, lookback)
    if season > limits.MAX_STEPS:  # longer than any lookback: no window holds it, so the model has none
        season = 1
    _check_lengths(series, lookback + steps + val_rows + MIN_TRAIN_WINDOWS - 1,
                   f"lookback {lookback} + {targets_what} + {val_rows} validation rows "
                   f"+ {MIN_TRAIN_WINDOWS - 1} more for {MIN_TRAIN_WINDOWS} training windows")
    n_targets = len(req.targets)
    req = resolve_known_inputs(series, req)
    spec = data_spec(series, req, lookback=lookback, season=season)
    n_inputs = len(spec.input_columns)
    arch = Architecture(input_size=n_inputs, hidden_size=req.hidden, num_layers=req.layers,
                        output_size=steps * n_targets * max(1, len(req.quantiles)), dtype=req.dtype, cell=req.cell)
    threads = req.threads or default_threads()
    if saving:  # before the windows and the epochs: the model file must be able to hold the result
        no_scaler = np.empty((0, n_inputs))  # the scalers' shapes come from the series count
        check_model_fits(series, req, arch, lookback=lookback, season=season, threads=threads, loc=no_scaler,
                         scale=no_scaler)
    on_event("phase", {"phase": "windows", "series": len(series.ids), "rows": int(lengths.sum())})
    train_rows = training_rows(lengths, req.val_frac, horizon)
    inputs = spec.inputs_of(series.values, series.times)  # (N, n_inputs): derived columns and flag added
    loc, scale = scaling.fit(inputs, series.starts, train_rows)
    if spec.has_known:
        spec.unscaled(loc, scale)
    if old is not None:  # known series keep the scaler the network was trained with
        known = {sid: n for n, sid in enumerate(old.ids)}
        for s_new, sid in enumerate(series.ids):
            if sid in known:
                loc[s_new], scale[s_new] = old.loc[known[sid]], old.scale[known[sid]]
    scaled = scaling.transform(inputs, series.starts, loc, scale)
    del inputs
    known_effect = ((), ())
    if len(spec.regressors):  # the network learns what the regressors' linear effect leaves (fit_known_effect)
        known_effect = ((old.spec.known_coef, old.spec.known_intercept) if old is not None
                        else fit_known_effect(scaled, series.starts, train_rows, spec))
        fitted = replace(spec, known_coef=known_effect[0], known_intercept=known_effect[1])
        scaled[:, :n_targets] -= fitted.known_effect(scaled)
    chosen_by = req.scaling or "default"
    if req.scaling is None:
        req = replace(req, scaling=scaling_for_size(train_rows, lookback, steps))
    if req.scaling == "auto":
        mode, _ = windows.choose_scaling(scaled, series.starts, train_rows, n_targets, steps, season, lookback)
        req = replace(req, scaling=mode)
    sample = sample_of_series(len(series.ids), req.sample_series, req.train.seed)
    if sample is not None:  # every series keeps its scaler; only the sample's windows train
        scaled, window_starts = take_series(scaled, series.starts, sample)
    else:
        window_starts = series.starts
    n_windows = int(np.maximum(0, np.diff(window_starts) - lookback - steps + 1).sum())
    sequence = lookback + (steps if spec.has_known else 0)  # the forecast steps' rows are read too
    check_training_memory(req, n_inputs, steps * n_targets * max(1, len(req.quantiles)), sequence,
                          req.threads or default_threads(), n_windows)
    # recursive: one-step windows, validated on the same last rows of each series as a direct model
    w = windows.make_windows(scaled, window_starts, n_targets, lookback, steps, req.val_frac,
                             scaling=req.scaling, season=season, val_horizon=horizon,
                             n_past=spec.n_past if spec.has_known else None)
    del scaled
    if len(w["x_train"]) == 0:
        raise DataError(f"{shown(series.source)}: {shortest} rows leave no training window for lookback {lookback} "
                        f"+ {targets_what} after the validation part; lower --val-frac or --lookback")
    quantiles = np.asarray(req.quantiles, dtype=np.float64) if req.quantiles else None
    nq = max(1, len(req.quantiles))
    y_train, y_val = w["y_train"], w["y_val"]
    if quantiles is not None:  # one output column per (step, target, quantile)
        y_train, y_val = np.repeat(y_train, nq, axis=1), np.repeat(y_val, nq, axis=1)
        quantiles = np.tile(quantiles, steps * n_targets)
    if old is not None:
        network = Network(arch, old.network.params.copy(), threads=threads)
        if 0.0 < old.spec.blend < 1.0:  # train on from the network's own forecast, not its blended share
            scale_head(network, 1.0 / (1.0 - old.spec.blend))
    else:
        network = Network(arch, seed=req.train.seed, forget_bias=req.forget_bias, head_init=req.head_init,
                          threads=threads)
    on_event("data", {"series": len(series.ids), "rows": int(lengths.sum()), "lookback": lookback,
                      "horizon": horizon, "season": season, "freq": series.freq, "scaling": req.scaling,
                      "scaling_option": chosen_by, "sampled": None if sample is None else len(sample),
                      "train_windows": len(w["x_train"]), "val_windows": len(w["x_val"]),
                      "parameters": network.layout.size,
                      "warnings": tuple(series.warnings) + tuple(notes) + constant_future_features(series, spec)})
    data_sha256 = data_fingerprint(series)
    warm_sha = modelfile.file_sha256(req.warm_start) if req.warm_start else None
    state, writer = None, None
    if checkpoint_path is not None:
        settings = checkpoint.settings_for(req, lookback=lookback, threads=threads, time_col=series.time_col,
                                           id_col=series.id_col, freq=series.freq, warm_start_sha256=warm_sha)
        writer = checkpoint.Writer(checkpoint_path, settings=settings, data_sha256=data_sha256)
        if resume:
            state, problem = checkpoint.resume_state(checkpoint_path, settings=settings, data_sha256=data_sha256,
                                                     params=network.layout.size, dtype=network.arch.dtype)
            on_event("resume", {"epoch": state.epoch if state else 0, "epochs": req.train.epochs,
                                "path": checkpoint_path, "problem": problem})
    on_event("phase", {"phase": "compiling"})
    compile_kernels(network, w["x_train"][:1], y_train[:1], w["x_val"][:1], req.train, quantiles)
    result = fit(network, w["x_train"], y_train, w["x_val"], y_val, req.train, quantiles=quantiles,
                 on_epoch=lambda r: on_event("epoch", r),
                 on_batch=lambda epoch, done, batches, seconds: on_event(
                     "batch", {"epoch": epoch, "epochs": req.train.epochs, "batch": done, "batches": batches,
                               "seconds": seconds}),
                 should_stop=should_stop, resume=state, on_state=writer)
    on_event("fitted", result)
    if result.epochs_run == 0 or result.stopped_by == "signal":
        return None, result
    output_scale = None
    if req.calibrate == "val" and quantiles is None and len(w["x_val"]):
        output_scale = calibrate_head(network, w["x_val"], y_val)
    if _blend_of(req):
        scale_head(network, 1.0 - _blend_of(req))
    model = model_of(network, series, req, lookback=lookback, season=season, threads=threads, loc=loc, scale=scale,
                     result=result, output_scale=output_scale, data_sha256=data_sha256, warm_sha=warm_sha,
                     known_effect=known_effect)
    return model, result


BLEND_DEFAULT = 0.5


LOOKBACK_FACTORS = (1.0, 1.5, 2.0)
MEMBER_SCALINGS = ("level", "seasonal", "series")


def member_plan(req: TrainRequest, series: frame.SeriesSet) -> list[TrainRequest]:
    """The requests of an ensemble's members: member i sees lookback LOOKBACK_FACTORS[i % 3] x the
    model's (cut to what the shortest series allows), anchor MEMBER_SCALINGS[(i + i // 3) % 3]
    (starting from --scaling; "seasonal" falls back to "level" where the season does not fit the
    window) and seed + i: every 3 members cover the three lookbacks and the three anchors, every 9
    each pair. What differs is what they see: seeds alone barely help (docs/accuracy.md)."""
    lengths = np.diff(series.starts)
    steps = 1 if req.strategy == "recursive" else req.horizon
    shortest = int(lengths.min())
    val_rows = windows.val_rows_for(shortest, req.val_frac, req.horizon)
    season = season_length(series.freq, series.step, series.time_kind, series.times[: series.starts[1]])
    base = req.lookback or default_lookback(req.horizon, season, shortest, val_rows)
    room = min(limits.MAX_STEPS, shortest - val_rows - steps - MIN_TRAIN_WINDOWS + 1)
    resolved = req.scaling
    if req.scaling is None:  # the default follows the data size; member 0 (that model) resolves it the same way
        resolved = scaling_for_size(training_rows(lengths, req.val_frac, req.horizon), base, steps)
    first = MEMBER_SCALINGS.index(resolved) if resolved in MEMBER_SCALINGS else 0
    plan = []
    for i in range(req.ensemble):
        lookback = base if i == 0 else max(base, min(int(round(LOOKBACK_FACTORS[i % 3] * base)), room))
        scaling = req.scaling if i == 0 else MEMBER_SCALINGS[(first + i + i // 3) % 3]
        if i and scaling == "seasonal" and not 1 < season <= lookback:
            scaling = "level"
        plan.append(replace(req, ensemble=1, lookback=lookback, scaling=scaling,
                            train=replace(req.train, seed=req.train.seed + i)))
    return plan


def concurrent_members(series: frame.SeriesSet, plan: list[TrainRequest], most: int) -> int:
    """How many members train at once: up to `most` (the threads they share), fewer when that many
    members' windows (each member cuts its own) would not fit in half the memory available. Only
    the parallelism changes, never a member's threads, so the model file does not depend on it."""
    from lstm_cli import memory

    most = max(1, min(most, len(plan)))
    free = memory.available_bytes()
    if free is None or most == 1:
        return most
    lengths = np.diff(series.starts)
    longest = max(p.lookback for p in plan)
    steps = 1 if plan[0].strategy == "recursive" else plan[0].horizon
    n_windows = int(np.maximum(0, lengths - longest - steps + 1).sum())
    one = memory.windows_bytes(n_windows, longest + steps, len(series.columns) + 8, steps * len(plan[0].targets),
                               4 if plan[0].dtype == "float32" else 8)
    return max(1, min(most, int(free // 2 // max(one, 1))))


def train_ensemble(series: frame.SeriesSet, req: TrainRequest, *, old=None, notes=(), on_event=lambda kind, x: None,
                   should_stop=None, saving: bool = False) -> tuple[Ensemble | None, TrainResult]:
    """Train the members of member_plan (or, for a warm start, the old ensemble's members on their
    own settings), in parallel threads when there are cores for it (the kernels release the GIL;
    each member's threads are fixed by --threads, so the file is the same however they interleave).
    Member 0 reports its phases and epochs as a single model would; each finished member sends
    ('member', {'index', 'members', 'lookback', 'scaling', 'result'}). No per-epoch checkpoint."""
    from concurrent.futures import ThreadPoolExecutor

    if old is not None:
        olds = old.members if isinstance(old, Ensemble) else [old]
        plan = [replace(req, ensemble=1, lookback=m.spec.lookback, scaling=m.spec.scaling,
                        train=replace(req.train, seed=req.train.seed + i)) for i, m in enumerate(olds)]
    else:
        olds = [None] * req.ensemble
        plan = member_plan(req, series)
    threads = req.threads or default_threads()
    member_threads = max(1, threads // max(1, min(len(plan), threads)))  # fixed by --threads: reproducible
    workers = concurrent_members(series, plan, threads // member_threads)

    def train_member(i: int):
        def forward(kind, payload):  # member 0 speaks for the run; "fitted" once all members are
            if i == 0 and kind != "fitted":
                on_event(kind, payload)

        member_req = replace(plan[i], threads=member_threads)
        model, result = train_on_series(series, member_req, old=olds[i], notes=notes if i == 0 else (),
                                        on_event=forward, should_stop=should_stop, saving=saving)
        on_event("member", {"index": i + 1, "members": len(plan), "lookback": plan[i].lookback,
                            "scaling": model.spec.scaling if model is not None else plan[i].scaling,
                            "result": result})
        return model, result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(train_member, range(len(plan))))
    models = [m for m, _ in done]
    # --time-limit can run out before the last members (they start later) finish an epoch: the
    # members before the first of those are kept (the plan's first `kept`: a refit trains as many),
    # not thrown away with them; a signal, or no epoch of member 0, saves nothing, as for one model
    kept = next((i for i, m in enumerate(models) if m is None), len(models))
    signalled = [r for _, r in done if r.stopped_by == "signal"]
    if kept == 0 or signalled:
        result = signalled[0] if signalled else done[0][1]
        on_event("fitted", result)
        return None, result
    result = done[0][1]
    on_event("fitted", result)
    models = models[:kept]
    for m in models:  # the file records the ensemble's request; each member its own lookback and anchor
        m.training["params"]["ensemble"] = len(models)
        m.training["params"]["threads_per_member"] = member_threads
        m.training["threads"] = threads  # what a refit splits again the same way
    return (Ensemble(models) if len(models) > 1 else models[0]), result


def _blend_of(req: TrainRequest) -> float:
    """The seasonal-naive weight a model gets: none for quantile models (they keep their trained
    spread), else --blend (BLEND_DEFAULT). With future features the partner is seasonal naive of what
    their fitted effect leaves, plus that effect (fit_known_effect), so it sees them too."""
    if req.quantiles:
        return 0.0
    return BLEND_DEFAULT if req.blend is None else float(req.blend)


def resolve_known_inputs(series: frame.SeriesSet, req: TrainRequest) -> TrainRequest:
    """req with its calendar option resolved to components for this data (calendar.resolve) and its
    holidays code checked: what the model file records and predict derives again."""
    from lstm_cli import calendar

    option = req.calendar if isinstance(req.calendar, (str, tuple)) else "none"
    if isinstance(option, str) and option not in ("auto", "none"):
        option = calendar.parse_option(option)
    lengths = np.diff(series.starts)
    spans = series.times[series.starts[1:] - 1] - series.times[series.starts[:-1]]
    components = calendar.resolve(option, step=series.step, time_kind=series.time_kind,
                                  span=int(spans[np.argmin(lengths)]) if len(spans) else 0)
    holidays = req.holidays
    if holidays is not None:
        if series.time_kind != "datetime":
            raise UsageError(f"--holidays needs dates, but {series.time_col!r} in {shown(series.source)} holds "
                             "integers; leave --holidays out")
        holidays = calendar.check_holidays(holidays)
    resolved = replace(req, calendar=tuple(components), holidays=holidays)
    if components or holidays or req.future_features:  # the input columns must be named once (info, export)
        derived = set(calendar.column_names(components, holidays)) | {"horizon_flag"}
        for col in tuple(req.targets) + tuple(req.features) + tuple(req.future_features):
            if col in derived:
                raise UsageError(f"column {col!r} of {shown(series.source)} has the name of an input lstm derives "
                                 f"({'the horizon flag' if col == 'horizon_flag' else 'from --calendar/--holidays'}); "
                                 "rename the column")
    return resolved


KNOWN_RIDGE = 1e-3  # the ridge penalty of fit_known_effect, per training row


def constant_future_features(series: frame.SeriesSet, spec: DataSpec) -> tuple[str, ...]:
    """Notes for future features that never change in any series' history: their
    effect cannot be learned, so values other than that one at predict time change nothing
    reliable."""
    notes = []
    first = series.starts[:-1]
    for j, name in enumerate(spec.future_features):
        col = series.values[:, spec.n_past + j]
        if not len(col):
            continue
        spread = np.maximum.reduceat(col, first) - np.minimum.reduceat(col, first)  # per series, all its rows
        if not (spread > 0).any():
            notes.append(f"{shown(series.source)}: future feature {name!r} is constant in the history of every series; its "
                         "effect cannot be learned (give history where it varies)")
    return tuple(notes)


def fit_known_effect(scaled: np.ndarray, starts: np.ndarray, train_rows: np.ndarray, spec: DataSpec):
    """(coef, intercept) of the least-squares fit of the scaled targets on the scaled regressors
    (spec.regressors) over the training rows of every series, pooled, with a small ridge penalty so
    that collinear or constant regressors stay finite. Dynamic regression, as forecasters fit it
    (regression with ARIMA errors): a known input's effect is learned from every row, not only
    from the few windows a short series gives the network, which then forecasts the residual."""
    lengths = np.diff(starts)
    rows = np.concatenate([np.arange(a, a + min(int(n_train), int(n)))
                           for a, n_train, n in zip(starts[:-1], train_rows, lengths, strict=True)])
    x = scaled[rows][:, spec.regressors]
    y = scaled[rows][:, : len(spec.targets)]
    design = np.concatenate([x, np.ones((len(rows), 1))], axis=1)
    penalty = KNOWN_RIDGE * len(rows) * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    solution = np.linalg.solve(design.T @ design + penalty, design.T @ y)  # (R + 1, K)
    coef = tuple(tuple(float(c) for c in row) for row in solution[:-1])
    return coef, tuple(float(c) for c in solution[-1])


def data_spec(series: frame.SeriesSet, req: TrainRequest, *, lookback: int, season: int) -> DataSpec:
    """The data contract of the model train makes of series with req (its known inputs resolved)."""
    return DataSpec(time_col=series.time_col, id_col=series.id_col, targets=tuple(req.targets),
                    features=tuple(req.features), time_kind=series.time_kind, step=int(series.step),
                    freq=series.freq, lookback=lookback, horizon=req.horizon, quantiles=tuple(req.quantiles),
                    scaling=req.scaling, season=season, strategy=req.strategy, blend=_blend_of(req),
                    future_features=tuple(req.future_features),
                    calendar=req.calendar if isinstance(req.calendar, tuple) else (), holidays=req.holidays)


def model_of(network, series: frame.SeriesSet, req: TrainRequest, *, lookback: int, season: int, threads: int,
             loc: np.ndarray, scale: np.ndarray, result: TrainResult, output_scale: float | None, data_sha256: str,
             warm_sha: str | None, known_effect: tuple = ((), ())) -> Forecaster:
    """The Forecaster train saves (check_model_fits builds the same from a network without weights
    and a placeholder result, to check its header before training). known_effect: (coef, intercept)
    of fit_known_effect."""
    spec = replace(data_spec(series, req, lookback=lookback, season=season), known_coef=known_effect[0],
                   known_intercept=known_effect[1])
    params = {k: getattr(req.train, k) for k in req.train.__dataclass_fields__}
    params.update(hidden=req.hidden, layers=req.layers, cell=req.cell, val_frac=req.val_frac,
                  forget_bias=req.forget_bias, head_init=req.head_init, dtype=req.dtype,
                  sample_series=req.sample_series, calibrate=req.calibrate, output_scale=output_scale,
                  warm_start_sha256=warm_sha)
    training = {"seed": req.train.seed, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "threads": threads, "params": params,
                "history": {"train_loss": [float(x) for x in result.train_loss],
                            "val_loss": [None if v is None else float(v) for v in result.val_loss]},
                "data_sha256": data_sha256}
    return Forecaster(network=network, spec=spec, ids=series.ids, last_time=series.times[series.starts[1:] - 1],
                      loc=loc, scale=scale, training=training)
