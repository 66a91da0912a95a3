"""`lstm validate`: check a CSV before a nightly job trains or forecasts on it, and say
everything that is wrong or doubtful in one report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lstm_cli import frame
from lstm_cli.errors import DataError, InputMissingError


@dataclass
class Check:
    name: str
    status: str  # 'ok', 'warn' or 'fail'
    detail: str


@dataclass
class Report:
    source: str
    checks: list[Check] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))


def _shown(items: list[str]) -> str:
    return ", ".join(map(repr, items[:3])) + (" ..." if len(items) > 3 else "")


def _spreadsheet_checks(report: Report, series: frame.SeriesSet) -> None:
    """Warnings about text the forecast CSV repeats verbatim: ids and names a spreadsheet would
    run as formulas, and ids with spaces around them (kept: ' a' and 'a' are two series)."""
    names = [c for c in (series.time_col, series.id_col, *series.columns[: series.n_targets]) if c]
    risky = [n for n in names if frame.formula_like(n)]
    if series.id_col:
        risky += [s for s in series.ids if frame.formula_like(s)]
    if risky:
        report.add("spreadsheet", "warn", f"{len(risky)} id{'s' if len(risky) > 1 else ''} or column "
                   f"name{'s' if len(risky) > 1 else ''} start like a formula ({_shown(risky)}): a spreadsheet "
                   "opening the forecast CSV would run them; use predict --excel-safe for CSV meant for one")
    spaced = [s for s in series.ids if s != s.strip()] if series.id_col else []
    if spaced:
        report.add("ids", "warn", f"{len(spaced)} series id{'s' if len(spaced) > 1 else ''} with spaces around "
                   f"({_shown(spaced)}): ids are kept verbatim, so ' a' and 'a' are different series")


def _count_future_rows(series: frame.SeriesSet) -> str:
    """How many future rows each series has, in words: the same number, or the range and the fewest."""
    counts = np.diff(series.future.starts)
    if counts.min() == counts.max():
        n = int(counts[0])
        return f"{'every series has' if series.id_col else 'the series has'} {n} future row{'' if n == 1 else 's'}"
    s = int(np.argmin(counts))
    return (f"{int(counts.min())} to {int(counts.max())} future rows per series (series {series.ids[s]!r} has "
            f"{int(counts[s])})")


def _future_rows_check(report: Report, series: frame.SeriesSet, future_features, steps: int | None,
                       spec=None) -> None:
    """The future rows (split off after each series' last value) against a forecast of `steps`:
    enough rows, on the grid (predict's own check: pipeline.future_inputs with the model's spec,
    else frame.future_block; the reader refused empty future features already). steps None (no
    model and no --horizon, or no future rows to check against it): their count only."""
    counts = np.diff(series.future.starts)
    report.summary["future_rows"] = {"total": int(counts.sum()), "fewest": int(counts.min()),
                                     "most": int(counts.max())}
    if steps is None:
        detail = (f"{_count_future_rows(series)} after the last value ({', '.join(future_features)} filled, the "
                  "target empty): predict's input; train leaves them out" if counts.any() else
                  "no future rows after the last value: a file to train on; predict of a model with "
                  "--future-features needs them (or --future FILE)")
        report.add("future rows", "ok", detail)
        return
    try:
        if spec is not None:  # the stamps argument serves calendar-only models, which have no future rows
            from lstm_cli.pipeline import future_inputs

            future_inputs(series, spec, steps, None)
            steps = spec.future_steps(steps)
        else:
            frame.future_block(series, series.future, steps, series.freq,
                               rows=f" with the target empty and {', '.join(map(repr, future_features))} filled")
    except DataError as e:
        report.add("future rows", "fail", str(e))
        return
    report.add("future rows", "ok", f"{_count_future_rows(series)} after the last value, on the grid: enough for "
               f"the {steps} forecast steps")


def _known_inputs_check(report: Report, spec) -> None:
    """A calendar or holiday model's known inputs come from the timestamps: nothing to supply, but
    the holidays package must be there (predict needs it: exit 69)."""
    derived = ([f"calendar {', '.join(spec.calendar)}"] if spec.calendar else []) + \
        ([f"holidays {spec.holidays}"] if spec.holidays else [])
    if not derived:
        return
    if spec.holidays:
        from lstm_cli import calendar
        from lstm_cli.errors import MissingDependencyError

        try:
            calendar.check_holidays(spec.holidays)
        except MissingDependencyError as e:
            report.add("known inputs", "warn", f"{' and '.join(derived)}: derived from the timestamps, but {e}")
            return
    report.add("known inputs", "ok", f"{' and '.join(derived)}: derived from the timestamps of the forecast "
               "steps, nothing to supply")


def validate_csv(data: str, *, targets=(), features=(), time_col=None, id_col=None, sep=",", freq=None,
                 missing="interpolate", model_path: str | None = None, lookback: int | None = None,
                 horizon: int | None = None, future_features=()) -> Report:
    """Read DATA as train/predict would, and report. With model_path the model's contract
    (columns, time kind, frequency, lookback, future rows) is what DATA is checked against.
    future_features (without a model): the rows after each series' last value with the targets
    empty are future rows, split off and counted (checked against horizon when given)."""
    report = Report(source=data)
    spec = None
    if model_path is not None:  # the contract is in the header: the weights stream through their checks, never held
        from lstm_cli import modelfile
        from lstm_cli.model import DataSpec

        header = modelfile.load_header(model_path)
        spec = DataSpec.from_header(header["data"])
        # an ensemble's forecast reads its longest member's lookback (model.Ensemble.spec)
        lookback = max([spec.lookback] + [m["data"]["lookback"] for m in header.get("members") or ()])
        future_features = spec.future_features
    try:
        if spec is None:
            series = frame.read_series(data, targets=targets, features=features, time_col=time_col, id_col=id_col,
                                       sep=sep, freq=freq, missing=missing, future_features=future_features,
                                       future_rows="split" if future_features else "no")
        else:  # as predict reads it: the model's columns and frequency
            from lstm_cli.pipeline import read_like_model

            series = read_like_model(data, spec, sep=sep, missing=missing, check_step=False)
    except InputMissingError:
        raise
    except DataError as e:  # an empty future feature in a future row is the future rows' check that fails
        report.add("future rows" if future_features and "in a future row" in str(e) else "readable", "fail", str(e))
        return report
    lengths = np.diff(series.starts)
    if spec is None:
        try:  # --freq ms on monthly data reads, every month a gap: train would learn the wrong step
            frame.check_given_freq(series, freq)
        except DataError as e:
            report.add("readable", "fail", str(e))
            return report
    report.add("readable", "ok", f"{len(series.ids)} series, {int(lengths.sum())} rows, columns "
               f"{', '.join(series.columns)}; times in {series.time_col!r} sorted, no duplicates")
    report.add("frequency", "ok" if series.freq else "warn",
               f"freq {series.freq}" if series.freq else f"no calendar frequency; step "
               f"{frame._fmt_duration(series.step, series.time_kind)}, rows taken as consecutive steps")
    for note in series.warnings:
        report.add("note", "warn", note)
    _spreadsheet_checks(report, series)
    if spec is not None:
        try:  # time kind and step, as predict and evaluate check them
            frame.check_model_step(series, spec.time_kind, spec.freq, spec.step)
            frame.check_model_phase(series, spec.freq, header["series"]["ids"], header["series"]["last_time"])
        except DataError as e:
            report.add("model contract", "fail", str(e))
    steps = horizon or (spec.horizon if spec is not None else None)
    if future_features and report.usable:  # off the model's step or phase, the grid check would only repeat it
        if spec is not None:  # predict's need: the future rows of every step it forecasts
            _future_rows_check(report, series, future_features, steps, spec)
        else:  # a file without future rows is one to train on: checked against --horizon only when it has some
            _future_rows_check(report, series, future_features, steps if series.future.starts[-1] else None)
    if spec is not None:
        _known_inputs_check(report, spec)
    if spec is not None:
        horizon = None  # predict needs only the lookback
    if steps:
        try:  # predict's check: the next `steps` times must be dates (or integers) that exist
            frame.check_forecast_fits(series, steps, spec.freq if spec is not None else None)
            report.add("forecast times", "ok", f"the next {steps} steps after each series end are representable")
        except DataError as e:
            report.add("forecast times", "fail", str(e))
    if lookback:
        need = lookback + (horizon or 0)
        short = [(sid, int(n)) for sid, n in zip(series.ids, lengths, strict=True) if n < need]
        why = f"lookback {lookback}" + (f" + horizon {horizon}" if horizon else "")
        if short:
            shown = ", ".join(f"{sid or 'the series'} ({n} rows)" for sid, n in short[:5])
            report.add("length", "fail", f"{len(short)} series shorter than {need} rows ({why}): {shown}"
                       + (" ..." if len(short) > 5 else ""))
        else:
            report.add("length", "ok", f"every series has at least {need} rows ({why})")
    start = series.times[series.starts[:-1]]
    end = series.times[series.starts[1:] - 1]
    fmt = lambda t: frame.format_times(np.asarray([t], dtype=np.int64), series.time_kind, series.freq)[0]  # noqa: E731
    report.summary = {**report.summary, "series": len(series.ids), "rows": int(lengths.sum()), "freq": series.freq,
                      "time_kind": series.time_kind, "first": fmt(int(start.min())), "last": fmt(int(end.max())),
                      "shortest": int(lengths.min()), "longest": int(lengths.max())}
    return report
