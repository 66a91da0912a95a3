"""Export a model file to formats other tools read: ONNX (a runnable graph), JSON and NPZ (the
weights under PyTorch's nn.LSTM or nn.GRU / nn.Linear state_dict names, the scaler and the
metadata).

Pure functions build the bytes or text from (header, arrays) as modelfile.load returns them;
`export_model` loads, builds and writes atomically. Nothing here imports numba or torch; onnx is
imported only for the ONNX format (the optional extra `lstm-cli[onnx]`).

The forecast every format describes (model.Forecaster.forecast, trained horizon only):

    xs = (x - loc[s]) / scale[s]                  x: the last `lookback` raw rows of series s,
                                                  columns = targets then features
    inputs = xs - xs[-1]  (xs for "series")       "level"/"seasonal" models see the window
                                                  relative to its last row
    base[step] = xs[row[step], :K]                the anchor, 0 for "series": row = the last
                                                  row ("level"), or the row one season before
                                                  the step ("seasonal": lookback - season +
                                                  step % season, steps from 0)
    base[step] = (1 - w) * base[step]             w = blend (0 in older files): seasonal naive
                 + w * xs[snaive_row[step], :K]   mixed in; snaive_row is the "seasonal" row
                                                  when 1 < season <= lookback, else the last
                                                  (the head is already scaled by 1 - w)
    h  = LSTM (or GRU) stack over inputs, last layer's final hidden state   (H,)
    y  = head.weight @ h + head.bias + base       (O,) = [step][target][quantile]
    y  = sort(y over quantiles)                   quantile models only: quantiles never cross
    forecast = y * scale[s, :K] + loc[s, :K]      K targets, original units

A recursive model (data.strategy "recursive") forecasts one step per call (O = targets x
quantiles): the above with horizon 1, `horizon` times, each step's scaled y (its median quantile)
appended to xs as the newest row and the oldest dropped. The ONNX graph unrolls that loop, every
step's recurrent and head nodes reading the same initializers.

A model with inputs known in advance (future features, calendar, holidays; known_inputs) reads
more columns: x holds the data columns then the calendar/holiday columns derived from each row's
timestamp (calendar.derive); only the first n_past columns (targets, past features) are made
relative to the last row; a horizon flag column (0) is appended, and then one row per step the
call forecasts: past columns 0, the step's scaled known inputs, flag 1 (windows.with_future_rows).
The LSTM reads lookback + steps rows. The ONNX graph takes the steps' known inputs as its input
`future`; a recursive graph reads future[:, i] at step i and appends [forecast, future[:, i], 0].
With regressors (future features, the holiday column; data.known_coef not empty), effect(row) =
row[regressors] @ known_coef + known_intercept of a scaled row is subtracted from the targets of
xs before anything else (the network, anchor and blend see the residual), and the effect of each
step's scaled known inputs is added to the scaled forecast (after the recursive feedback, which
is the residual).

Conformal intervals (lstm_cli.intervals; header "intervals", metadata "intervals"): with x the
raw window above (an ensemble's: its longest member's lookback) and the table's quantiles
Q[level][step][target],

    s[k] = mean over rows j >= 1 of |x[j, k] - x[j - 1, k]|   target k; 1 where 0, not finite, or lookback 1
    w    = Q[level, step, k] x s[k]
    "absolute" (point models):  lower = p - w, upper = p + w       p: the forecast (point_column)
    "cqr" (quantile models):    lower = min(q_lo - w, p), upper = max(q_hi + w, p)
                                q_lo, q_hi: the forecast's quantiles (1 -/+ level / 100) / 2 (band_columns)

computed from the forecast after the ensemble's median and in original units. The ONNX graph has
them as outputs `lower` and `upper` [batch, horizon, targets, levels]; models calibrated on the
whole history's scale ("history_mean_abs_diff", written before the window scale) have none there
(the graph sees only the window), but JSON and NPZ carry their table all the same.

Gate order: the model (like torch) stacks the LSTM's four gates as i, f, g, o; ONNX's LSTM
operator wants i, o, f, c, so the ONNX export reorders the 4H rows. A GRU stacks r, z, n; ONNX's
GRU operator wants z, r, h, with linear_before_reset=1 (torch's placement of the reset gate).
JSON and NPZ keep torch's order and names.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np

from lstm_cli import __version__, atomic, cells, modelfile, windows
from lstm_cli import intervals as conformal
from lstm_cli.errors import MissingDependencyError, ModelFileError, UsageError

FORMATS = ("onnx", "json", "npz")
SCALINGS = ("series", "level", "seasonal")  # data.scaling values whose forecast this module reproduces
JSON_FORMAT = "lstm-export-json"
JSON_VERSION = 1
ONNX_OPSET = 17  # LSTM-14, Squeeze/Unsqueeze with axes as input (13), TopK-11: onnxruntime >= 1.11
ONNX_IR_VERSION = 8  # the IR version that goes with opset 17: older runtimes can load the file too
MAX_IDS_IN_ONNX_METADATA = 10_000
ONNX_MAX_BYTES = 2**31 - 2**24  # a protobuf message is at most 2 GiB; keep room for the graph
# torch's gate blocks -> ONNX's: LSTM i, f, g, o -> i, o, f, c; GRU r, z, n -> z, r, h
ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
ONNX_OP = {"lstm": "LSTM", "gru": "GRU"}


def lstm_names(num_layers: int) -> list[str]:
    """The model file's recurrent array names in torch's state_dict order (without the module
    prefix); the same for both cells."""
    return [f"{kind}_l{k}" for k in range(num_layers)
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def state_dict_arrays(header: dict, arrays) -> dict[str, np.ndarray]:
    """{torch state_dict name: array}: 'lstm.weight_ih_l0' (or 'gru.weight_ih_l0'), ...,
    'head.weight', 'head.bias': a module with the cell as attribute `lstm` or `gru` and the head
    as `head` loads it with load_state_dict."""
    prefix = header["arch"]["cell"]
    out = {f"{prefix}.{name}": np.asarray(arrays[name]) for name in lstm_names(header["arch"]["num_layers"])}
    out["head.weight"] = np.asarray(arrays["head.weight"])
    out["head.bias"] = np.asarray(arrays["head.bias"])
    return out


HORIZON_FLAG = "horizon_flag"


def known_inputs(d: dict) -> dict:
    """The columns of a model's data section (header["data"]) in the order the network reads them.
    "columns": the data columns (targets, past features, future features); "derived_columns": the
    calendar and holiday columns computed from the timestamps; "known_columns": what is known of
    the forecast steps (future features, then derived columns); "input_columns": every input of
    the network (columns, derived, and the horizon flag when there are known inputs); "n_past": the
    leading columns known only up to the forecast origin (targets, then past features); "regressors":
    the positions in input_columns of the inputs whose linear effect on the targets is fitted."""
    from lstm_cli import calendar

    future, components, holidays = list(d.get("future_features", [])), list(d.get("calendar", [])), d.get("holidays")
    derived = list(calendar.column_names(components, holidays)) if components or holidays else []
    columns = list(d["targets"]) + list(d["features"]) + future
    known = future + derived
    n_past = len(d["targets"]) + len(d["features"])
    # the inputs with a fitted linear effect (model.DataSpec.regressors): future features, then the holiday column
    regressors = list(range(n_past, n_past + len(future))) + ([len(columns) + len(derived) - 1] if holidays else [])
    return {"columns": columns, "derived_columns": derived, "known_columns": known,
            "input_columns": columns + derived + ([HORIZON_FLAG] if known else []),
            "n_past": n_past, "regressors": regressors}


def metadata(header: dict) -> dict:
    """What a consumer needs besides the weights: columns, window, frequency, series, network sizes."""
    d, a, s = header["data"], header["arch"], header["series"]
    if d["scaling"] not in SCALINGS:  # a newer model kind: exporting it as "series" would be wrong
        raise ModelFileError(f"this model uses scaling {d['scaling']!r}, which export does not know "
                             f"(it knows {', '.join(SCALINGS)}); use the lstm version that wrote it")
    cols = known_inputs(d)
    return {
        "targets": list(d["targets"]),
        "features": list(d["features"]),
        "future_features": list(d.get("future_features", [])),
        "calendar": list(d.get("calendar", [])),
        "holidays": d.get("holidays"),
        "derived_columns": cols["derived_columns"],
        "known_columns": cols["known_columns"],
        "input_columns": cols["input_columns"],
        "n_past": cols["n_past"],
        "regressors": cols["regressors"],
        "regressor_columns": [cols["input_columns"][i] for i in cols["regressors"]],
        "known_coef": [list(row) for row in d.get("known_coef", [])],
        "known_intercept": list(d.get("known_intercept", [])),
        "time_col": d["time_col"],
        "id_col": d["id_col"],
        "freq": d["freq"],
        "step": d["step"],
        "time_kind": d["time_kind"],
        "lookback": d["lookback"],
        "horizon": d["horizon"],
        "quantiles": list(d["quantiles"]),
        "strategy": d["strategy"],
        "scaling": d["scaling"],
        "season": d.get("season", 1),
        "blend": d.get("blend", 0.0),
        "ids": list(s["ids"]),
        "last_time": list(s["last_time"]),
        "cell": a["cell"],
        "num_layers": a["num_layers"],
        "hidden_size": a["hidden_size"],
        "input_size": a["input_size"],
        "output_size": a["output_size"],
        "dtype": a["dtype"],
        "output_layout": "[step][target][quantile]",
        "created": header.get("created"),
        "lstm_version": header.get("lstm_version"),
        **({"intervals": table} if (table := interval_table(header)) else {}),  # none: the export is as before
    }


INTERVALS_LAYOUT = "[level][step][target]"  # metadata intervals.quantiles
BOUNDS_LAYOUT = "[step][target][level]"  # the ONNX outputs lower and upper, after the batch axis


def band_columns(quantiles, levels) -> list[list[int]]:
    """[[column of (1 - level / 100) / 2, column of its mirror], ...] of a quantile grid, per level: the
    band a cqr table widens (or narrows). ModelFileError when the grid lacks a level's pair."""
    pairs = conformal.grid_levels(quantiles)
    missing = [level for level in levels if float(level) not in pairs]
    if missing:
        raise ModelFileError(f"the model's intervals are conformalized quantiles at level {missing[0]:g}%, but its "
                             f"quantiles {list(quantiles)} have no pair for that level; the file is damaged: "
                             "retrain the model")
    return [list(pairs[float(level)]) for level in levels]


def interval_table(header: dict) -> dict | None:
    """The conformal table (header "intervals") as every export carries it, or None without one:
    levels, method ("absolute", also for files written before "method" existed; "cqr"), scale,
    origins, scores, quantiles [level][step][target], and the forecast columns the bounds start
    from (point_column, and for cqr band_columns), so a client computes what predict --intervals does."""
    table = header.get("intervals")
    if not table:
        return None
    quantiles = header["data"]["quantiles"]
    method = conformal.method(table)
    out = {"levels": [float(v) for v in table["levels"]], "method": method, "scale": table["scale"],
           "origins": table["origins"], "scores": table["scores"], "quantiles": table["quantiles"],
           "quantiles_layout": INTERVALS_LAYOUT, "point_column": conformal.point_index(len(quantiles))}
    if method == conformal.CQR:
        out["band_columns"] = band_columns(quantiles, table["levels"])
    return out


NO_BOUNDS_NOTE = ("the model's intervals are scaled by each series' whole history (it was calibrated by an older "
                  "lstm), which the ONNX graph cannot compute from its window: the graph has no lower/upper "
                  "outputs (the JSON and NPZ exports carry the table); retrain the model for bounds in the graph")


def graph_has_bounds(table: dict | None) -> bool:
    """Whether the ONNX graph can compute the table's bounds: only from the window's own scale."""
    return bool(table) and table["scale"] == conformal.SCALE


def export_notes(header: dict, fmt: str) -> list[str]:
    """What the export command says on stderr: an ONNX graph without the bounds the model has."""
    table = header.get("intervals")
    if fmt == "onnx" and table and not graph_has_bounds(table):
        return [NO_BOUNDS_NOTE]
    return []


COMBINATION = "median"  # how an ensemble's members' forecasts combine (model.Ensemble.forecast)
# what an ensemble member has of its own (header "members": arch, data.lookback, data.scaling)
MEMBER_METADATA = ("lookback", "scaling", "cell", "num_layers", "hidden_size", "input_size", "output_size", "dtype")


def members_of(header: dict, arrays=None) -> list[tuple[dict, dict | None]]:
    """(header, arrays) of every model a file holds, each a whole model: the model itself, or an
    ensemble's members, member 0 first (model.member_headers; its arrays under the plain names)."""
    if not header.get("members"):
        return [(header, arrays)]
    from lstm_cli.model import member_headers  # (imports the kernels: only for ensembles)

    return member_headers(header, arrays)


def ensemble_metadata(parts: list[tuple[dict, dict | None]]) -> dict:
    """An ensemble's metadata: what its members share (as metadata(); "lookback" the longest, the
    rows a forecast reads), "combination" "median", and "members": each member's MEMBER_METADATA."""
    metas = [metadata(h) for h, _ in parts]
    longest = max(m["lookback"] for m in metas)
    shared = {k: (longest if k == "lookback" else v) for k, v in metas[0].items()
              if k == "lookback" or k not in MEMBER_METADATA}
    return {**shared, "combination": COMBINATION, "members": [{k: m[k] for k in MEMBER_METADATA} for m in metas]}


def member_metadata(header: dict) -> dict:
    """An ensemble member's metadata in the JSON export: metadata() without the series lists (the
    ensemble's, in its own metadata). Its "intervals" repeat the ensemble's: they calibrate the
    combined forecast, not the member's."""
    return {k: v for k, v in metadata(header).items() if k not in ("ids", "last_time")}


# --------------------------------------------------------------------------------------------
# JSON and NPZ


def to_json_text(header: dict, arrays) -> str:
    """The JSON export: metadata, scaler and state_dict as nested lists. Floats are written by
    Python's repr (shortest round-trip form of the exact value), so every weight reads back
    bit-identical (float32 weights as their exact float64 value). An ensemble has no state_dict
    of its own (a reader of single models fails instead of forecasting with one member): "members"
    lists each member's {"metadata", "state_dict"}; the scaler is theirs, shared."""
    parts = members_of(header, arrays)

    def weights(h, a) -> dict:
        return {name: v.tolist() for name, v in state_dict_arrays(h, a).items()}

    doc = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "metadata": metadata(header) if len(parts) == 1 else ensemble_metadata(parts),
        "scaler": {"loc": np.asarray(arrays["scaler.loc"]).tolist(),
                   "scale": np.asarray(arrays["scaler.scale"]).tolist()},
    }
    if len(parts) == 1:
        doc["state_dict"] = weights(header, arrays)
    else:
        doc["members"] = [{"metadata": member_metadata(h), "state_dict": weights(h, a)} for h, a in parts]
    return json.dumps(doc, allow_nan=False) + "\n"


def to_npz_bytes(header: dict, arrays) -> bytes:
    """The NPZ export: the state_dict arrays (model dtype), scaler.loc and scaler.scale
    (float64), and `metadata_json`, a 0-d unicode array; loads with np.load(allow_pickle=False).
    The metadata is the JSON export's (a model's conformal table too: metadata "intervals").
    An ensemble's member i has its state_dict under "member{i}." (member0.lstm.weight_ih_l0, ...)."""
    parts = members_of(header, arrays)
    if len(parts) == 1:
        named, meta = dict(state_dict_arrays(header, arrays)), metadata(header)
    else:
        named = {f"member{i}.{name}": v for i, (h, a) in enumerate(parts)
                 for name, v in state_dict_arrays(h, a).items()}
        meta = ensemble_metadata(parts)
    named["scaler.loc"] = np.asarray(arrays["scaler.loc"])
    named["scaler.scale"] = np.asarray(arrays["scaler.scale"])
    named["metadata_json"] = np.array(json.dumps(meta, allow_nan=False))
    buf = io.BytesIO()
    np.savez(buf, **named)  # (np.ascontiguousarray would turn the 0-d metadata_json into 1-d)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# ONNX


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            f"exporting to ONNX needs the onnx package ({e}); install it with: "
            "pip install 'lstm-cli[onnx]'") from None
    return onnx


CALENDAR_FORMULAS = {  # what calendar.derive computes, in words (t: a row's timestamp, naive or UTC)
    "hour": "hour_sin, hour_cos = sin, cos(2 pi p), p = time of day / 24 h",
    "dayofweek": "dayofweek_sin, dayofweek_cos = sin, cos(2 pi p), p = (weekday, Monday = 0, + time of day "
                 "in days) / 7",
    "dayofyear": "dayofyear_sin, dayofyear_cos = sin, cos(2 pi p), p = (day of year - 1 + time of day in days) "
                 "/ days in that year (365 or 366)",
    "month": "month_sin, month_cos = sin, cos(2 pi p), p = (month - 1) / 12",
}


def known_inputs_doc(d: dict) -> list[str]:
    """Lines of the ONNX doc_string on inputs known in advance: the derived columns' formulas."""
    lines = [CALENDAR_FORMULAS[c] for c in d.get("calendar", [])]
    if d.get("holidays"):
        lines.append(f"holiday = the number of public holidays of {d['holidays']!r} (python package `holidays`, "
                     "observed days included) in the row's step: the dates t .. t + step - 1 day for steps of a "
                     "day or more (rounded to whole days); for steps of 28 days or more the step's calendar "
                     "months (a row in the first half of its month starts them, one from day 16 ends them); "
                     "1 if t's date is a holiday for shorter steps")
    return lines


def onnx_doc(header: dict) -> str:
    """The graph's doc_string: its inputs and output, and how the forecast is computed; for an
    ensemble, what each member does differently and how their forecasts combine."""
    parts = members_of(header)
    if len(parts) == 1:
        a = header["arch"]
        cell = ONNX_OP[a["cell"]]
        return "\n".join([f"{cell} forecaster exported by lstm-cli {__version__}: {a['num_layers']} x "
                          f"{cell}({a['hidden_size']}) + dense head, scaling inside the graph.",
                          *_onnx_io_doc(header), *_onnx_bounds_doc(header), *_onnx_member_doc(header),
                          "Scaling and un-scaling run in float64 with the model's exact loc/scale."])
    longest = max(h["data"]["lookback"] for h, _ in parts)
    lines = [f"Ensemble of {len(parts)} forecasters exported by lstm-cli {__version__}: every member's graph side "
             f"by side, then their {ensemble_rule(len(parts))}; scaling inside the graph.",
             *_onnx_io_doc({**header, "data": {**header["data"], "lookback": longest}})]
    for i, (h, _) in enumerate(parts):
        a, L = h["arch"], h["data"]["lookback"]
        cell = ONNX_OP[a["cell"]]
        lines.append(f"Member {i}: {a['num_layers']} x {cell}({a['hidden_size']}) + dense head, lookback {L} (the "
                     f"last {L} rows of x), scaling {h['data']['scaling']}."
                     + "".join(f" {line}" for line in _onnx_member_doc(h)))
    lines += _onnx_bounds_doc(header)
    lines.append("Scaling and un-scaling run in float64 with the model's exact loc/scale, and so does the median.")
    return "\n".join(lines)


def _onnx_bounds_doc(header: dict) -> list[str]:
    """The doc_string's lines on the outputs lower and upper (or why a model with intervals has none)."""
    table = interval_table(header)
    if not table:
        return []
    if not graph_has_bounds(table):
        return [f"No lower/upper outputs: {NO_BOUNDS_NOTE}."]
    d = header["data"]
    shape = f"[batch, {d['horizon']}, {len(d['targets'])}, {len(table['levels'])}]"
    scale = ("with s[k] the mean absolute one-step change of target k over the rows of x (1 where it is 0 or not "
             "finite) and Q the calibration's quantiles (initializer interval_quantiles, [step][target][level])")
    if table["method"] == "cqr":
        rule = (f"lower = min(q_lo - Q s, p), upper = max(q_hi + Q s, p), {scale}, q_lo and q_hi the forecast's "
                f"quantiles (1 -/+ level / 100) / 2 (metadata intervals band_columns) and p its quantile "
                f"{d['quantiles'][table['point_column']]:g} (conformalized quantiles: never crossing p)")
    else:
        rule = f"lower = forecast - Q s, upper = forecast + Q s, {scale}"
    return [f"Outputs lower and upper: float32 {shape}, the split-conformal intervals at levels "
            f"{[float(v) for v in table['levels']]} percent (metadata interval_levels) around the forecast: {rule}."]


def ensemble_rule(n: int) -> str:
    """How the graph combines n members' forecasts (model.Ensemble.forecast), in words."""
    middle = (f"the middle one of the {n} sorted values" if n % 2
              else f"the mean of the two middle ones of the {n} sorted values")
    return (f"median per step, target and quantile ({middle}; quantiles sorted again after it, so they never "
            "cross)")


def _onnx_io_doc(header: dict) -> list[str]:
    """The doc_string's lines on the graph's inputs and output (lookback: the rows x holds)."""
    d = header["data"]
    K, nq, L = len(d["targets"]), len(d["quantiles"]), d["lookback"]
    cols = known_inputs(d)
    lines = []
    if not cols["known_columns"]:
        lines.append(f"Input x: float32 [batch, {L}, {len(cols['columns'])}], the last {L} raw rows (oldest first) "
                     f"of each series, columns {cols['columns']} (targets, then features), in original units.")
    else:
        x_cols = cols["columns"] + cols["derived_columns"]
        lines += [
            f"Input x: float32 [batch, {L}, {len(x_cols)}], the last {L} raw rows (oldest first) of each series, "
            f"columns {x_cols} (targets, past features, future features, in original units, then the calendar "
            f"and holiday columns of each row's timestamp).",
            f"Input future: float32 [batch, {d['horizon']}, {len(cols['known_columns'])}], what is known of the "
            f"{d['horizon']} forecast steps (the timestamps after each series' last row, one step apart): columns "
            f"{cols['known_columns']} (future features in original units, then the calendar and holiday columns "
            f"of each step's timestamp).",
        ]
        if cols["derived_columns"]:
            lines.append("Calendar and holiday columns (computed by the caller, for x and future alike): "
                         + "; ".join(known_inputs_doc(d)) + ".")
        lines.append(
            f"The graph scales x and future (derived columns have loc 0, scale 1), makes only the first "
            f"{cols['n_past']} columns (targets, past features) relative to the window's last row for 'level' and "
            f"'seasonal' models, appends the column {HORIZON_FLAG!r} (0 on the window's rows), and then one row "
            f"per forecast step: past columns 0, the step's scaled known columns, {HORIZON_FLAG} 1. The "
            f"recurrent stack reads lookback + steps rows; the head reads its final state.")
    if d.get("known_coef"):
        names = [cols["input_columns"][i] for i in cols["regressors"]]
        lines.append(
            f"Known effect: the targets' fitted linear effect of the regressors {names} (scaled; metadata "
            f"known_coef, one row per regressor, and known_intercept), effect = scaled regressors @ known_coef + "
            f"known_intercept, is subtracted from the window's scaled targets, so the network, anchor and blend "
            f"forecast the residual; the effect of each forecast step's scaled regressors (from future) is added "
            f"to the scaled forecast before un-scaling (the recursive feedback is the residual).")
    if d["id_col"] is not None:
        lines.append(
            f"Input series_index: int64 [batch], the row of each window's series in metadata 'ids' "
            f"(values of column {d['id_col']!r}; 0 <= index < {len(header['series']['ids'])}); it selects "
            f"that series' scaler. Series the model was not trained on have no scaler here.")
    shape = f"[batch, {d['horizon']}, {K}" + (f", {nq}]" if nq else "]")
    lines.append(
        f"Output forecast: float32 {shape}, the next {d['horizon']} steps of {list(d['targets'])}"
        + (f" at quantiles {list(d['quantiles'])} (sorted, never crossing)" if nq else "")
        + " in original units. Longer horizons (lstm predict --horizon) roll the model forward "
          "recursively and are not part of this graph.")
    if d["strategy"] == "recursive":
        lines.append(f"The model is recursive: its network forecasts one step. The graph unrolls the recursion "
                     f"{d['horizon']} times with the same weights: each step's forecast"
                     + (" (its median quantile)" if nq else "") + " is appended to the scaled window as its "
                     "newest row" + (f" (with that step's scaled known columns, future[:, i], and {HORIZON_FLAG} 0)"
                                     if cols["known_columns"] else "")
                     + ", the oldest row is dropped, and the network runs again"
                     + (" on the window and step i + 1's row" if cols["known_columns"] else "") + ".")
    return lines


def _onnx_member_doc(header: dict) -> list[str]:
    """The doc_string's lines on what one model (or ensemble member) computes: dtype, anchor, blend."""
    d, a = header["data"], header["arch"]
    cell = ONNX_OP[a["cell"]]
    lines = []
    if a["dtype"] == "float64":
        lines.append("The model was trained in float64; its weights are cast to float32 here because "
                     f"onnxruntime's {cell} operator has no double kernel.")
    if d["scaling"] == "level":
        lines.append("The network sees each scaled window minus its last row and forecasts changes "
                     "from that row; the graph subtracts and adds it back.")
    elif d["scaling"] == "seasonal":
        lines.append(f"The network sees each scaled window minus its last row and forecasts departures "
                     f"from the values one season ({d.get('season', 1)} steps) before each step (seasonal "
                     f"naive); the graph subtracts the last row and adds those values back.")
    if d.get("blend", 0.0):
        w, season = d["blend"], d.get("season", 1)
        partner = (f"seasonal naive (the values {season} steps before each step)"
                   if windows.has_seasonal_naive(d["lookback"], season) else "naive (the last row)")
        lines.append(f"The forecast is blended: {1 - w:.6g} x the network's forecast + {w:.6g} x {partner}; "
                     f"the head is stored already scaled by {1 - w:.6g} and the graph mixes the anchor.")
    return lines


class _GraphBuilder:
    """The nodes and initializers of an ONNX graph being built. Names get `prefix`: an ensemble's
    members build the same subgraph side by side ("member1_x_f64", ...); a single model's have none.
    Constants are shared by name (small axes; the one scaler of an ensemble's members)."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.inits, self.nodes, self.names, self.prefix = [], [], set(), ""

    def const(self, name: str, value: np.ndarray, shared: bool = False) -> str:
        name = name if shared else self.prefix + name
        if name not in self.names:
            self.names.add(name)
            self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        output = self.prefix + output
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=f"{op}_{output}", **attrs))
        return output

    def multi(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> list[str]:
        """A node of several outputs ("" for an unused one): LSTM, GRU, TopK."""
        outputs = [self.prefix + o if o else "" for o in outputs]
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=self.prefix + name, **attrs))
        return outputs


def _check_onnx_exportable(header: dict) -> None:
    metadata(header)  # refuses a scaling mode this module does not know, before any work
    d = header["data"]
    if d["strategy"] == "recursive" and d["features"]:  # lstm train refuses to make one
        raise UsageError("this model is recursive but reads features, whose future values are unknown: "
                         "its forecast cannot be unrolled")


def _onnx_weight_bytes(header: dict, arrays, scaler: bool = True) -> int:
    """The bytes a model's weights (and scaler) take in the graph: float32 weights, float64 scalers."""
    n = sum(np.asarray(arrays[name]).size * 4 for name in lstm_names(header["arch"]["num_layers"])) \
        + np.asarray(arrays["head.weight"]).size * 4
    return n + (np.asarray(arrays["scaler.loc"]).size * 32 if scaler else 0)


def to_onnx_bytes(header: dict, arrays) -> bytes:
    """A self-contained ONNX model (opset 17) of the forecast: raw windows in, forecasts out. An
    ensemble's graph holds every member's subgraph (each reads its own last rows of x) and their
    median (_onnx_median), as model.Ensemble.forecast computes it."""
    onnx = _import_onnx()
    from onnx import TensorProto, helper

    parts = members_of(header, arrays)
    for part, _ in parts:
        _check_onnx_exportable(part)
    meta = metadata(header) if len(parts) == 1 else ensemble_metadata(parts)
    n_bytes = sum(_onnx_weight_bytes(h, a, scaler=i == 0) for i, (h, a) in enumerate(parts))
    if n_bytes > ONNX_MAX_BYTES:
        raise UsageError(f"this model's weights ({n_bytes / 2**30:.1f} GiB) exceed what one ONNX file "
                         "holds (2 GiB, a protobuf limit); export --format npz instead")
    d = header["data"]
    lookback, horizon = meta["lookback"], d["horizon"]
    K, nq = len(d["targets"]), len(d["quantiles"])
    g = _GraphBuilder()
    if len(parts) == 1:
        y = _onnx_forecast(g, header, arrays, "x")
    else:
        y = _onnx_median(g, parts, lookback)

    table = interval_table(header)
    bounds = _onnx_bounds(g, table, y, K) if graph_has_bounds(table) else ()  # from the combined forecast

    # --- the output: float32, without the quantile axis for point models ----------------------
    if nq:
        g.node("Cast", [y], "forecast", to=TensorProto.FLOAT)
    else:
        g.node("Squeeze", [g.node("Cast", [y], "forecast_4d", to=TensorProto.FLOAT),
                           g.const("axes_3", np.array([3], np.int64))], "forecast")
    for name, value in zip(("lower", "upper"), bounds, strict=False):
        g.node("Cast", [value], name, to=TensorProto.FLOAT)

    cols = known_inputs(d)
    n_x = len(cols["columns"]) + len(cols["derived_columns"])  # the graph adds the horizon flag
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", lookback, n_x])]
    if d["id_col"] is not None:
        inputs.append(helper.make_tensor_value_info("series_index", TensorProto.INT64, ["batch"]))
    if cols["known_columns"]:
        inputs.append(helper.make_tensor_value_info("future", TensorProto.FLOAT,
                                                    ["batch", horizon, len(cols["known_columns"])]))
    out_shape = ["batch", horizon, K] + ([nq] if nq else [])
    outputs = [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, out_shape)]
    if bounds:
        band_shape = ["batch", horizon, K, len(table["levels"])]
        outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, band_shape) for name in ("lower", "upper")]
    graph = helper.make_graph(g.nodes, "lstm_forecaster", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION, producer_name="lstm-cli",
                              producer_version=__version__, doc_string=onnx_doc(header))
    helper.set_model_props(model, onnx_metadata_props(meta))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _onnx_bounds(g: _GraphBuilder, table: dict, y: str, K: int) -> tuple[str, str]:
    """lower and upper (B, horizon, K, levels) float64 of the forecast y (B, horizon, K, max(nq, 1))
    float64, as intervals.bounds computes them: the quantiles x the scale of the raw window x (its
    target columns' mean absolute one-step change, 1 where that is 0 or not finite), subtracted
    from / added to the point (absolute), or to the band's quantiles and clamped at the point (cqr).
    x is the graph's input: an ensemble's is its longest lookback, as its spec's (what predict reads)."""
    from onnx import TensorProto

    const, node = g.const, g.node

    def ints(name: str, *values: int) -> str:
        return const(f"interval_{name}", np.array(values, np.int64))

    targets = node("Cast", [node("Slice", ["x", ints("zero", 0), ints("n_targets", K), ints("axes_2", 2)],
                                 "interval_x_targets")], "interval_x_targets_f64", to=TensorProto.DOUBLE)
    later = node("Slice", [targets, ints("one", 1), ints("int64_max", np.iinfo(np.int64).max), ints("axes_1", 1)],
                 "interval_x_later")
    earlier = node("Slice", [targets, ints("zero", 0), ints("minus_one", -1), ints("axes_1", 1)], "interval_x_earlier")
    mean_step = node("ReduceMean", [node("Abs", [node("Sub", [later, earlier], "interval_x_steps")],
                                         "interval_x_abs_steps")], "interval_mean_abs_step", axes=[1], keepdims=1)
    usable = node("And", [node("Greater", [mean_step, const("interval_zero_f64", np.array(0.0))], "interval_positive"),
                          node("Not", [node("IsInf", [mean_step], "interval_infinite")], "interval_finite")],
                  "interval_usable")  # NaN is not > 0: an empty mean (lookback 1) or a NaN window falls back too
    scale = node("Where", [usable, mean_step, const("interval_one_f64", np.array(1.0))], "interval_scale")  # (B, 1, K)
    scale = node("Unsqueeze", [scale, ints("axes_3", 3)], "interval_scale_4d")  # (B, 1, K, 1)
    quantiles = np.transpose(np.asarray(table["quantiles"], dtype=np.float64), (1, 2, 0))  # (horizon, K, levels)
    width = node("Mul", [scale, const("interval_quantiles", np.ascontiguousarray(quantiles))], "interval_width")
    point = node("Gather", [y, ints("point_column", table["point_column"])], "interval_point", axis=3)  # (B, h, K, 1)
    if table["method"] != "cqr":
        return (node("Sub", [point, width], "interval_lower_f64"), node("Add", [point, width], "interval_upper_f64"))
    low, high = (node("Gather", [y, ints(f"band_{side}_columns", *(pair[i] for pair in table["band_columns"]))],
                      f"interval_band_{side}", axis=3) for i, side in enumerate(("lo", "hi")))  # (B, h, K, levels)
    return (node("Min", [node("Sub", [low, width], "interval_band_lo_widened"), point], "interval_lower_f64"),
            node("Max", [node("Add", [high, width], "interval_band_hi_widened"), point], "interval_upper_f64"))


def _onnx_median(g: _GraphBuilder, parts: list[tuple[dict, dict]], lookback: int) -> str:
    """Every member's forecast (its subgraph's names prefixed "member{i}_"; x cut to its own last
    rows), stacked on a last axis, and their median: ONNX has no median operator, so TopK takes the
    N // 2 + 1 smallest and the graph averages the middle one (N odd) or two (N even), as
    np.median does. Quantiles are sorted again after it. Returns (B, horizon, K, max(nq, 1)) float64."""
    stacked = []
    for i, (h, a) in enumerate(parts):
        g.prefix = f"member{i}_"
        rows = h["data"]["lookback"]
        x = "x"
        if rows < lookback:  # the member reads the last `rows` rows of the longest window
            x = g.node("Slice", ["x", g.const("x_rows_from", np.array([-rows], np.int64)),
                                 g.const("int64_max", np.array([np.iinfo(np.int64).max], np.int64), shared=True),
                                 g.const("axes_1", np.array([1], np.int64), shared=True)], "x")
        y = _onnx_forecast(g, h, a, x)
        stacked.append(g.node("Unsqueeze", [y, g.const("axes_4", np.array([4], np.int64), shared=True)],
                              "forecast_stacked"))
    g.prefix = ""
    n = len(parts)
    members = g.node("Concat", stacked, "member_forecasts", axis=4)  # (B, horizon, K, Q, N)
    lowest, _ = g.multi("TopK", [members, g.const("median_k", np.array([n // 2 + 1], np.int64))],
                        ["member_forecasts_lowest", "member_forecasts_lowest_index"], "TopK_member_forecasts_lowest",
                        axis=4, largest=0, sorted=1)
    middle = np.array([n // 2] if n % 2 else [n // 2 - 1, n // 2], np.int64)
    y = g.node("ReduceMean", [g.node("Gather", [lowest, g.const("median_ranks", middle)], "median_middle", axis=4)],
               "median", axes=[4], keepdims=0)
    nq = len(parts[0][0]["data"]["quantiles"])
    if nq > 1:  # the median of sorted quantiles can cross: sort again, as the ensemble does
        y, _ = g.multi("TopK", [y, g.const("n_quantiles", np.array([nq], np.int64))],
                       ["median_sorted", "median_sorted_index"], "TopK_median_sorted", axis=-1, largest=0, sorted=1)
    return y


def _onnx_forecast(g: _GraphBuilder, header: dict, arrays, x: str) -> str:
    """The subgraph of one model's forecast from the raw window `x` (B, lookback, n_x): scaling,
    the network (unrolled for recursive models), anchor, blend and un-scaling. Returns its name,
    (B, horizon, K, max(nq, 1)) float64 in original units."""
    from onnx import TensorProto

    const, node = g.const, g.node
    a, d = header["arch"], header["data"]
    H, n_layers, D = a["hidden_size"], a["num_layers"], a["input_size"]
    lookback, horizon = d["lookback"], d["horizon"]
    K, nq = len(d["targets"]), len(d["quantiles"])
    panel = d["id_col"] is not None

    loc = np.asarray(arrays["scaler.loc"], dtype=np.float64)  # (S, C)
    scale = np.asarray(arrays["scaler.scale"], dtype=np.float64)

    def axes(*values: int) -> str:
        return const("axes_" + "_".join(map(str, values)), np.array(values, np.int64))

    cols = known_inputs(d)
    n_known, n_past = len(cols["known_columns"]), cols["n_past"]
    n_x = D - 1 if n_known else D  # the columns of x: the graph adds the horizon flag

    def per_series(name: str, values: np.ndarray, output: bool = False) -> str:
        """values (S, C) of the window's series: gathered by series_index (B, 1, C), or (B, 1, C, 1)
        for the output side; a model of one series broadcasts its single row, (C,) or (C, 1).
        (An ensemble's members share one scaler: these constants too.)"""
        if not panel:
            return const(name, values[0, :, None] if output else values[0], shared=True)
        rows = node("Gather", [const(name, values, shared=True), "series_index"], f"{name}_rows", axis=0)
        return node("Unsqueeze", [rows, axes(1, 3) if output else axes(1)], f"{name}_of_window")

    def scaled(raw: str, first: int, stop: int, tag: str) -> str:
        """(raw - loc[s, first:stop]) / scale[s, first:stop] in float64."""
        raw64 = node("Cast", [raw], f"{tag}_f64", to=TensorProto.DOUBLE)
        centered = node("Sub", [raw64, per_series(f"{tag}_loc", loc[:, first:stop])], f"{tag}_centered")
        return node("Div", [centered, per_series(f"{tag}_scale", scale[:, first:stop])], f"{tag}_scaled_f64")

    def pad_last_axis(value: str, before: int, after: int, name: str) -> str:
        """value (B, T, C) with zero columns added before and after its last axis."""
        pads = const(f"pads_{before}_{after}", np.array([0, 0, before, 0, 0, after], np.int64))
        return node("Pad", [value, pads], name, mode="constant")

    coef = np.asarray(d.get("known_coef", []), dtype=np.float64).reshape(-1, K)  # (R, K); R = 0: no effect

    def known_effect(rows: str, first: int, tag: str) -> str:
        """rows[..., regressors - first] @ known_coef + known_intercept (B, T, K), float64: the fitted
        effect of the regressors on the scaled targets (model.DataSpec.known_effect), from scaled rows
        whose columns start at input column `first`."""
        index = np.asarray(cols["regressors"], dtype=np.int64) - first
        taken = node("Gather", [rows, const(f"{tag}_regressor_columns", index)], f"{tag}_regressors", axis=2)
        linear = node("MatMul", [taken, const("known_coef", coef)], f"{tag}_known_effect_linear")
        return node("Add", [linear, const("known_intercept", np.asarray(d["known_intercept"], np.float64))],
                    f"{tag}_known_effect")

    # --- input scaling, float64: xs = (x - loc[s]) / scale[s] ---------------------------------
    xs = scaled(x, 0, n_x, "x")  # (B, lookback, n_x)
    if len(coef):  # the network, anchor and blend see the targets less the regressors' effect (the residual)
        xs = node("Sub", [xs, pad_last_axis(known_effect(xs, 0, "x"), 0, n_x - K, "x_known_effect_padded")],
                  "x_residual_f64")
    out_loc = per_series("target_loc", loc[:, :K], output=True)
    out_scale = per_series("target_scale", scale[:, :K], output=True)
    if n_known:  # the window's rows get the horizon flag 0; the known inputs of every step, scaled
        xs = pad_last_axis(xs, 0, 1, "x_flagged")  # (B, lookback, D)
        future_scaled = scaled("future", n_past, n_x, "future")  # (B, horizon, n_known)

    # --- the recurrent weights, shared by every call of the network ----------------------------
    cell = a["cell"]
    gates = np.array(ONNX_GATE_ORDER[cell])
    n_gates = cells.GATES[cell]
    op = ONNX_OP[cell]
    extra = {"linear_before_reset": 1} if cell == "gru" else {}
    layer_weights = []
    for k in range(n_layers):

        def reorder(v, k=k):  # (G*H, ...) torch's gate blocks -> onnx's, as float32
            v = np.asarray(arrays[v + f"_l{k}"], dtype=np.float32)
            return v.reshape(n_gates, H, *v.shape[1:])[gates].reshape(v.shape)

        layer_weights.append((const(f"W_l{k}", reorder("weight_ih")[None]),  # (1, GH, D_k)
                              const(f"R_l{k}", reorder("weight_hh")[None]),  # (1, GH, H)
                              const(f"B_l{k}", np.concatenate([reorder("bias_ih"), reorder("bias_hh")])[None])))
    head_weight = const("head_weight", np.asarray(arrays["head.weight"], np.float32))
    head_bias = const("head_bias", np.asarray(arrays["head.bias"], np.float32))
    steps = 1 if d["strategy"] == "recursive" else horizon  # what one call of the network forecasts
    rows = windows.anchor_rows(lookback, steps, d["scaling"], d.get("season", 1))
    blend = float(d.get("blend", 0.0))
    snaive_rows = windows.seasonal_naive_rows(lookback, steps, d.get("season", 1))

    def gather_targets(xs: str, index: np.ndarray, name: str, tag: str) -> str:
        """xs[:, index, :K] (B, steps, K): the rows of the window an anchor is taken from."""
        taken = node("Gather", [xs, const(name, index)], f"x_{name}{tag}", axis=1)  # (B, steps, C)
        return node("Slice", [taken, const("zero", np.array([0], np.int64)),
                              const("n_targets", np.array([K], np.int64)), axes(2)], f"{name}_targets{tag}")

    def known_steps(first: int, count: int, tag: str) -> str:
        """future_scaled[:, first : first + count] (B, count, n_known): those steps' known inputs."""
        return node("Gather", [future_scaled, const(f"steps_{first}_{count}", np.arange(first, first + count))],
                    f"future_scaled_steps{tag}", axis=1)

    flag_column = np.zeros(D)
    flag_column[-1] = 1.0

    def call(xs: str, tag: str, first: int = 0) -> str:
        """One call of the network on the scaled float64 window xs (B, lookback, C): anchor,
        inputs, the recurrent stack, the head and the quantile sort, as the forecaster does it.
        With known inputs, the rows of the steps first .. first + steps - 1 follow the window
        (windows.with_future_rows). Returns its forecast (B, steps, K, max(nq, 1)), scaled,
        float64, anchor added."""
        anchor = None  # the anchor of each step's targets (windows.split_anchor, same float64 operations)
        if rows is not None:
            anchor = gather_targets(xs, rows, "anchor_rows", tag)
            if blend:
                anchor = node("Mul", [anchor, const("one_minus_blend", np.array(1.0 - blend))], f"anchor_kept{tag}")
        if blend:
            snaive = node("Mul", [gather_targets(xs, snaive_rows, "snaive_rows", tag),
                                  const("blend", np.array(blend))], f"snaive_blended{tag}")
            anchor = snaive if anchor is None else node("Add", [anchor, snaive], f"anchor_blended{tag}")
        if rows is not None:  # the network sees the window relative to its last row
            last_row = node("Slice", [xs, const("last_row_start", np.array([-1], np.int64)),
                                      const("int64_max", np.array([np.iinfo(np.int64).max], np.int64)), axes(1)],
                            f"x_level{tag}")  # (B, 1, C)
            if n_known:  # only the past columns: known inputs mean something by themselves
                last_row = pad_last_axis(node("Slice", [last_row, const("zero", np.array([0], np.int64)),
                                                        const("n_past", np.array([n_past], np.int64)), axes(2)],
                                              f"x_level_past{tag}"), 0, D - n_past, f"x_level_padded{tag}")
            xs = node("Sub", [xs, last_row], f"x_minus_level_f64{tag}")
        if n_known:  # one row per forecast step: past columns 0, the step's known inputs, the flag 1
            ahead = pad_last_axis(known_steps(first, steps, tag), n_past, 1, f"future_rows_unflagged{tag}")
            ahead = node("Add", [ahead, const("horizon_flag_on", flag_column)], f"future_rows{tag}")
            xs = node("Concat", [xs, ahead], f"x_with_future_rows{tag}", axis=1)  # (B, lookback + steps, D)
        xs = node("Cast", [xs], f"x_scaled{tag}", to=TensorProto.FLOAT)
        seq = node("Transpose", [xs], f"x_time_major{tag}", perm=[1, 0, 2])  # (T, B, D): layout 0
        for k, (W, R, B) in enumerate(layer_weights):  # one ONNX LSTM (or GRU) node per layer
            top = k == n_layers - 1
            outputs = g.multi(op, [seq, W, R, B], ["", f"lstm{k}_Y_h{tag}"] if top else [f"lstm{k}_Y{tag}"],
                              f"{op}_l{k}{tag}", hidden_size=H, direction="forward", layout=0, **extra)
            if not top:  # Y (T, 1, B, H) -> the next layer's input (T, B, H)
                seq = node("Squeeze", [outputs[0], axes(1)], f"lstm{k}_out{tag}")
        h = node("Squeeze", [outputs[1], axes(0)], f"h_last{tag}")
        y = node("Gemm", [h, head_weight, head_bias], f"head_out{tag}", transB=1)
        y = node("Reshape", [y, const(f"out_shape_{steps}", np.array([0, steps, K, max(nq, 1)], np.int64))],
                 f"y_scaled{tag}")
        if nq > 1:  # the forecaster sorts the quantiles of each (step, target): they never cross
            y, _ = g.multi("TopK", [y, const("n_quantiles", np.array([nq], np.int64))],
                           [f"y_sorted{tag}", f"y_sorted_index{tag}"], f"TopK_y_sorted{tag}", axis=-1, largest=0,
                           sorted=1)
        y = node("Cast", [y], f"y_scaled_f64{tag}", to=TensorProto.DOUBLE)
        if anchor is not None:  # add back the anchor (the same for every quantile: the sort holds)
            y = node("Add", [y, node("Unsqueeze", [anchor, axes(3)], f"anchor_4d{tag}")], f"y_plus_anchor{tag}")
        return y

    if steps == horizon:  # direct: one call forecasts every step
        y = call(xs, "")
    else:  # recursive: unrolled; each step's forecast (the median) becomes the window's newest row
        median = const("median_index", np.array([max(nq, 1) // 2], np.int64))
        ys = []
        for i in range(horizon):
            ys.append(call(xs, f"_step{i + 1}", i))
            if i < horizon - 1:
                new_row = node("Squeeze", [node("Gather", [ys[-1], median], f"median_step{i + 1}", axis=3),
                                           axes(3)], f"new_row_step{i + 1}")  # (B, 1, K)
                if n_known:  # with the step's known inputs, and the flag 0: the row is history now
                    new_row = pad_last_axis(node("Concat", [new_row, known_steps(i, 1, f"_row{i + 1}")],
                                                 f"new_row_known_step{i + 1}", axis=2), 0, 1,
                                            f"new_row_flagged_step{i + 1}")
                grown = node("Concat", [xs, new_row], f"window_grown_step{i + 1}", axis=1)  # (B, lookback + 1, C)
                xs = node("Slice", [grown, const("one", np.array([1], np.int64)), const(
                    "int64_max", np.array([np.iinfo(np.int64).max], np.int64)), axes(1)], f"window_step{i + 2}")
        y = node("Concat", ys, "y_steps", axis=1)  # (B, horizon, K, max(nq, 1))
    if len(coef):  # the effect of the steps' known regressors, the same for every quantile (after the feedback)
        y = node("Add", [y, node("Unsqueeze", [known_effect(future_scaled, n_past, "future"), axes(3)],
                                 "future_known_effect_4d")], "y_plus_known_effect")

    # --- un-scaling ---------------------------------------------------------------------------
    return node("Add", [node("Mul", [y, out_scale], "y_times_scale"), out_loc], "forecast_f64")

def onnx_metadata_props(meta: dict) -> dict[str, str]:
    """metadata_props from metadata(header) (or ensemble_metadata: no cell or scaling of its own,
    "combination" and "members" instead): strings; numbers, lists and null as JSON; ids and
    last_time only for at most 10000 series; for a model with intervals, their table (without the
    quantiles), the graph's outputs, and the levels and layout of lower and upper."""
    props = {key: meta[key] for key in ("cell", "targets", "features", "time_col", "id_col", "freq", "step",
                                         "time_kind", "lookback", "horizon", "quantiles", "strategy", "scaling",
                                         "season", "blend", "dtype", "output_layout", "created", "lstm_version")
             if key in meta}
    props["n_series"] = len(meta["ids"])
    if len(meta["ids"]) <= MAX_IDS_IN_ONNX_METADATA:
        props["ids"], props["last_time"] = meta["ids"], meta["last_time"]
    props["inputs"] = ["x", "series_index"] if meta["id_col"] is not None else ["x"]
    props["x_columns"] = meta["input_columns"][:-1] if meta["known_columns"] else meta["input_columns"]  # input x
    for key in ("future_features", "calendar", "holidays", "derived_columns", "input_columns", "n_past", "regressors",
                "regressor_columns", "known_coef", "known_intercept"):
        props[key] = meta[key]
    if meta["known_columns"]:
        props["inputs"].append("future")
        props["future_columns"] = meta["known_columns"]  # what input future holds, per forecast step
    if "members" in meta:
        props["combination"], props["members"] = meta["combination"], meta["members"]
    if table := meta.get("intervals"):  # the table without its quantiles (the graph's initializer interval_quantiles)
        props["intervals"] = {k: v for k, v in table.items() if k != "quantiles"}
        if graph_has_bounds(table):
            props["outputs"] = ["forecast", "lower", "upper"]
            props["interval_levels"], props["bounds_layout"] = table["levels"], BOUNDS_LAYOUT
        else:
            props["outputs"], props["intervals_note"] = ["forecast"], NO_BOUNDS_NOTE
    if any(m["dtype"] == "float64" for m in meta.get("members", [meta])):
        props["note"] = "weights cast from float64 to float32 (onnxruntime's recurrent operators have no double kernel)"
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in props.items()}


# --------------------------------------------------------------------------------------------
# The command's pipeline


BUILDERS = {"onnx": to_onnx_bytes, "json": to_json_text, "npz": to_npz_bytes}


STDOUT = "-"  # --out - writes to stdout, as for lstm predict (a file named "-" would surprise)


def _check_stdout(fmt: str) -> None:
    if fmt != "json" and sys.stdout.isatty():  # binary bytes would garble the terminal
        raise UsageError(f"refusing to write a binary {fmt} export to a terminal; "
                         f"redirect stdout (> model.{fmt}) or give --out FILE")


def _write_stdout(data: bytes, fmt: str) -> None:
    """The whole export to stdout in one write, once it is built (a failure writes nothing)."""
    _check_stdout(fmt)
    stream = sys.stdout
    stream.flush()
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text-only stream (an embedding program's replacement for stdout)
        if fmt != "json":
            stream.write("")  # a stdout the shell closed fails here as for every command (exit 74)
            raise UsageError(f"stdout takes only text here; give --out FILE for a {fmt} export")
        stream.write(data.decode())
        stream.flush()
        return
    buffer.write(data)
    buffer.flush()


def export_model(model_path, fmt: str, out) -> dict:
    """Load the model file (read-only; never modified), build `fmt` and write it to `out`
    atomically under the output lock: on any failure `out` is left as it was. `out` "-" is
    stdout. Returns a small summary {"format", "out", "bytes", "notes"} (notes: for stderr)."""
    if fmt not in BUILDERS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    to_stdout = str(out) == STDOUT
    if to_stdout:
        _check_stdout(fmt)  # before any work
    else:
        atomic.check_output_path(out, inputs=(model_path,))
    if fmt == "onnx":
        _import_onnx()  # a missing extra fails before any work
    header, arrays = modelfile.load(model_path)
    content = BUILDERS[fmt](header, arrays)
    notes = export_notes(header, fmt)
    data = content.encode() if isinstance(content, str) else content
    if to_stdout:
        _write_stdout(data, fmt)
    else:
        with atomic.output_lock(out):
            atomic.atomic_write(out, data)
    return {"format": fmt, "out": str(out), "bytes": len(data), "notes": notes}
