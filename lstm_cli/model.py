"""A trained forecaster: the network plus everything predict needs (columns, window, scaler,
frequency, last timestamps), and its mapping to the model file's header and arrays."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from lstm_cli import __version__, scaling, windows
from lstm_cli.errors import DataError, UsageError
from lstm_cli.network import Architecture, Network, ParamLayout

FORMAT = "lstm-model"
FORMAT_VERSION = 1
STRATEGIES = ("direct", "recursive")  # data.strategy: all horizon steps at once, or one step fed back


def unknown_features(features) -> str:
    """Why a model with features cannot forecast on its own forecasts (both refusals say it)."""
    return f"features ({', '.join(features)}) whose future values are unknown"


def creation_time() -> str:
    """Now in UTC, or SOURCE_DATE_EPOCH when set (the reproducible-builds convention), so that
    the same data, options and threads can give a byte-identical model file."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    moment = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch.isdigit()
              else _dt.datetime.now(_dt.timezone.utc))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class DataSpec:
    """The data contract of a model: what columns it reads and how its windows are cut."""

    time_col: str
    id_col: str | None
    targets: tuple[str, ...]
    features: tuple[str, ...]
    time_kind: str  # 'datetime' (ns since epoch) or 'integer'
    step: int
    freq: str | None
    lookback: int
    horizon: int
    quantiles: tuple[float, ...] = ()
    strategy: str = "direct"
    scaling: str = "series"
    season: int = 1  # steps per seasonal cycle; the "seasonal" scaling's anchor is one season back
    blend: float = 0.0  # weight of seasonal naive in the forecast (windows.split_anchor); 0 in older files
    future_features: tuple[str, ...] = ()  # columns whose values are known for the forecast steps too
    calendar: tuple[str, ...] = ()  # calendar components (lstm_cli.calendar) derived from the timestamps
    holidays: str | None = None  # a holidays-package code ('US', 'DE-BY'): a count of holidays per step
    # the linear effect of the regressors (future features, holidays) on the scaled targets, fitted on
    # the training rows: one row per regressor, one column per target, and the intercept per target
    known_coef: tuple[tuple[float, ...], ...] = ()
    known_intercept: tuple[float, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """The data columns the model reads, in the order of the values arrays."""
        return self.targets + self.features + self.future_features

    @property
    def n_past(self) -> int:
        """Columns known only up to the forecast origin: the targets, then the past-only features."""
        return len(self.targets) + len(self.features)

    @property
    def derived_columns(self) -> tuple[str, ...]:
        if not (self.calendar or self.holidays):
            return ()
        from lstm_cli import calendar

        return calendar.column_names(self.calendar, self.holidays)

    @property
    def has_known(self) -> bool:
        """Whether the model reads inputs known in advance (windows.with_future_rows)."""
        return bool(self.future_features or self.calendar or self.holidays)

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Every input of the network in order: the data columns, the derived calendar and holiday
        columns, and (with inputs known in advance) the horizon flag."""
        return self.columns + self.derived_columns + (("horizon_flag",) if self.has_known else ())

    @property
    def regressors(self) -> np.ndarray:
        """Positions in input_columns of the inputs whose linear effect on the targets is fitted
        (known_effect): the future features and the holiday column (events with an effect of their
        own), not the calendar's sin/cos (the anchor and the network model the season)."""
        first = self.n_past
        index = list(range(first, first + len(self.future_features)))
        if self.holidays:
            index.append(len(self.columns) + len(self.derived_columns) - 1)
        return np.asarray(index, dtype=np.int64)

    def known_effect(self, scaled: np.ndarray) -> np.ndarray:
        """The fitted effect (..., n_targets) of the regressors on the scaled targets of rows
        (..., n_inputs): the network forecasts what is left (the residual), and the forecast adds
        the effect of the forecast steps' known values back. Zeros for a model without regressors."""
        K = len(self.targets)
        if not self.known_coef:
            return np.zeros(scaled.shape[:-1] + (K,))
        coef = np.asarray(self.known_coef, dtype=np.float64)  # (R, K)
        return scaled[..., self.regressors] @ coef + np.asarray(self.known_intercept, dtype=np.float64)

    def future_steps(self, horizon: int) -> int:
        """Forecast steps whose known inputs a forecast of `horizon` steps reads: each call of the
        network reads all the steps it forecasts, so a direct model rolled past its trained horizon
        reads whole calls (24 steps for 20 asked of a 12-step model); a recursive one reads one a call."""
        per_call = self.network_horizon
        return -(-horizon // per_call) * per_call

    def inputs_of(self, values: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The network's columns for rows of data (N, len(columns)) at `times`: the derived columns
        added, and the horizon flag as 0 (windows.with_future_rows sets it on the forecast rows)."""
        if not self.has_known:
            return values
        parts = [np.asarray(values, dtype=np.float64)]
        if self.derived_columns:
            from lstm_cli import calendar

            parts.append(calendar.derive(self.calendar, self.holidays, np.asarray(times, dtype=np.int64), self.step))
        parts.append(np.zeros((len(values), 1)))
        return np.concatenate(parts, axis=1)

    def unscaled(self, loc: np.ndarray, scale: np.ndarray) -> None:
        """Set loc 0 and scale 1 (in place) on the derived columns and the flag: they are already on
        a fixed scale (sin/cos, counts, 0/1), the same for every series."""
        first = len(self.columns)
        loc[:, first:] = 0.0
        scale[:, first:] = 1.0

    @property
    def n_outputs_per_step(self) -> int:
        return len(self.targets) * max(1, len(self.quantiles))

    @property
    def network_horizon(self) -> int:
        """Steps one call of the network forecasts: the horizon ("direct"), or 1 ("recursive":
        the forecast is fed back as the newest row of the window, horizon times)."""
        return 1 if self.strategy == "recursive" else self.horizon

    def to_header(self) -> dict:
        d = asdict(self)
        for key in ("targets", "features", "quantiles", "future_features", "calendar", "known_intercept"):
            d[key] = list(d[key])
        d["known_coef"] = [list(row) for row in self.known_coef]
        if not self.has_known:  # a file readable by lstm versions before inputs known in advance
            for key in ("future_features", "calendar", "holidays", "known_coef", "known_intercept"):
                del d[key]
        return d

    @classmethod
    def from_header(cls, d: dict) -> DataSpec:
        return cls(**{**d, "targets": tuple(d["targets"]), "features": tuple(d["features"]),
                      "quantiles": tuple(float(q) for q in d["quantiles"]),
                      "future_features": tuple(d.get("future_features", ())),
                      "calendar": tuple(d.get("calendar", ())),
                      "known_coef": tuple(tuple(float(c) for c in row) for row in d.get("known_coef", ())),
                      "known_intercept": tuple(float(c) for c in d.get("known_intercept", ()))})


@dataclass(frozen=True)
class FutureInputs:
    """What is known of the forecast steps of every series: their times (S, h) int64, and the future
    features' values (S, h, len(spec.future_features)) in original units."""

    times: np.ndarray
    values: np.ndarray


@dataclass
class Forecaster:
    network: Network
    spec: DataSpec
    ids: tuple[str, ...]
    last_time: np.ndarray  # int64 per series
    loc: np.ndarray  # (n_series, C) float64
    scale: np.ndarray  # (n_series, C) float64
    training: dict = field(default_factory=dict)
    created: str = ""
    intervals: dict | None = None  # header "intervals": the conformal table (lstm_cli.intervals), or none

    # --- file mapping ----------------------------------------------------------------

    def to_file_parts(self) -> tuple[dict, dict[str, np.ndarray]]:
        import numba

        arch = self.network.arch
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created or creation_time(),
            "lstm_version": __version__,
            "numpy_version": np.__version__,
            "numba_version": numba.__version__,
            "arch": {"cell": arch.cell, "input_size": arch.input_size, "hidden_size": arch.hidden_size,
                     "num_layers": arch.num_layers, "output_size": arch.output_size, "dtype": arch.dtype},
            "data": self.spec.to_header(),
            "series": {"ids": list(self.ids), "last_time": [int(t) for t in self.last_time]},
            "training": self.training,
        }
        if self.intervals:
            header["intervals"] = self.intervals
        arrays = {name: np.ascontiguousarray(v) for name, v in self.network.tensors().items()}
        arrays["scaler.loc"] = np.ascontiguousarray(self.loc, dtype=np.float64)
        arrays["scaler.scale"] = np.ascontiguousarray(self.scale, dtype=np.float64)
        return header, arrays

    @classmethod
    def from_file_parts(cls, header: dict, arrays: dict[str, np.ndarray], threads: int | None = None) -> Forecaster:
        a = header["arch"]
        arch = Architecture(a["input_size"], a["hidden_size"], a["num_layers"], a["output_size"], a["dtype"],
                            a["cell"])
        net = Network(arch, ParamLayout(arch).flatten(arrays, arch.np_dtype), threads=threads)
        return cls(network=net, spec=DataSpec.from_header(header["data"]), ids=tuple(header["series"]["ids"]),
                   last_time=np.asarray(header["series"]["last_time"], dtype=np.int64),
                   loc=np.array(arrays["scaler.loc"]), scale=np.array(arrays["scaler.scale"]),
                   training=header.get("training", {}), created=header.get("created", ""),
                   intervals=header.get("intervals"))

    # --- forecasting -----------------------------------------------------------------

    def series_scaler(self, series_ids, values, starts) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """loc/scale rows for the given series: stored ones for known ids, fitted on the
        supplied history for ids the model never saw (reported as a note)."""
        known = {sid: n for n, sid in enumerate(self.ids)}
        row = np.array([known.get(sid, -1) for sid in series_ids], dtype=np.int64)
        is_known = row >= 0
        unseen = [sid for sid, k in zip(series_ids, is_known, strict=True) if not k]
        if unseen:  # fitted on all supplied rows, for every series at once; known ones replaced below
            loc, scale = scaling.fit(values, starts, np.diff(starts))
            if self.spec.has_known:
                self.spec.unscaled(loc, scale)
        else:
            loc = np.empty((len(series_ids), self.loc.shape[1]))
            scale = np.empty_like(loc)
        loc[is_known], scale[is_known] = self.loc[row[is_known]], self.scale[row[is_known]]
        notes = []
        if unseen and self.spec.id_col is not None:
            shown = ", ".join(repr(u) for u in unseen[:3]) + (" ..." if len(unseen) > 3 else "")
            notes.append(f"{len(unseen)} series not seen in training ({shown}): scaled by their own history")
        return loc, scale, notes

    def forecast(self, series_ids, values: np.ndarray, starts: np.ndarray, horizon: int | None = None, *,
                 times: np.ndarray | None = None, future: FutureInputs | None = None):
        """Forecasts (n_series, horizon, n_targets, max(1, n_quantiles)) in original units, from
        the last `lookback` rows of each series. A direct model forecasts its trained horizon in
        one call of the network; a recursive one forecasts one step per call. Either way, steps
        beyond one call append the forecasts (the median for quantile models) to the window as its
        newest rows, drop as many of the oldest, and call the network again; each call takes its
        anchor (split_anchor) from the window it is given.

        A model with inputs known in advance (spec.has_known) also needs the rows' `times` and
        `future`, what is known of the `horizon` steps: each call reads the known inputs of the steps
        it forecasts after its window (windows.with_future_rows), and rolled rows keep them."""
        spec = self.spec
        horizon = horizon or spec.horizon
        K = len(spec.targets)
        nq = max(1, len(spec.quantiles))
        steps_per_call = spec.network_horizon
        if spec.features and spec.strategy == "recursive":
            raise UsageError(f"this model is recursive (it feeds its forecasts back as inputs), but it reads "
                             f"{unknown_features(spec.features)}; retrain it with --strategy direct")
        if horizon > spec.horizon and spec.features:
            raise UsageError(
                f"--horizon {horizon} is beyond the trained horizon {spec.horizon}, and this model reads "
                f"{unknown_features(spec.features)}; retrain with --horizon {horizon}")
        lengths = np.diff(starts)
        short = np.flatnonzero(lengths < spec.lookback)
        if len(short):
            s = short[0]
            name = f"series {series_ids[s]!r}: " if spec.id_col else ""
            raise DataError(f"{name}{lengths[s]} rows, need at least {spec.lookback} (the model's lookback)")
        S = len(series_ids)
        n_past = spec.n_past if spec.has_known else None
        if spec.has_known:
            need = spec.future_steps(horizon)
            if times is None or future is None or future.times.shape != (S, need):
                raise ValueError(f"a model with inputs known in advance needs times and future inputs for "
                                 f"{S} series x {need} steps")
            values = spec.inputs_of(values, times)
        loc, scale, notes = self.series_scaler(series_ids, values, starts)
        scaled = scaling.transform(values, starts, loc, scale)
        if spec.known_coef:  # the network reads and forecasts the targets less the regressors' effect
            scaled[:, :K] -= spec.known_effect(scaled)
        window = windows.last_windows(scaled, starts, spec.lookback)  # (S, lookback, C)
        effect = np.zeros((S, horizon, K))
        if spec.has_known:  # the forecast steps' rows, scaled: past columns 0 (unknown), flag 0 here
            known = np.concatenate([np.zeros((S, need, spec.n_past)),
                                    np.asarray(future.values, dtype=np.float64).reshape(S, need, -1)], axis=2)
            ahead = spec.inputs_of(known.reshape(S * need, -1), future.times.reshape(-1)).reshape(S, need, -1)
            ahead = (ahead - loc[:, None, :]) / scale[:, None, :]
            effect = spec.known_effect(ahead)[:, :horizon]  # (S, horizon, K): added back to the forecast
        steps = []
        done = 0
        median = nq // 2
        while done < horizon:
            inputs, base = windows.split_anchor(window, steps_per_call, K, spec.scaling, spec.season, spec.blend,
                                                n_past=n_past)
            if spec.has_known:
                inputs = windows.with_future_rows(inputs, ahead[:, done : done + steps_per_call], spec.n_past)
            raw = self.network.predict(inputs).astype(np.float64)  # (S, O)
            y = raw.reshape(S, steps_per_call, K, nq) + base[..., None]
            if nq > 1:
                y = np.sort(y, axis=3)  # quantiles never cross in the output
            steps.append(y)
            done += steps_per_call
            if done < horizon:  # roll: append the point forecasts as new target rows
                new_rows = y[:, :, :, median]
                if spec.has_known:  # with the known inputs of those steps (horizon flag 0: now history)
                    rows = ahead[:, done - steps_per_call : done].copy()
                    rows[..., :K] = new_rows
                    new_rows = rows
                window = np.concatenate([window, new_rows], axis=1)[:, -spec.lookback :, :]
        y = np.concatenate(steps, axis=1)[:, :horizon] + effect[..., None]
        out = y * scale[:, None, :K, None] + loc[:, None, :K, None]
        return out, notes


MEMBER_KEYS = ("lookback", "scaling")  # what a member's data contract may change (header "members")


def member_prefix(i: int) -> str:
    """The array names of ensemble member i >= 1 in the model file: 'member1.weight_ih_l0', ...
    (member 0 keeps the plain names: its header part is a whole model by itself)."""
    return f"member{i}."


@dataclass
class Ensemble:
    """Forecasters of one data contract that differ in what they see (lookback, anchor, seed):
    the forecast is their median per step, target and quantile. The median of members that err
    differently is more accurate than most of them and never far off when one is (N-BEATS won M4
    with one; docs/accuracy.md has ours). Duck-types a Forecaster for predict, evaluate and info:
    `spec` is member 0's with the longest lookback (the rows a forecast needs)."""

    members: list[Forecaster]

    @property
    def spec(self) -> DataSpec:
        from dataclasses import replace

        return replace(self.members[0].spec, lookback=max(m.spec.lookback for m in self.members))

    def __getattr__(self, name):  # network, ids, last_time, loc, scale, training, created: member 0's
        if name == "members":
            raise AttributeError(name)
        return getattr(self.members[0], name)

    def forecast(self, series_ids, values, starts, horizon=None, *, times=None, future=None):
        """The median over members of Forecaster.forecast; quantiles sorted again after it."""
        outs, notes = [], []
        for m in self.members:
            out, member_notes = m.forecast(series_ids, values, starts, horizon, times=times, future=future)
            outs.append(out)
            notes = notes or member_notes
        y = np.median(np.stack(outs), axis=0)
        if y.shape[-1] > 1:
            y = np.sort(y, axis=-1)
        return y, notes

    def to_file_parts(self) -> tuple[dict, dict[str, np.ndarray]]:
        header, arrays = self.members[0].to_file_parts()
        header["members"] = []
        for i, m in enumerate(self.members[1:], 1):
            part, member_arrays = m.to_file_parts()
            header["members"].append({"arch": part["arch"], "data": {k: part["data"][k] for k in MEMBER_KEYS},
                                      "training": part["training"]})
            arrays.update({member_prefix(i) + name: a for name, a in member_arrays.items()
                           if not name.startswith("scaler.")})  # one scaler: the members' data is the same
        return header, arrays


def member_headers(header: dict, arrays: dict | None = None):
    """(header, arrays) of every member of a model file's header: member 0's are the file's own
    (without "members"), member i's put its arch, data changes and training record in their place and
    take its prefixed arrays under the plain names, with the shared scaler."""
    base = {k: v for k, v in header.items() if k != "members"}
    out = [(base, None if arrays is None else {k: v for k, v in arrays.items() if not k.startswith("member")})]
    for i, m in enumerate(header.get("members") or (), 1):
        prefix = member_prefix(i)
        part = {**base, "arch": m["arch"], "data": {**base["data"], **m["data"]}, "training": m["training"]}
        if arrays is None:
            out.append((part, None))
            continue
        mine = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        mine.update({k: v for k, v in arrays.items() if k.startswith("scaler.")})
        out.append((part, mine))
    return out


def forecaster_of(header: dict, arrays: dict, threads: int | None = None):
    """The Forecaster, or Ensemble, a model file holds."""
    members = [Forecaster.from_file_parts(h, a, threads=threads) for h, a in member_headers(header, arrays)]
    return members[0] if len(members) == 1 else Ensemble(members)
