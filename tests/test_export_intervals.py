"""`lstm export` of conformal intervals (issue 18): the ONNX graph's outputs `lower` and `upper`
give back `lstm predict --intervals all` (a point model, a panel ensemble whose members read
different lookbacks, a model with inputs known in advance, a conformalized quantile model); a
model without a table exports as before; JSON and NPZ carry the header's table, and the NumPy
snippet of docs/export.md computes the same bounds from it."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import export, intervals, modelfile
from lstm_cli.cli import cli
from tests import test_export_ensemble, test_export_future
from tests.test_export_ensemble import A10, A10_TARGET, DOC, FAST, PANEL, RTOL_FLOAT32
from tests.test_export_future import rel_diff

MODELS = {  # name: (data, train options); every one but "none" keeps the default --intervals 80,95
    "point": ("a10", [*A10_TARGET, "--horizon", "3"]),
    "none": ("a10", [*A10_TARGET, "--horizon", "3", "--intervals", "none"]),
    "panel_ensemble": ("panel", ["--id-col", "series_id", "--target", "departures_thousands", "--horizon", "3",
                                 "--ensemble", "2"]),
    "recursive_levels": ("a10", [*A10_TARGET, "--horizon", "4", "--strategy", "recursive", "--intervals",
                                 "50,80,99"]),
    "future": ("daily", ["--target", "sales", "--future-features", "promo", "--calendar", "dayofweek", "--horizon",
                         "3", "--lookback", "14"]),
    "cqr": ("a10", [*A10_TARGET, "--horizon", "3", "--quantiles", "0.1,0.25,0.5,0.75,0.9"]),
}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (model path, data path)."""
    root = tmp_path_factory.mktemp("export_intervals")
    data = {**test_export_future.write_data(root), "a10": A10, "panel": PANEL}
    out = {}
    for name, (kind, options) in MODELS.items():
        path = root / f"{name}.lstm"
        result = run("train", data[kind], *options, *FAST, "--out", path)
        assert result.exit_code == 0, result.output
        out[name] = (path, data[kind])
    return out


def case_of(models, name):
    """The model's Case of the other export tests: its windows (x, and made-up future inputs) as
    the graph takes them, and a CSV with those future rows for lstm predict."""
    path, data = models[name]
    header, _ = modelfile.load(path)
    if header.get("members"):
        case = test_export_ensemble.Case(path, data)
    else:
        case = test_export_future.Case(path, data)
        case.path, case.source, case.model = path, data, case.forecaster
    if name == "cqr" and not case.header.get("intervals"):
        pytest.skip("quantile models are not conformalized (lstm_cli.intervals has no CQR)")
    return case


def feed(case) -> dict[str, np.ndarray]:
    out = case.feed()
    if not case.spec.has_known:
        out.pop("future", None)
    return out


def session_of(case):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    data = export.to_onnx_bytes(case.header, case.arrays)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def predicted_bounds(case, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`lstm predict --intervals all`'s TARGET_loL / TARGET_hiL as (S, horizon, K, levels), in the
    model's ids order."""
    spec, levels = case.spec, case.header["intervals"]["levels"]
    result = run("predict", case.path, case.csv_with_future_rows(case.source, tmp_path / "data.csv"),
                 "--intervals", "all")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    parts = [frame[frame[spec.id_col].astype(str) == sid] for sid in case.model.ids] if spec.id_col else [frame]
    shape = (len(parts), spec.horizon, len(spec.targets), len(levels))
    return tuple(np.stack([p[[f"{t}_{side}{intervals.level_name(v)}" for t in spec.targets for v in levels]]
                           .to_numpy(np.float64) for p in parts]).reshape(shape) for side in ("lo", "hi"))


# --- ONNX -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["point", "panel_ensemble", "recursive_levels", "future", "cqr"])
def test_onnx_lower_and_upper_are_lstm_predicts_intervals(models, name, tmp_path):
    case = case_of(models, name)
    session = session_of(case)
    table = case.header["intervals"]
    shape = ["batch", case.spec.horizon, len(case.spec.targets), len(table["levels"])]
    assert [(o.name, o.shape) for o in session.get_outputs()][1:] == [("lower", shape), ("upper", shape)]
    forecast, lower, upper = session.run(["forecast", "lower", "upper"], feed(case))
    want_lower, want_upper = predicted_bounds(case, tmp_path)
    assert rel_diff(lower, want_lower) <= RTOL_FLOAT32
    assert rel_diff(upper, want_upper) <= RTOL_FLOAT32
    nq = len(case.spec.quantiles)
    point = (forecast[..., nq // 2] if nq else forecast)[..., None]  # the median column, or the point forecast
    assert (lower <= point).all() and (point <= upper).all()
    assert (upper - lower > 0).all()  # a band around the forecast, not the forecast itself
    if name == "cqr":  # the band starts from the quantiles, not from the median
        assert table.get("method") == "cqr"
        assert not np.allclose(lower, point - (upper - point))


def test_onnx_bounds_scale_by_the_window_given_and_fall_back_to_1_for_a_constant_one(models):
    """The graph computes the scale from x itself: a window with twice the steps (around the same
    last row) gets twice the width; a constant window has no step and gets the quantiles in the
    target's units (intervals.history_scale's 1.0)."""
    case = case_of(models, "point")
    session = session_of(case)
    x = feed(case)["x"]
    q = np.transpose(np.asarray(case.header["intervals"]["quantiles"]), (1, 2, 0))[None]  # (1, H, K, L)

    def width(window):
        forecast, lower, upper = session.run(["forecast", "lower", "upper"], {"x": window.astype(np.float32)})
        assert np.allclose(forecast[..., None] - lower, upper - forecast[..., None], rtol=1e-5)
        return (upper - lower) / 2

    steps = np.mean(np.abs(np.diff(x[..., 0].astype(np.float64), axis=1)))
    assert rel_diff(width(x), q * steps) <= RTOL_FLOAT32
    doubled = x[:, -1:] + 2.0 * (x - x[:, -1:])
    assert rel_diff(width(doubled), 2.0 * width(x)) <= 1e-4
    assert rel_diff(width(np.full_like(x, 20.0)), q) <= RTOL_FLOAT32


def test_onnx_of_a_model_without_intervals_is_as_before(models):
    onnx = pytest.importorskip("onnx")
    path, _ = models["none"]
    header, arrays = modelfile.load(path)
    assert "intervals" not in header
    model = onnx.load_from_string(export.to_onnx_bytes(header, arrays))
    assert [o.name for o in model.graph.output] == ["forecast"]
    names = [n.name for n in model.graph.node] + [i.name for i in model.graph.initializer]
    assert not any("interval" in n for n in names)
    props = {p.key for p in model.metadata_props}
    assert not props & {"intervals", "outputs", "interval_levels", "bounds_layout", "intervals_note"}
    assert "Outputs lower and upper" not in model.doc_string
    doc = json.loads(export.to_json_text(header, arrays))
    assert "intervals" not in doc["metadata"]
    # the same model with a table differs only by it: same forecast from the same graph nodes on
    with_table = {**header, "intervals": modelfile.load(models["point"][0])[0]["intervals"]}
    bigger = onnx.load_from_string(export.to_onnx_bytes(with_table, arrays))
    assert [o.name for o in bigger.graph.output] == ["forecast", "lower", "upper"]
    assert [n for n in bigger.graph.node if "interval" not in n.output[0] and n.output[0] not in ("lower", "upper")] \
        == list(model.graph.node)


def test_onnx_metadata_names_the_outputs_levels_and_layout(models):
    onnx = pytest.importorskip("onnx")
    case = case_of(models, "recursive_levels")
    model = onnx.load_from_string(export.to_onnx_bytes(case.header, case.arrays))
    props = {p.key: p.value for p in model.metadata_props}
    table = case.header["intervals"]
    assert json.loads(props["outputs"]) == ["forecast", "lower", "upper"]
    assert json.loads(props["interval_levels"]) == table["levels"] == [50.0, 80.0, 99.0]
    assert props["bounds_layout"] == "[step][target][level]"
    meta = json.loads(props["intervals"])
    assert "quantiles" not in meta  # they are the graph's initializer
    assert {k: meta[k] for k in table if k != "quantiles"} == {k: v for k, v in table.items() if k != "quantiles"}
    assert meta["method"] == table.get("method", "absolute") == "absolute"
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert np.array_equal(inits["interval_quantiles"], np.transpose(table["quantiles"], (1, 2, 0)))
    assert "Outputs lower and upper: float32 [batch, 4, 1, 3]" in model.doc_string


def test_a_model_calibrated_on_the_history_scale_exports_without_bounds_saying_so(models, tmp_path):
    """Models of the previous release scale by the whole history, which the graph does not see:
    no lower/upper, a note on stderr and in the metadata; JSON still carries the table."""
    onnx = pytest.importorskip("onnx")
    path, _ = models["point"]
    header, arrays = modelfile.load(path)
    header["intervals"] = {**header["intervals"], "scale": intervals.HISTORY_SCALE}
    old = tmp_path / "old.lstm"
    modelfile.save(old, header, arrays)
    result = run("export", old, "--format", "onnx", "--out", tmp_path / "old.onnx")
    assert result.exit_code == 0, result.output
    assert "note: the model's intervals are scaled by each series' whole history" in result.stderr
    model = onnx.load(tmp_path / "old.onnx")
    assert [o.name for o in model.graph.output] == ["forecast"]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["outputs"]) == ["forecast"] and "whole history" in props["intervals_note"]
    assert json.loads(props["intervals"])["scale"] == intervals.HISTORY_SCALE
    quiet = run("export", path, "--format", "onnx", "--out", tmp_path / "new.onnx")
    assert quiet.exit_code == 0 and "note" not in quiet.stderr
    json_run = run("export", old, "--format", "json", "--out", tmp_path / "old.json")
    assert json_run.exit_code == 0 and "note" not in json_run.stderr
    assert json.loads((tmp_path / "old.json").read_text())["metadata"]["intervals"]["scale"] == intervals.HISTORY_SCALE


# --- JSON and NPZ -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["point", "panel_ensemble", "cqr"])
def test_json_and_npz_carry_the_header_table(models, name):
    case = case_of(models, name)
    table = case.header["intervals"]
    doc = json.loads(export.to_json_text(case.header, case.arrays))
    got = doc["metadata"]["intervals"]
    for key in ("levels", "scale", "origins", "scores", "quantiles"):
        assert got[key] == table[key], key
    nq = len(case.spec.quantiles)
    assert got["method"] == table.get("method", "absolute")
    assert got["quantiles_layout"] == "[level][step][target]" and got["point_column"] == max(1, nq) // 2
    assert np.asarray(got["quantiles"]).shape == (len(table["levels"]), case.spec.horizon, len(case.spec.targets))
    if got["method"] == "cqr":
        qs = case.spec.quantiles
        pairs = np.array([[qs[i] + qs[j], qs[j] - qs[i]] for i, j in got["band_columns"]])  # q + (1 - q), the level
        assert np.allclose(pairs, [[1.0, v / 100] for v in table["levels"]])
    else:
        assert "band_columns" not in got
    if "members" in doc:  # each member's metadata is a whole model's: the same (the ensemble's) table
        assert all(m["metadata"]["intervals"] == got for m in doc["members"])
    with np.load(io.BytesIO(export.to_npz_bytes(case.header, case.arrays)), allow_pickle=False) as npz:
        assert json.loads(npz["metadata_json"].item())["intervals"] == got


def doc_snippet() -> str:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "def interval_bounds" in b]
    return block


@pytest.mark.parametrize("name", ["point", "panel_ensemble", "future", "cqr"])
def test_docs_numpy_snippet_computes_predicts_bounds_from_the_json_table(models, name, tmp_path):
    case = case_of(models, name)
    namespace = {}
    exec(doc_snippet(), namespace)
    table = json.loads(export.to_json_text(case.header, case.arrays))["metadata"]["intervals"]
    forecast = case.forecast() if isinstance(case, test_export_ensemble.Case) else case.expected()  # (S, H, K, nq)
    x = case.x()
    got = [namespace["interval_bounds"](x[s], forecast[s], table) for s in range(len(x))]
    want_lower, want_upper = predicted_bounds(case, tmp_path)
    assert rel_diff(np.stack([lo for lo, _ in got]), want_lower) <= 1e-6
    assert rel_diff(np.stack([hi for _, hi in got]), want_upper) <= 1e-6
