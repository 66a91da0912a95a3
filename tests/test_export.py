"""`lstm export`: ONNX run by onnxruntime, JSON loaded into torch by the snippet in
docs/export.md, and NPZ all give back what `lstm predict` forecasts; exports are atomic and never
touch the model file."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import atomic, export, modelfile
from lstm_cli.cli import cli
from lstm_cli.errors import EXIT_IO, EXIT_MISSING_DEPENDENCY

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"
DOC = ROOT / "docs" / "export.md"
FAST = ["--epochs", "2", "--hidden", "8", "-q"]
RTOL = 1e-5

MODELS = {  # name: (csv, train options)
    "a10": ("a10_monthly.csv", ["--target", "cost_million_aud", "--horizon", "6"]),
    "macro_2layer_features": ("us_macro_quarterly.csv", [
        "--target", "real_gdp", "--features", "real_investment,cpi", "--horizon", "4", "--layers", "2"]),
    "panel_2layer": ("departures_monthly_panel.csv", [
        "--id-col", "series_id", "--target", "departures_thousands", "--horizon", "6", "--layers", "2"]),
    "macro_quantiles_2targets": ("us_macro_quarterly.csv", [
        "--target", "real_gdp,real_investment", "--features", "cpi", "--horizon", "3",
        "--quantiles", "0.1,0.5,0.9"]),
    "panel_quantiles": ("departures_monthly_panel.csv", [
        "--id-col", "series_id", "--target", "departures_thousands", "--horizon", "4",
        "--quantiles", "0.1,0.5,0.9"]),
    "a10_float64": ("a10_monthly.csv", [
        "--target", "cost_million_aud", "--horizon", "6", "--layers", "2", "--dtype", "float64"]),
    "a10_seasonal_beyond_a_season": ("a10_monthly.csv", [
        "--target", "cost_million_aud", "--horizon", "15", "--scaling", "seasonal"]),
    "gru_macro_2layer_features": ("us_macro_quarterly.csv", [
        "--cell", "gru", "--target", "real_gdp", "--features", "real_investment,cpi", "--horizon", "4",
        "--layers", "2"]),
    "gru_panel_quantiles": ("departures_monthly_panel.csv", [
        "--cell", "gru", "--id-col", "series_id", "--target", "departures_thousands", "--horizon", "4",
        "--quantiles", "0.1,0.5,0.9"]),
    # recursive: one-step networks, the recursion unrolled in the ONNX graph
    "recursive_a10": ("a10_monthly.csv", [
        "--strategy", "recursive", "--target", "cost_million_aud", "--horizon", "6"]),
    "recursive_gru_a10_seasonal_beyond_a_season": ("a10_monthly.csv", [
        "--strategy", "recursive", "--cell", "gru", "--target", "cost_million_aud", "--horizon", "15",
        "--scaling", "seasonal"]),
    "recursive_panel_2layer_series": ("departures_monthly_panel.csv", [
        "--strategy", "recursive", "--id-col", "series_id", "--target", "departures_thousands", "--horizon", "5",
        "--layers", "2", "--scaling", "series"]),
    "recursive_panel_quantiles": ("departures_monthly_panel.csv", [
        "--strategy", "recursive", "--id-col", "series_id", "--target", "departures_thousands", "--horizon", "4",
        "--quantiles", "0.1,0.5,0.9"]),
    "recursive_gru_panel_quantiles_seasonal": ("departures_monthly_panel.csv", [
        "--strategy", "recursive", "--cell", "gru", "--id-col", "series_id", "--target", "departures_thousands",
        "--horizon", "4", "--quantiles", "0.1,0.5,0.9", "--scaling", "seasonal"]),
}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (model path, csv path, header, predict forecasts (S, horizon, K, nq) in ids order)."""
    root = tmp_path_factory.mktemp("export_models")
    out = {}
    for name, (data, options) in MODELS.items():
        path = root / f"{name}.lstm"
        result = run("train", SAMPLES / data, *options, "--out", path, *FAST)
        assert result.exit_code == 0, result.output
        header, _ = modelfile.load(path)
        out[name] = (path, SAMPLES / data, header, predicted(path, SAMPLES / data, header))
    return out


def predicted(model: Path, data: Path, header: dict) -> np.ndarray:
    """`lstm predict` parsed back into (S, horizon, K, nq), series in the model's ids order."""
    result = run("predict", model, data)
    assert result.exit_code == 0, result.output
    d = header["data"]
    ids = header["series"]["ids"]
    K, nq = len(d["targets"]), max(1, len(d["quantiles"]))
    y = np.full((len(ids), d["horizon"], K, nq), np.nan)
    step = dict.fromkeys(ids, 0)
    for row in csv.DictReader(io.StringIO(result.stdout)):
        sid = row[d["id_col"]] if d["id_col"] else ids[0]
        s = ids.index(sid)
        for k, target in enumerate(d["targets"]):
            for q in range(nq):
                col = f"{target}_q{d['quantiles'][q]:g}" if d["quantiles"] else target
                y[s, step[sid], k, q] = float(row[col])
        step[sid] += 1
    assert not np.isnan(y).any()
    return y


def raw_windows(data: Path, header: dict) -> np.ndarray:
    """The last lookback raw rows (targets, then features) of each series, read with pandas."""
    d = header["data"]
    frame = pd.read_csv(data)
    columns = d["targets"] + d["features"]
    if d["id_col"] is None:
        return frame[columns].to_numpy(np.float64)[None, -d["lookback"]:]
    ids = frame[d["id_col"]].astype(str)
    return np.stack([frame[ids == sid][columns].to_numpy(np.float64)[-d["lookback"]:]
                     for sid in header["series"]["ids"]])


def rel_diff(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12)))


def doc_block(heading_word: str) -> str:
    """The python code block of docs/export.md that mentions `heading_word` (torch or onnxruntime)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if heading_word in b]
    assert len(blocks) == 1, f"expected one python block using {heading_word} in {DOC}"
    return blocks[0]


def export_to(model: Path, fmt: str, out: Path) -> Path:
    result = run("export", model, "--format", fmt, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    return out


# --- ONNX -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_matches_predict(models, name, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path, data, header, want = models[name]
    d = header["data"]
    out = export_to(path, "onnx", tmp_path / "m.onnx")
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    op = {"lstm": "LSTM", "gru": "GRU"}[header["arch"]["cell"]]
    calls = d["horizon"] if d["strategy"] == "recursive" else 1  # the recursion is unrolled
    assert [n.op_type for n in model.graph.node].count(op) == header["arch"]["num_layers"] * calls
    recurrent = {i for n in model.graph.node if n.op_type == op for i in n.input[1:]}
    assert len(recurrent) == 3 * header["arch"]["num_layers"]  # W, R, B per layer, shared by every step

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = raw_windows(data, header).astype(np.float32)
    feed = {"x": x}
    if d["id_col"] is not None:
        feed["series_index"] = np.arange(len(header["series"]["ids"]), dtype=np.int64)
    assert [i.name for i in session.get_inputs()] == list(feed)
    (got,) = session.run(["forecast"], feed)
    assert got.dtype == np.float32
    assert got.shape == (len(x), d["horizon"], len(d["targets"])) + ((len(d["quantiles"]),) if d["quantiles"] else ())
    assert rel_diff(got.reshape(want.shape), want) <= RTOL

    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["targets"]) == d["targets"] and json.loads(meta["features"]) == d["features"]
    assert int(meta["lookback"]) == d["lookback"] and int(meta["horizon"]) == d["horizon"]
    assert meta["time_col"] == d["time_col"] and meta["freq"] == (d["freq"] if d["freq"] is not None else "null")
    assert json.loads(meta["ids"]) == header["series"]["ids"]
    assert meta["cell"] == header["arch"]["cell"]
    assert meta["strategy"] == d["strategy"] and ("is recursive" in model.doc_string) == (d["strategy"] == "recursive")
    if header["arch"]["dtype"] == "float64":
        assert "cast to float32" in model.doc_string


def test_onnx_series_index_selects_each_series_scaler(models, tmp_path):
    """Windows in another order than the ids, one series twice: each row follows its index."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path, data, header, want = models["panel_2layer"]
    session = ort.InferenceSession(str(export_to(path, "onnx", tmp_path / "p.onnx")))
    order = np.array([3, 0, 3, 1], dtype=np.int64)
    x = raw_windows(data, header)[order].astype(np.float32)
    (got,) = session.run(["forecast"], {"x": x, "series_index": order})
    assert rel_diff(got, want[order, :, :, 0]) <= RTOL


def test_onnx_sorts_crossing_quantiles(models):
    """Reverse the head's quantile rows, so that raw outputs cross: the graph must sort them like
    the forecaster does."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from lstm_cli.model import Forecaster

    path, data, header, _ = models["macro_quantiles_2targets"]
    _, arrays = modelfile.load(path)
    arrays = dict(arrays)
    nq = len(header["data"]["quantiles"])
    rows = np.arange(header["arch"]["output_size"]).reshape(-1, nq)[:, ::-1].ravel()
    arrays["head.weight"], arrays["head.bias"] = arrays["head.weight"][rows], arrays["head.bias"][rows]
    forecaster = Forecaster.from_file_parts(header, arrays)
    x = raw_windows(data, header)
    raw = forecaster.network.predict((x - forecaster.loc[0]) / forecaster.scale[0]).reshape(-1, nq)
    assert np.any(np.diff(raw, axis=1) < 0), "the reversed head should give crossing quantiles"
    want, _ = forecaster.forecast(forecaster.ids, x[0], np.array([0, len(x[0])]))
    session = ort.InferenceSession(export.to_onnx_bytes(header, arrays))
    (got,) = session.run(["forecast"], {"x": x.astype(np.float32)})
    assert rel_diff(got, want) <= RTOL


@pytest.mark.parametrize("scaling", ["series", "level", "seasonal"])
def test_onnx_and_torch_snippet_follow_each_scaling_mode(models, scaling, tmp_path, monkeypatch):
    """Whatever `lstm train` defaults to, every scaling mode the model schema knows exports right:
    the same weights read under either mode, against the forecaster itself."""
    import copy

    from lstm_cli.errors import ModelFileError
    from lstm_cli.model import Forecaster

    monkeypatch.chdir(tmp_path)
    for name in ("macro_quantiles_2targets", "panel_2layer", "gru_panel_quantiles", "recursive_panel_quantiles",
                 "recursive_gru_a10_seasonal_beyond_a_season"):
        path, data, header, _ = models[name]
        header = copy.deepcopy(header)
        header["data"]["scaling"] = scaling
        try:
            modelfile.validate_header(header)
        except ModelFileError as e:
            pytest.skip(f"this build's model schema refuses scaling {scaling!r}: {e}")
        _, arrays = modelfile.load(path)
        forecaster = Forecaster.from_file_parts(header, arrays)
        x = raw_windows(data, header)
        S, T, C = x.shape
        want, _ = forecaster.forecast(forecaster.ids, x.reshape(S * T, C), np.arange(S + 1) * T)
        Path("model.json").write_text(export.to_json_text(header, arrays))
        if export_module_available("torch"):
            namespace = {}
            exec(doc_block("torch"), namespace)
            got = np.stack([namespace["forecast"](x[s], s) for s in range(S)])
            assert rel_diff(got, want) <= RTOL, (name, "torch")
        if export_module_available("onnx") and export_module_available("onnxruntime"):
            import onnxruntime as ort

            feed = {"x": x.astype(np.float32)}
            if header["data"]["id_col"] is not None:
                feed["series_index"] = np.arange(S, dtype=np.int64)
            (got,) = ort.InferenceSession(export.to_onnx_bytes(header, arrays)).run(["forecast"], feed)
            assert rel_diff(got.reshape(want.shape), want) <= RTOL, (name, "onnx")


def test_unknown_scaling_mode_is_refused_not_exported_wrong(models):
    _, arrays = modelfile.load(models["a10"][0])
    header = json.loads(json.dumps(models["a10"][2]))
    header["data"]["scaling"] = "robust"
    from lstm_cli.errors import ModelFileError

    builders = [export.to_json_text, export.to_npz_bytes]
    if export_module_available("onnx"):
        builders.append(export.to_onnx_bytes)
    for build in builders:
        with pytest.raises(ModelFileError, match="scaling 'robust'"):
            build(header, arrays)


def test_onnxruntime_snippet_in_docs_gives_predict(models, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path, data, header, want = models["macro_2layer_features"]
    export_to(path, "onnx", tmp_path / "model.onnx")
    shutil.copy(data, tmp_path / "data.csv")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(doc_block("onnxruntime"), namespace)
    assert rel_diff(namespace["forecast"], want[..., 0]) <= RTOL


def test_missing_onnx_exits_69_and_writes_nothing(models, tmp_path, monkeypatch):
    path = models["a10"][0]
    existing = tmp_path / "kept.onnx"
    existing.write_bytes(b"previous")
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    for out in (tmp_path / "new.onnx", existing):
        result = CliRunner().invoke(cli, ["export", str(path), "--format", "onnx", "--out", str(out)])
        assert result.exit_code == EXIT_MISSING_DEPENDENCY, result.output
        assert "pip install 'lstm-cli[onnx]'" in result.output
    assert not (tmp_path / "new.onnx").exists()
    assert existing.read_bytes() == b"previous"
    export_to(path, "json", tmp_path / "m.json")  # the other formats need no onnx


# --- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a10", "macro_2layer_features", "panel_2layer", "macro_quantiles_2targets",
                                  "a10_float64", "gru_macro_2layer_features", "gru_panel_quantiles",
                                  "a10_seasonal_beyond_a_season", "recursive_a10",
                                  "recursive_gru_a10_seasonal_beyond_a_season", "recursive_panel_2layer_series",
                                  "recursive_panel_quantiles", "recursive_gru_panel_quantiles_seasonal"])
def test_json_loaded_by_the_docs_torch_snippet_gives_predict(models, name, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    path, data, header, want = models[name]
    export_to(path, "json", tmp_path / "model.json")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(doc_block("torch"), namespace)
    windows = raw_windows(data, header)
    got = np.stack([namespace["forecast"](windows[s], s) for s in range(len(windows))])
    assert rel_diff(got, want) <= RTOL


@pytest.mark.parametrize("name", ["panel_quantiles", "gru_panel_quantiles", "recursive_panel_quantiles"])
def test_json_holds_the_exact_weights_and_metadata(models, tmp_path, name):
    path, _, header, _ = models[name]
    doc = json.loads(export_to(path, "json", tmp_path / "m.json").read_text())
    _, arrays = modelfile.load(path)
    assert doc["format"] == "lstm-export-json" and doc["version"] == 1
    meta, d = doc["metadata"], header["data"]
    for key in ("targets", "features", "time_col", "id_col", "freq", "step", "time_kind", "lookback",
                "horizon", "quantiles", "strategy"):
        assert meta[key] == d[key], key
    assert meta["ids"] == header["series"]["ids"] and meta["last_time"] == header["series"]["last_time"]
    for key in ("cell", "num_layers", "hidden_size", "input_size", "output_size"):
        assert meta[key] == header["arch"][key]
    cell = header["arch"]["cell"]
    assert list(doc["state_dict"]) == [f"{cell}.weight_ih_l0", f"{cell}.weight_hh_l0", f"{cell}.bias_ih_l0",
                                       f"{cell}.bias_hh_l0", "head.weight", "head.bias"]
    for name, value in doc["state_dict"].items():
        ref = arrays[name.removeprefix(f"{cell}.")]
        assert np.array_equal(np.asarray(value, dtype=ref.dtype), ref), name  # bit-exact
    assert np.array_equal(doc["scaler"]["loc"], arrays["scaler.loc"])
    assert np.array_equal(doc["scaler"]["scale"], arrays["scaler.scale"])


# --- NPZ ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["macro_2layer_features", "a10_float64", "gru_macro_2layer_features"])
def test_npz_loads_without_pickle_and_equals_the_model_arrays(models, name, tmp_path):
    path, _, header, _ = models[name]
    out = export_to(path, "npz", tmp_path / "m.npz")
    _, arrays = modelfile.load(path)
    cell = header["arch"]["cell"]
    with np.load(out, allow_pickle=False) as npz:
        names = set(npz.files)
        expected = {f"{cell}.{n}" for n in arrays if n.startswith(("weight_", "bias_"))}
        expected |= {"head.weight", "head.bias", "scaler.loc", "scaler.scale", "metadata_json"}
        assert names == expected
        for key in names - {"metadata_json"}:
            ref = arrays[key.removeprefix(f"{cell}.")]
            assert npz[key].dtype == ref.dtype and np.array_equal(npz[key], ref), key
        assert npz["metadata_json"].shape == () and npz["metadata_json"].dtype.kind == "U"
        meta = json.loads(npz["metadata_json"].item())
    assert meta == json.loads(export.to_json_text(header, arrays))["metadata"]
    assert meta["dtype"] == header["arch"]["dtype"]


# --- files ----------------------------------------------------------------------------------


def _stat(path: Path):
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_size


def test_export_never_modifies_the_model_file(models, tmp_path):
    src = models["panel_quantiles"][0]
    path = tmp_path / "model.lstm"
    shutil.copy2(src, path)
    before = _stat(path)
    for fmt in ("json", "npz") + (("onnx",) if export_module_available("onnx") else ()):
        export_to(path, fmt, tmp_path / f"out.{fmt}")
    assert _stat(path) == before
    result = run("export", path, "--format", "json", "--out", path)  # the model as --out: refused
    assert result.exit_code == 73, result.output
    assert _stat(path) == before


def export_module_available(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("fmt", ["json", "npz", "onnx"])
@pytest.mark.parametrize("interrupt", [False, True])
def test_failed_write_leaves_no_partial_file_and_the_old_out_intact(models, tmp_path, monkeypatch, fmt,
                                                                    interrupt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    path = models["a10"][0]
    old, new = tmp_path / f"old.{fmt}", tmp_path / f"new.{fmt}"
    old.write_bytes(b"previous export")
    written = []

    def half_then_fail(fd, data):  # half the bytes reach the temporary file, then the disk is full
        view = memoryview(data).cast("B")
        written.append(os.write(fd, view[: max(1, len(view) // 2)]))
        if interrupt:
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "_write_all", half_then_fail)
    for out in (old, new):
        result = CliRunner().invoke(cli, ["export", str(path), "--format", fmt, "--out", str(out)])
        assert result.exit_code == (130 if interrupt else EXIT_IO), result.output
    assert len(written) == 2 and all(n > 0 for n in written)
    assert old.read_bytes() == b"previous export"
    assert not new.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert leftovers == []
