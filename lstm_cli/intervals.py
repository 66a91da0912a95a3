"""Split-conformal prediction intervals (issue 18): absolute errors for point models, conformalized
quantile regression (CQR) for quantile models.

After training, the model forecasts the last origins of its own data whose horizon lies in each
series' validation rows. The absolute error of every step h and target k, divided by the series'
scale (the mean absolute one-step change of the window the forecast reads: its last `lookback`
rows), is a score; pooled over series and origins, the ceil((n + 1) * level)-th smallest of the n
scores of (h, k) is the quantile stored for that level. predict adds point -/+ quantile x scale,
with the scale of the window it reads: the same definition as in calibration, so a series never
seen in training gets intervals too, an exported graph (which sees only the window) computes the
same bounds, and the model file holds levels x horizon x targets numbers, not one per series.
Models written before the window scale (header scale "history_mean_abs_diff") scale by the whole
history given, as they were calibrated.

Quantile models (table "method" "cqr"; Romano et al. 2019, Darts' ConformalQRModel) keep their
own band and only correct it: level L needs the pair q = (1 - L/100) / 2, 1 - q on the grid, whose
columns lo, hi give the score E = max(lo - y, y - hi) / scale, negative when y is well inside. Its
conformal quantile Q (stored as above; negative when the network's band is too wide) widens or
narrows the band, and the band never crosses the point p (the median column, index nq // 2, the
column a recursive roll and evaluate take as the forecast):

    absolute (point models):  lo' = p - Q s            hi' = p + Q s            (Q >= 0)
    cqr (quantile models):    lo' = min(lo - Q s, p)   hi' = max(hi + Q s, p)   (Q of any sign)

with s the scale of the window read. A table without "method" is "absolute" (files written before).
Pinball-trained heads on small data are usually too narrow; the conformal step makes the band cover
at its level (for exchangeable errors) whatever the network learned.
"""

from __future__ import annotations

import math

import numpy as np

from lstm_cli.errors import DataError, UsageError

DEFAULT_LEVELS = (80.0, 95.0)
SCALE = "window_mean_abs_diff"  # header["intervals"]["scale"]: how predict scales the quantiles
HISTORY_SCALE = "history_mean_abs_diff"  # models calibrated before the window scale (still read)
SCALES = (SCALE, HISTORY_SCALE)
ABSOLUTE, CQR = "absolute", "cqr"  # header["intervals"]["method"]: point models', quantile models'
METHODS = (ABSOLUTE, CQR)


def method(table: dict) -> str:
    """The table's method; files written before CQR have none and are absolute."""
    return table.get("method", ABSOLUTE)


def point_index(n_quantiles: int) -> int:
    """The column of the forecast (S, h, K, nq) that is the point: the median of a quantile grid
    (its middle: nq // 2, as recursive rolling and evaluate take it), the only column otherwise."""
    return max(1, n_quantiles) // 2


def grid_levels(quantiles) -> dict[float, tuple[int, int]]:
    """level (percent) -> (index of q, index of 1 - q): the central intervals a quantile grid holds."""
    from lstm_cli.metrics import interval_levels

    return {float(label): (i, j) for i, j, label in interval_levels(quantiles)}


def train_levels(asked, quantiles) -> tuple[float, ...]:
    """The levels train calibrates. asked None (no --intervals): 80,95 for a point model, every
    central level of a quantile model's grid (the band it was trained for; none when the grid has
    no pair q, 1 - q, e.g. 0.5 alone). Asked levels of a quantile model must be on its grid
    (UsageError otherwise: CQR corrects a band the network gives, it cannot invent one)."""
    if not quantiles:
        return DEFAULT_LEVELS if asked is None else tuple(asked)
    grid = grid_levels(quantiles)
    if asked is None:
        return tuple(sorted(grid))
    missing = [v for v in asked if v not in grid]
    if missing:
        qs = ",".join(f"{q:g}" for q in quantiles)
        has = f"gives the levels {','.join(map(level_name, sorted(grid)))}" if grid else "gives no level (no pair q, 1 - q)"
        pair = ",".join(f"{round(q, 9):g}" for v in missing for q in ((1 - v / 100) / 2, 1 - (1 - v / 100) / 2))
        raise UsageError(f"--intervals {','.join(map(level_name, asked))}: a quantile model's L% interval is its "
                         f"quantiles (1 - L/100)/2 and 1 - (1 - L/100)/2 conformalized, and the grid {qs} {has}, not "
                         f"{','.join(map(level_name, missing))}; ask for "
                         + ("those (or leave out --intervals)" if grid else "none") + f", or add {pair} to --quantiles")
    return tuple(asked)


def parse_levels(text: str, option: str, allow_all: bool = False):
    """'80,95' -> (80.0, 95.0) sorted and distinct; 'none' -> (); 'all' -> 'all' where allowed."""
    text = text.strip().lower()
    if text == "none":
        return ()
    if allow_all and text == "all":
        return "all"
    levels = set()
    for part in text.split(","):
        try:
            level = float(part)
        except ValueError:
            level = math.nan
        # at most 2 decimals: the column names (level_name) stay exact and distinct, and no level is
        # so close to 0 or 100 that its interval score (2 / (1 - level)) or its conformal rank breaks
        if not (math.isfinite(level) and 0.0 < level < 100.0 and round(level, 2) == level):
            allowed = "none, all" if allow_all else "none"
            raise UsageError(f"{option} {text!r}: {part.strip()!r} is not a level in percent in (0, 100) with at most "
                             f"2 decimals; give levels like 80,95 or 99.5 (or {allowed})")
        levels.add(level)
    return tuple(sorted(levels))


def level_name(level: float) -> str:
    """80.0 -> '80', 99.5 -> '99.5': the suffix of the sales_lo80 / sales_hi80 columns."""
    return f"{level:g}"


def interval_columns(target: str, levels) -> list[str]:
    return [f"{target}_{side}{level_name(level)}" for level in levels for side in ("lo", "hi")]


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil((n + 1) * level / 100)-th smallest of the n finite scores (split conformal: at least
    `level`% coverage for an exchangeable new score), or the largest when that rank exceeds n (too
    few scores for the level: the guarantee then does not hold). NaN without scores."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    n = len(s)
    if n == 0:
        return math.nan
    rank = math.ceil(round((n + 1) * level / 100.0, 9))  # round: 0.8 * 5 is 4.000000000000001
    return float(s[min(max(rank, 1), n) - 1])


def history_scale(values: np.ndarray, starts: np.ndarray, n_targets: int) -> np.ndarray:
    """(S, K) mean absolute one-step change of each series' target columns; 1.0 (the target's own
    units) where it is 0 or undefined (a constant or one-row series), so no interval divides by 0."""
    out = np.ones((len(starts) - 1, n_targets))
    for s in range(len(starts) - 1):
        rows = values[starts[s] : starts[s + 1], :n_targets]
        if len(rows) > 1:
            with np.errstate(all="ignore"):
                mad = np.nanmean(np.abs(np.diff(rows, axis=0)), axis=0) if np.isfinite(rows).any() else out[s]
            out[s] = np.where(np.isfinite(mad) & (mad > 0), mad, 1.0)
    return out


def window_scale(values: np.ndarray, starts: np.ndarray, n_targets: int, lookback: int) -> np.ndarray:
    """history_scale of each series' last `lookback` rows: the window the forecast reads."""
    lengths = np.diff(starts)
    take = np.minimum(lengths, lookback)
    index = np.concatenate([np.arange(starts[s + 1] - take[s], starts[s + 1]) for s in range(len(lengths))]
                           + [np.zeros(0, dtype=np.int64)]).astype(np.int64)
    return history_scale(values[index], np.concatenate([[0], np.cumsum(take)]).astype(np.int64), n_targets)


def series_scale(table: dict, values: np.ndarray, starts: np.ndarray, n_targets: int, lookback: int) -> np.ndarray:
    """(S, K) the scale the table's quantiles are in units of, for the history given."""
    if table.get("scale") == HISTORY_SCALE:
        return history_scale(values, starts, n_targets)
    return window_scale(values, starts, n_targets, lookback)


def calibration_origins(lengths: np.ndarray, horizon: int, lookback: int, val_frac: float,
                        asked: int | None) -> int:
    """How many origins calibrate: cut = n - horizon - j for j = 0 .. val_rows - horizon (the horizons
    inside every series' validation rows, at least 1), or `asked` (--calibration-windows); every cut
    must leave the lookback rows a forecast needs."""
    from lstm_cli import windows

    most = int(min(n - horizon - lookback for n in lengths)) + 1  # origins that leave a lookback
    if asked is not None:
        if asked > most:
            raise DataError(f"--calibration-windows {asked}: the shortest series ({int(lengths.min())} rows) has "
                            f"{most} origin{'s' if most > 1 else ''} with lookback {lookback} rows before a "
                            f"{horizon}-step horizon; ask for at most {most}")
        return asked
    inside = min(windows.val_rows_for(int(n), val_frac, horizon) - horizon + 1 for n in lengths)
    return max(1, min(inside, most))


class NotCalibrated(Exception):
    """The calibration forecasts gave no usable errors: the model is kept, without intervals."""


def calibrate(model, series, levels, *, val_frac: float, origins: int | None = None) -> dict:
    """The header["intervals"] table of a model (Forecaster or Ensemble) trained on `series`: absolute
    errors around the point for a point model, CQR scores of the grid's pairs for a quantile model."""
    from lstm_cli.evaluate import _truncate, known_after_cuts

    spec = model.spec
    H, K = spec.horizon, len(spec.targets)
    pairs = None
    if spec.quantiles:
        grid = grid_levels(spec.quantiles)
        train_levels(tuple(levels), spec.quantiles)  # UsageError for a level off the grid
        pairs = [grid[level] for level in levels]
    lengths = np.diff(series.starts)
    J = calibration_origins(lengths, H, spec.lookback, val_frac, origins)
    scores = []  # per origin (L or 1, S, H, K)
    for j in range(J):
        cuts = lengths - H - j
        history = _truncate(series, cuts)
        forecast, _ = model.forecast(history.ids, history.values, history.starts, H, times=history.times,
                                     future=known_after_cuts(series, cuts, spec, H))  # (S, H, K, nq)
        index = series.starts[:-1, None] + cuts[:, None] + np.arange(H)[None, :]
        actual = series.values[index][..., :K]  # (S, H, K)
        scale = window_scale(history.values, history.starts, K, spec.lookback)[:, None, :]  # (S, 1, K)
        if pairs is None:
            scores.append(np.abs(actual - forecast[..., 0])[None] / scale)
        else:
            with np.errstate(invalid="ignore"):  # inf - inf of an overflowing forecast: nan, counted below
                scores.append(np.stack([np.maximum(forecast[..., i] - actual, actual - forecast[..., k])
                                        for i, k in pairs]) / scale)
    pooled = np.concatenate(scores, axis=1)  # (L or 1, J * S, H, K)
    table = [[[conformal_quantile(pooled[0 if pairs is None else i, :, h, k], level) for k in range(K)]
              for h in range(H)] for i, level in enumerate(levels)]
    counts = np.isfinite(pooled).sum(axis=1).min(axis=0)
    if not counts.min():
        raise NotCalibrated("the calibration forecasts left a step without one finite error (values too large "
                            "for the arithmetic?); predict --intervals will refuse this model")
    return {"levels": [float(v) for v in levels], "scale": SCALE, "method": ABSOLUTE if pairs is None else CQR,
            "origins": J, "scores": int(counts.min()), "quantiles": table}


def attach(model, table: dict | None) -> None:
    """Store the table on the model the file is written from (an ensemble's member 0 writes the header)."""
    target = model.members[0] if hasattr(model, "members") else model
    target.intervals = table


def capped_levels(table: dict) -> list[float]:
    """Levels whose conformal rank exceeded the calibration's scores (the largest score was used)."""
    n = table["scores"]
    return [v for v in table["levels"] if math.ceil(round((n + 1) * v / 100.0, 9)) > n]


def check_request(model, asked, horizon: int) -> tuple[float, ...]:
    """The levels predict --intervals writes, or UsageError (exit 2) when the model cannot give them."""
    spec = model.spec
    table = getattr(model, "intervals", None)
    if not table:
        if spec.quantiles and not grid_levels(spec.quantiles):
            raise UsageError(f"--intervals: the quantile grid {','.join(f'{q:g}' for q in spec.quantiles)} has no pair "
                             "q, 1 - q, so the model has no central interval; retrain it with the pair in --quantiles "
                             "(0.1,0.5,0.9 gives 80), or leave out --intervals")
        raise UsageError("--intervals: this model has no calibrated intervals (trained with --intervals none, or "
                         "by an older lstm); retrain it with --intervals "
                         f"{','.join(map(level_name, train_levels(None, spec.quantiles)))}, or leave out --intervals")
    stored = table["levels"]
    if asked == "all":
        asked = tuple(stored)
    missing = [v for v in asked if v not in stored]
    if missing:
        retrain = (f"retrain with --intervals {','.join(map(level_name, asked))}" if not spec.quantiles else
                   "retrain with --quantiles holding (1 - L/100)/2 and 1 - (1 - L/100)/2 for each level L")
        raise UsageError(f"--intervals: the model is calibrated for levels {','.join(map(level_name, stored))}, not "
                         f"{','.join(map(level_name, missing))}; ask for those (or all), or {retrain}")
    if horizon > spec.horizon:
        raise UsageError(f"--intervals: the intervals are calibrated for the trained horizon's {spec.horizon} steps; "
                         f"forecast at most --horizon {spec.horizon} with them, or retrain with --horizon {horizon}")
    return tuple(asked)


def bounds(model, forecast: np.ndarray, series, levels) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """level -> (lo, hi), each (S, h, K), for the forecast (S, h, K, n quantiles: 1 for a point
    model) of `series` (the history it was made from), by the module docstring's formula: the
    point -/+ quantile[level, step, k] x scale[series, k] of the window read (absolute), or the
    grid's pair widened by it and clamped at the point (cqr). Either way lo <= point <= hi."""
    table = model.intervals
    nq = forecast.shape[-1]
    point = forecast[..., point_index(nq)]  # (S, h, K)
    K = point.shape[2]
    scale = series_scale(table, series.values, series.starts, K, model.spec.lookback)[:, None, :]
    cqr = method(table) == CQR
    grid = grid_levels(model.spec.quantiles) if cqr else {}
    out = {}
    for level in levels:
        q = np.asarray(table["quantiles"][table["levels"].index(level)], dtype=np.float64)[None, : point.shape[1]]
        if cqr:
            i, j = grid[level]
            out[level] = (np.minimum(forecast[..., i] - q * scale, point), np.maximum(forecast[..., j] + q * scale, point))
        else:
            out[level] = (point - q * scale, point + q * scale)
    return out


MAX_QUANTILES = 1_000_000  # levels x horizon x targets numbers in the header (about 20 MB of JSON)
MAX_LEVELS = 100  # levels in one table (modelfile refuses more)


def check_size(levels, horizon: int, n_targets: int) -> None:
    """Refuse, before training, a table the model header could not hold (UsageError: the options' doing)."""
    if len(levels) > MAX_LEVELS:
        raise UsageError(f"--intervals: {len(levels)} levels, more than the {MAX_LEVELS} a model file holds; give "
                         "fewer levels or --intervals none")
    n = len(levels) * horizon * n_targets
    if n > MAX_QUANTILES:
        raise UsageError(f"--intervals: {len(levels)} levels x horizon {horizon} x {n_targets} targets = {n:,} "
                         f"quantiles, more than the {MAX_QUANTILES:,} a model file holds; give fewer levels or "
                         "--intervals none")


def summary(table: dict | None) -> str | None:
    """The train summary's line: the levels, what calibrated them, and levels with too few scores."""
    if not table:
        return None
    kind = "conformalized quantiles" if method(table) == CQR else "conformal"
    text = (f"{','.join(map(level_name, table['levels']))}% {kind}, from {table['origins']} origin"
            f"{'s' if table['origins'] > 1 else ''} ({table['scores']} error{'s' if table['scores'] != 1 else ''} per step)")
    if capped := capped_levels(table):
        text += (f"; too few errors for {','.join(map(level_name, capped))}% (the largest is used, coverage not "
                 "guaranteed): --calibration-windows N for more")
    return text
