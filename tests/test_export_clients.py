"""`lstm export` as client programs use it: `--out -` to stdout, the docs' torch snippet at the
precision of a float64 model, and the docs' forecast formula against the anchors lstm uses."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import export, windows
from lstm_cli.cli import cli
from lstm_cli.errors import EXIT_DATA, UsageError

ROOT = Path(__file__).resolve().parents[1]
A10 = ROOT / "sample_data" / "a10_monthly.csv"
PANEL = ROOT / "sample_data" / "departures_monthly_panel.csv"
DOC = ROOT / "docs" / "export.md"
FAST = ["--epochs", "2", "--hidden", "8", "-q"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> model path: small a10 models, float32 and float64."""
    root = tmp_path_factory.mktemp("export_clients")
    out = {}
    for name, options in {"f32": [], "f64": ["--dtype", "float64"],
                          "f64_seasonal": ["--dtype", "float64", "--scaling", "seasonal"],
                          "f64_series_blend": ["--dtype", "float64", "--scaling", "series", "--blend", "0.3"],
                          "f64_recursive": ["--dtype", "float64", "--strategy", "recursive"]}.items():
        path = root / f"{name}.lstm"
        result = run("train", A10, "--target", "cost_million_aud", "--horizon", "6", *options, "--out", path, *FAST)
        assert result.exit_code == 0, result.output
        out[name] = path
    path = root / "panel.lstm"
    result = run("train", PANEL, "--id-col", "series_id", "--target", "departures_thousands", "--horizon", "3",
                 "--out", path, *FAST)
    assert result.exit_code == 0, result.output
    out["panel"] = path
    return out


# --- --out - ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "npz", "onnx"])
def test_out_dash_writes_the_export_to_stdout_not_a_file_named_dash(models, fmt, tmp_path, monkeypatch):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    assert run("export", models["f32"], "--format", fmt, "--out", tmp_path / f"m.{fmt}", "-q").exit_code == 0
    result = run("export", models["f32"], "--format", fmt, "--out", "-", "-q")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "-").exists()
    assert result.stdout_bytes == (tmp_path / f"m.{fmt}").read_bytes()
    if fmt == "npz":
        assert "metadata_json" in np.load(io.BytesIO(result.stdout_bytes), allow_pickle=False).files
    if fmt == "json":
        assert json.loads(result.stdout_bytes)["format"] == "lstm-export-json"


def test_out_dash_failure_writes_nothing_to_stdout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.lstm").write_bytes(b"not a model")
    result = CliRunner().invoke(cli, ["export", "bad.lstm", "--format", "json", "--out", "-"])
    assert result.exit_code == EXIT_DATA
    assert result.stdout_bytes == b""
    assert "Traceback" not in result.output
    assert not (tmp_path / "-").exists()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("fmt", ["npz", "onnx"])
def test_out_dash_refuses_binary_to_a_terminal(models, fmt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an export that ignored "-" would create a file named "-"
    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    with pytest.raises(UsageError, match="terminal"):
        export.export_model(models["f32"], fmt, "-")
    assert terminal.getvalue() == ""
    assert not (tmp_path / "-").exists()


# --- the torch snippet of docs/export.md --------------------------------------------------------


def _doc_torch_snippet() -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "torch" in b]
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.parametrize("name", ["f64", "f64_seasonal", "f64_series_blend", "f64_recursive"])
def test_docs_torch_snippet_reproduces_a_float64_model_to_float64_precision(models, name, tmp_path, monkeypatch):
    """The snippet once built the scaler with torch's default dtype (float32): a float64 model's
    forecast came back with ~1e-10 relative error instead of the model's own precision."""
    torch = pytest.importorskip("torch")
    path = models[name]
    assert run("export", path, "--format", "json", "--out", tmp_path / "model.json", "-q").exit_code == 0
    predicted = run("predict", path, A10)
    assert predicted.exit_code == 0, predicted.output
    want = pd.read_csv(io.StringIO(predicted.stdout))["cost_million_aud"].to_numpy()
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(_doc_torch_snippet(), namespace)
    assert namespace["loc"].dtype == torch.float64 and namespace["scale"].dtype == torch.float64
    meta = namespace["m"]
    window = pd.read_csv(A10)[["cost_million_aud"]].to_numpy(np.float64)[-meta["lookback"]:]
    got = namespace["forecast"](window)[:, 0, 0]
    assert np.max(np.abs(got - want) / np.abs(want)) <= 1e-12


# --- the forecast formula of docs/export.md -------------------------------------------------------


def test_docs_formula_anchor_rows_are_the_ones_lstm_uses():
    """The formula once anchored every model on the last row ("level") and said nothing of the
    seasonal anchor; its row(t) must be windows.anchor_rows for both modes."""
    text = DOC.read_text()
    formula = re.search(r"```\nxs       = .*?```", text, re.S).group(0)
    assert "xs[row(t), :K]" in formula
    rows = {mode: expr for expr, mode in re.findall(r"\(`([^`]+)`\) for `\"(level|seasonal)\"` models", text)}
    assert set(rows) == {"level", "seasonal"}, rows
    for lookback, season, horizon in [(24, 12, 15), (12, 12, 6), (30, 7, 20), (5, 4, 9)]:
        for mode, expr in rows.items():
            got = [eval(expr, {}, {"lookback": lookback, "season": season, "t": t}) for t in range(horizon)]
            assert got == windows.anchor_rows(lookback, horizon, mode, season).tolist(), (mode, expr)


# --- series_index ------------------------------------------------------------------------------


def test_series_index_range_is_as_documented(models, tmp_path):
    """docs/export.md: an index >= len(ids) or < -len(ids) fails in session.run; a negative one
    counts from the end (ONNX Gather), which the docs warn about."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    assert "`-1` is the last series' scaler" in DOC.read_text()
    out = tmp_path / "panel.onnx"
    assert run("export", models["panel"], "--format", "onnx", "--out", out, "-q").exit_code == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    n = len(json.loads(session.get_modelmeta().custom_metadata_map["ids"]))
    lookback = int(session.get_modelmeta().custom_metadata_map["lookback"])
    x = np.linspace(1.0, 9.0, lookback, dtype=np.float32).reshape(1, lookback, 1)

    def forecast(i):
        return session.run(["forecast"], {"x": x, "series_index": np.array([i], np.int64)})[0]

    assert np.array_equal(forecast(-1), forecast(n - 1))
    assert not np.array_equal(forecast(0), forecast(n - 1))  # the index does select a scaler
    for bad in (n, -n - 1):
        with pytest.raises(Exception, match="out of data bounds|out of bounds|indices"):
            forecast(bad)
