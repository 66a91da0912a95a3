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


def validate_csv(data: str, *, targets=(), features=(), time_col=None, id_col=None, sep=",", freq=None,
                 missing="interpolate", model_path: str | None = None, lookback: int | None = None,
                 horizon: int | None = None) -> Report:
    """Read DATA as train/predict would, and report. With model_path the model's contract
    (columns, time kind, frequency, lookback) is what DATA is checked against."""
    report = Report(source=data)
    spec = None
    if model_path is not None:  # the contract is in the header: the weights stream through their checks, never held
        from lstm_cli import modelfile
        from lstm_cli.model import DataSpec

        header = modelfile.load_header(model_path)
        spec = DataSpec.from_header(header["data"])
        lookback = spec.lookback
    try:
        if spec is None:
            series = frame.read_series(data, targets=targets, features=features, time_col=time_col, id_col=id_col,
                                       sep=sep, freq=freq, missing=missing)
        else:  # as predict reads it: the model's columns and frequency
            from lstm_cli.pipeline import read_like_model

            series = read_like_model(data, spec, sep=sep, missing=missing, check_step=False)
    except InputMissingError:
        raise
    except DataError as e:
        report.add("readable", "fail", str(e))
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
    report.summary = {"series": len(series.ids), "rows": int(lengths.sum()), "freq": series.freq,
                      "time_kind": series.time_kind, "first": fmt(int(start.min())), "last": fmt(int(end.max())),
                      "shortest": int(lengths.min()), "longest": int(lengths.max())}
    return report
