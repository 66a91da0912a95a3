"""`lstm export` of ensembles (lstm train --ensemble N): the ONNX graph holds every member's
subgraph and their median and gives back model.Ensemble.forecast and `lstm predict` (N even and
odd, level/seasonal/series members with blend, a panel, recursive, quantiles, a future feature);
JSON and NPZ hold every member's weights, and the docs' snippets combine them."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import export, modelfile
from lstm_cli.cli import cli
from lstm_cli.model import Ensemble, forecaster_of, member_headers
from tests import test_export_future
from tests.test_export_future import onnx_session, rel_diff  # (full_check, then onnxruntime)

ROOT = Path(__file__).resolve().parents[1]
A10 = ROOT / "sample_data" / "a10_monthly.csv"
PANEL = ROOT / "sample_data" / "departures_monthly_panel.csv"
DOC = ROOT / "docs" / "export.md"
FAST = ["--epochs", "2", "--hidden", "4", "--threads", "1", "-q"]
RTOL_FLOAT32 = 1e-5
A10_TARGET = ["--target", "cost_million_aud"]
PANEL_TARGET = ["--id-col", "series_id", "--target", "departures_thousands"]

MODELS = {  # name: (data, train options)
    "a10_n2": ("a10", [*A10_TARGET, "--horizon", "6", "--ensemble", "2"]),  # level + seasonal, blend 0.5
    "a10_n3": ("a10", [*A10_TARGET, "--horizon", "6", "--ensemble", "3"]),  # level, seasonal, series
    "a10_n3_from_series_gru": ("a10", [*A10_TARGET, "--horizon", "4", "--ensemble", "3", "--scaling", "series",
                                       "--cell", "gru", "--layers", "2", "--blend", "0.3"]),
    "panel_n3": ("panel", [*PANEL_TARGET, "--horizon", "3", "--ensemble", "3"]),
    "recursive_n3": ("a10", [*A10_TARGET, "--horizon", "4", "--ensemble", "3", "--strategy", "recursive"]),
    "quantiles_n3": ("a10", [*A10_TARGET, "--horizon", "3", "--ensemble", "3", "--quantiles", "0.1,0.5,0.9"]),
    "quantiles_panel_recursive_n2": ("panel", [*PANEL_TARGET, "--horizon", "3", "--ensemble", "2",
                                               "--quantiles", "0.2,0.5,0.8", "--strategy", "recursive"]),
    "future_n3": ("daily", ["--target", "sales", "--future-features", "promo", "--calendar", "dayofweek",
                            "--horizon", "3", "--ensemble", "3", "--lookback", "14"]),
    "future_panel_recursive_n2": ("daily_panel", ["--id-col", "store", "--target", "sales", "--future-features",
                                                  "promo", "--horizon", "3", "--ensemble", "2", "--lookback", "10",
                                                  "--strategy", "recursive"]),
    # float64: the docs' torch snippet at float64 precision
    "f64_a10_n3": ("a10", [*A10_TARGET, "--horizon", "6", "--ensemble", "3", "--dtype", "float64"]),
    "f64_future_panel_n2": ("daily_panel", ["--id-col", "store", "--target", "sales", "--future-features", "promo",
                                            "--horizon", "3", "--ensemble", "2", "--lookback", "10",
                                            "--dtype", "float64"]),
}
N_DAYS = 120


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write_daily(root: Path) -> dict[str, Path]:
    """Daily sales with a weekly cycle and a promotion effect: one series, and three stores."""
    rng = np.random.default_rng(0)
    days = pd.date_range("2023-01-01", periods=N_DAYS, freq="D").strftime("%Y-%m-%d")
    week = np.sin(np.arange(N_DAYS) * 2 * np.pi / 7)
    frames = []
    for store, level in (("a", 50.0), ("b", 200.0), ("c", 1000.0)):
        promo = (rng.random(N_DAYS) < 0.3).astype(int)
        sales = level * (1 + 0.1 * week + 0.2 * promo) + rng.normal(0, 1, N_DAYS)
        frames.append(pd.DataFrame({"date": days, "store": store, "sales": sales.round(3), "promo": promo}))
    out = {"daily": root / "daily.csv", "daily_panel": root / "daily_panel.csv"}
    frames[0].drop(columns="store").to_csv(out["daily"], index=False)
    pd.concat(frames).to_csv(out["daily_panel"], index=False)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (model path, data path)."""
    root = tmp_path_factory.mktemp("export_ensemble")
    data = {"a10": A10, "panel": PANEL, **write_daily(root)}
    out = {}
    for name, (kind, options) in MODELS.items():
        path = root / f"{name}.lstm"
        result = run("train", data[kind], *options, *FAST, "--out", path)
        assert result.exit_code == 0, result.output
        out[name] = (path, data[kind])
    return out


class Case(test_export_future.Case):
    """An ensemble, its series' history and made-up future features of the forecast steps, as
    Ensemble.forecast, the ONNX graph (x over the longest lookback, future) and lstm predict take them."""

    def __init__(self, path: Path, data: Path):
        super().__init__(path, data)  # member 0's forecaster, whose columns and steps are the ensemble's
        self.path, self.source = path, data
        self.model = self.forecaster = forecaster_of(self.header, self.arrays)
        assert isinstance(self.model, Ensemble)
        self.spec = self.model.spec  # the longest lookback: what x holds

    def forecast(self, model=None) -> np.ndarray:
        """(S, horizon, K, max(1, nq)) of the ensemble (or of one of its members)."""
        self.forecaster = model or self.model
        try:
            return self.expected()
        finally:
            self.forecaster = self.model

    def feed(self) -> dict[str, np.ndarray]:
        feed = super().feed()
        if not self.spec.has_known:
            del feed["future"]
        return feed

    def predicted(self, tmp_path: Path) -> np.ndarray:
        """`lstm predict` of the model file (on DATA plus the future rows of future features), as
        (S, horizon, K, max(1, nq)) in the model's ids order."""
        spec = self.spec
        result = run("predict", self.path, self.csv_with_future_rows(self.source, tmp_path / "data.csv"))
        assert result.exit_code == 0, result.output
        frame = pd.read_csv(io.StringIO(result.stdout))
        parts = ([frame[frame[spec.id_col].astype(str) == sid] for sid in self.model.ids] if spec.id_col
                 else [frame])
        columns = [f"{t}_q{q:g}" for t in spec.targets for q in spec.quantiles] or list(spec.targets)
        got = np.stack([p[columns].to_numpy(np.float64) for p in parts])
        return got.reshape(len(parts), spec.horizon, len(spec.targets), max(1, len(spec.quantiles)))


def case_of(models, name) -> Case:
    return Case(*models[name])


# --- ONNX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in MODELS if not n.startswith("f64")])
def test_onnx_of_an_ensemble_gives_its_forecast_and_lstm_predict(models, name, tmp_path):
    case = case_of(models, name)
    (got,) = onnx_session(case).run(["forecast"], case.feed())
    want = case.forecast()
    assert rel_diff(got.reshape(want.shape), want) <= RTOL_FLOAT32
    assert rel_diff(got.reshape(want.shape), case.predicted(tmp_path)) <= RTOL_FLOAT32


def test_the_ensemble_forecast_checked_is_the_median_of_members_that_differ(models):
    """The reference the graph is checked against: members that forecast differently (so agreeing
    with the ensemble says something about the combination) and their median."""
    for name in ("a10_n2", "a10_n3"):
        case = case_of(models, name)
        members = [forecaster_of(h, a) for h, a in member_headers(case.header, case.arrays)]
        forecasts = np.stack([case.forecast(m) for m in members])
        for i in range(len(members)):
            for j in range(i):
                assert rel_diff(forecasts[i], forecasts[j]) > 1e-3, (name, i, j)
        assert np.array_equal(case.forecast(), np.median(forecasts, axis=0))


def test_ensemble_graph_holds_every_member_reading_its_own_rows_of_x(models):
    onnx = pytest.importorskip("onnx")
    case = case_of(models, "panel_n3")
    model = onnx.load_from_string(export.to_onnx_bytes(case.header, case.arrays))
    lookbacks = [m.spec.lookback for m in case.model.members]
    assert len(set(lookbacks)) == 3  # 1x, 1.5x, 2x
    assert [i.name for i in model.graph.input] == ["x", "series_index"]
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", max(lookbacks), 1]
    lstm_nodes = [n.name for n in model.graph.node if n.op_type == "LSTM"]
    assert sorted(lstm_nodes) == ["member0_LSTM_l0", "member1_LSTM_l0", "member2_LSTM_l0"]
    slices = {n.output[0]: n for n in model.graph.node if n.op_type == "Slice" and n.input[0] == "x"}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for i, rows in enumerate(lookbacks):  # the longest reads x itself; the others their last rows
        if rows == max(lookbacks):
            assert f"member{i}_x" not in slices
        else:
            assert inits[slices[f"member{i}_x"].input[1]].tolist() == [-rows]
    assert sum(name.startswith("x_loc") for name in inits) == 1  # one scaler, shared
    props = {p.key: p.value for p in model.metadata_props}
    assert props["combination"] == "median" and json.loads(props["lookback"]) == max(lookbacks)
    members = json.loads(props["members"])
    assert [m["lookback"] for m in members] == lookbacks
    assert [m["scaling"] for m in members] == [m.spec.scaling for m in case.model.members]
    assert "cell" not in props and "scaling" not in props  # no single value: they are the members'
    for text in ("Ensemble of 3", "median per step", "Member 2:", f"the last {lookbacks[0]} rows of x"):
        assert text in model.doc_string, text


def test_a_single_model_graph_has_no_members(models, tmp_path):
    """Ensembles changed the builder, not single models' graphs: no prefixed names, no median."""
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "single.lstm"
    assert run("train", A10, *A10_TARGET, "--horizon", "3", *FAST, "--out", path).exit_code == 0
    header, arrays = modelfile.load(path)
    model = onnx.load_from_string(export.to_onnx_bytes(header, arrays))
    names = [n.name for n in model.graph.node] + [i.name for i in model.graph.initializer]
    assert not any(n.startswith("member") or "median" in n for n in names)
    props = {p.key: p.value for p in model.metadata_props}
    assert "members" not in props and "combination" not in props and props["scaling"] == "level"
    doc = json.loads(export.to_json_text(header, arrays))
    assert "state_dict" in doc and "members" not in doc and "members" not in doc["metadata"]


# --- the command ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["onnx", "json", "npz"])
def test_lstm_export_writes_an_ensemble_in_every_format(models, fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    out = tmp_path / f"ensemble.{fmt}"
    result = run("export", models["a10_n2"][0], "--format", fmt, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0


# --- JSON and NPZ -------------------------------------------------------------------------------


def test_json_of_an_ensemble_holds_every_member_and_no_state_dict_of_its_own(models):
    case = case_of(models, "quantiles_panel_recursive_n2")
    doc = json.loads(export.to_json_text(case.header, case.arrays))
    assert "state_dict" not in doc  # a reader of single models fails instead of using member 0
    meta = doc["metadata"]
    members = case.model.members
    assert meta["combination"] == "median" and meta["lookback"] == max(m.spec.lookback for m in members)
    assert "scaling" not in meta and "hidden_size" not in meta
    assert meta["ids"] == list(case.model.ids) and meta["quantiles"] == [0.2, 0.5, 0.8]
    assert [p["metadata"]["lookback"] for p in doc["members"]] == [m.spec.lookback for m in members]
    assert [p["metadata"]["scaling"] for p in doc["members"]] == [m.spec.scaling for m in members]
    for part, (h, a), summary in zip(doc["members"], member_headers(case.header, case.arrays), meta["members"],
                                     strict=True):
        assert part["metadata"] == {k: v for k, v in export.metadata(h).items() if k not in ("ids", "last_time")}
        assert summary == {k: part["metadata"][k] for k in export.MEMBER_METADATA}
        for name, value in export.state_dict_arrays(h, a).items():
            assert np.array_equal(np.asarray(part["state_dict"][name], value.dtype), value), name
    assert np.array_equal(doc["scaler"]["loc"], case.arrays["scaler.loc"])


def test_npz_of_an_ensemble_names_each_members_arrays(models):
    case = case_of(models, "a10_n3_from_series_gru")
    with np.load(io.BytesIO(export.to_npz_bytes(case.header, case.arrays)), allow_pickle=False) as npz:
        meta = json.loads(npz["metadata_json"].item())
        assert meta == json.loads(export.to_json_text(case.header, case.arrays))["metadata"]
        assert [m["cell"] for m in meta["members"]] == ["gru"] * 3
        expected = {"scaler.loc", "scaler.scale", "metadata_json"}
        for i, (h, a) in enumerate(member_headers(case.header, case.arrays)):
            for name, value in export.state_dict_arrays(h, a).items():
                expected.add(f"member{i}.{name}")
                assert np.array_equal(npz[f"member{i}.{name}"], value) and npz[f"member{i}.{name}"].dtype == value.dtype
        assert set(npz.files) == expected
        assert np.array_equal(npz["scaler.scale"], case.arrays["scaler.scale"])


def doc_blocks(word: str) -> list[str]:
    return [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if word in b]


@pytest.mark.parametrize("name", ["f64_a10_n3", "f64_future_panel_n2"])
def test_docs_ensemble_snippet_combines_the_members_to_float64_precision(models, name, tmp_path, monkeypatch):
    """The JSON section's torch snippet, then the Ensembles section's NumPy combination, on a
    float64 ensemble's export: lstm predict's forecast to float64 precision."""
    pytest.importorskip("torch")
    case = case_of(models, name)
    want = case.predicted(tmp_path)
    (tmp_path / "model.json").write_text(export.to_json_text(case.header, case.arrays))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    (loader,) = doc_blocks("torch")
    (combination,) = doc_blocks("def ensemble_forecast")
    exec(loader, namespace)
    assert namespace["model"] is None  # an ensemble has no single network
    exec(combination, namespace)
    x, future = case.x(), case.future() if case.spec.has_known else [None] * len(case.values)
    got = np.stack([namespace["ensemble_forecast"](x[s], s, future[s]) for s in range(len(x))])
    assert rel_diff(got, want) <= 1e-12
    assert rel_diff(got, case.forecast()) <= 1e-12
