"""`lstm export` of models with inputs known in advance (--future-features, --calendar, --holidays):
the ONNX graph's `future` input and the torch snippet of docs/export.md give back the forecaster's
forecast (and `lstm predict`'s on a CSV with future rows); the metadata names every column."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import calendar, export, modelfile
from lstm_cli.cli import cli
from lstm_cli.model import Forecaster, FutureInputs

DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"
FAST = ["--epochs", "2", "--hidden", "4", "--lookback", "14", "-q"]
RTOL_FLOAT32 = 1e-5
N_ROWS = 120
FIRST_DAY = "2023-01-01"

MODELS = {  # name: (csv, train options)
    "direct_level_future": ("daily", ["--target", "sales", "--future-features", "promo", "--horizon", "3",
                                      "--scaling", "level"]),
    "seasonal_blend_future": ("daily", ["--target", "sales", "--future-features", "promo", "--horizon", "9",
                                        "--scaling", "seasonal", "--blend", "0.4"]),
    "panel_series_future_and_past": ("panel", ["--id-col", "store", "--target", "sales", "--features", "temp",
                                               "--future-features", "promo", "--horizon", "3", "--scaling", "series"]),
    "recursive_future": ("daily", ["--target", "sales", "--future-features", "promo", "--horizon", "4",
                                   "--strategy", "recursive"]),
    "calendar_only": ("daily", ["--target", "sales", "--calendar", "dayofweek", "--horizon", "3"]),
    "panel_recursive_quantiles_calendar_gru": ("panel", [
        "--id-col", "store", "--target", "sales", "--future-features", "promo", "--calendar", "dayofweek,dayofyear",
        "--strategy", "recursive", "--scaling", "seasonal", "--horizon", "4", "--quantiles", "0.1,0.5,0.9",
        "--cell", "gru", "--layers", "2"]),
    # float64: the torch snippet at float64 precision
    "f64_seasonal_blend_future": ("daily", ["--target", "sales", "--future-features", "promo", "--horizon", "9",
                                            "--scaling", "seasonal", "--blend", "0.3", "--dtype", "float64"]),
    "f64_calendar": ("daily", ["--target", "sales", "--calendar", "dayofweek", "--horizon", "3",
                               "--dtype", "float64"]),
    "f64_recursive_future_panel": ("panel", ["--id-col", "store", "--target", "sales", "--future-features", "promo",
                                             "--horizon", "4", "--strategy", "recursive", "--dtype", "float64"]),
}
HOLIDAY_MODEL = ("daily", ["--target", "sales", "--holidays", "US", "--calendar", "dayofweek", "--horizon", "3"])


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write_data(root: Path) -> dict[str, Path]:
    """Daily sales with a weekly cycle and a promotion effect: one series, and a panel of three
    stores at different levels with a past-only temperature."""
    rng = np.random.default_rng(0)
    days = pd.date_range(FIRST_DAY, periods=N_ROWS, freq="D").strftime("%Y-%m-%d")
    week = np.sin(np.arange(N_ROWS) * 2 * np.pi / 7)
    promo = (rng.random(N_ROWS) < 0.3).astype(int)
    daily = pd.DataFrame({"date": days, "sales": (100 + 10 * week + 20 * promo + rng.normal(0, 2, N_ROWS)).round(3),
                          "promo": promo})
    stores = []
    for store, level in (("a", 50.0), ("b", 200.0), ("c", 1000.0)):
        promo = (rng.random(N_ROWS) < 0.3).astype(int)
        sales = level * (1 + 0.1 * week + 0.2 * promo) + rng.normal(0, 1, N_ROWS)
        stores.append(pd.DataFrame({"date": days, "store": store, "sales": sales.round(3), "promo": promo,
                                    "temp": rng.normal(20, 5, N_ROWS).round(2)}))
    out = {"daily": root / "daily.csv", "panel": root / "panel.csv"}
    daily.to_csv(out["daily"], index=False)
    pd.concat(stores).to_csv(out["panel"], index=False)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (model path, csv path)."""
    root = tmp_path_factory.mktemp("export_future")
    data = write_data(root)
    wanted = dict(MODELS)
    try:
        import holidays  # noqa: F401

        wanted["holidays_us"] = HOLIDAY_MODEL
    except ImportError:
        pass
    out = {}
    for name, (kind, options) in wanted.items():
        path = root / f"{name}.lstm"
        result = run("train", data[kind], *options, "--out", path, *FAST)
        assert result.exit_code == 0, result.output
        out[name] = (path, data[kind])
    return out


class Case:
    """A model, the history of its series and made-up future features of its forecast steps, as
    the forecaster, the ONNX graph (x, future) and a CSV with future rows take them."""

    def __init__(self, path: Path, data: Path):
        self.header, self.arrays = modelfile.load(path)
        self.forecaster = Forecaster.from_file_parts(self.header, self.arrays)
        spec = self.spec = self.forecaster.spec
        frame = pd.read_csv(data)
        groups = ([frame[frame[spec.id_col].astype(str) == sid] for sid in self.forecaster.ids]
                  if spec.id_col else [frame])
        self.n_steps = spec.future_steps(spec.horizon)
        rng = np.random.default_rng(7)
        self.values = [g[list(spec.columns)].to_numpy(np.float64) for g in groups]
        self.times = [pd.to_datetime(g[spec.time_col]).to_numpy().astype("datetime64[ns]").astype(np.int64)
                      for g in groups]
        self.future_times = np.stack([t[-1] + spec.step * np.arange(1, self.n_steps + 1) for t in self.times])
        self.future_values = rng.integers(0, 2, (len(groups), self.n_steps, len(spec.future_features))).astype(float)

    def derived(self, times: np.ndarray) -> np.ndarray:
        spec = self.spec
        if not spec.derived_columns:
            return np.zeros((len(times), 0))
        return calendar.derive(spec.calendar, spec.holidays, times, spec.step)

    def expected(self) -> np.ndarray:
        starts = np.concatenate([[0], np.cumsum([len(v) for v in self.values])])
        y, _ = self.forecaster.forecast(self.forecaster.ids, np.concatenate(self.values), starts, self.spec.horizon,
                                        times=np.concatenate(self.times),
                                        future=FutureInputs(self.future_times, self.future_values))
        return y  # (S, horizon, K, max(1, nq))

    def x(self) -> np.ndarray:
        """(S, lookback, len(columns) + len(derived)): the data columns then the derived ones."""
        L = self.spec.lookback
        return np.stack([np.concatenate([v[-L:], self.derived(t[-L:])], axis=1)
                         for v, t in zip(self.values, self.times, strict=True)])

    def future(self) -> np.ndarray:
        """(S, steps, len(known columns)): the future features then the steps' derived columns."""
        return np.stack([np.concatenate([v, self.derived(t)], axis=1)
                         for v, t in zip(self.future_values, self.future_times, strict=True)])

    def feed(self) -> dict[str, np.ndarray]:
        feed = {"x": self.x().astype(np.float32), "future": self.future().astype(np.float32)}
        if self.spec.id_col:
            feed["series_index"] = np.arange(len(self.forecaster.ids), dtype=np.int64)
        return feed

    def csv_with_future_rows(self, data: Path, out: Path) -> Path:
        """DATA plus, after each series' last value, one row per forecast step: target empty,
        future features filled (past features empty); DATA alone for a model without them."""
        spec = self.spec
        frame = pd.read_csv(data)
        if not spec.future_features:  # calendar and holiday inputs come from the timestamps alone
            frame.to_csv(out, index=False)
            return out
        rows = []
        for s, sid in enumerate(self.forecaster.ids):
            for i in range(spec.horizon):
                row = {spec.time_col: pd.Timestamp(self.future_times[s, i]).strftime("%Y-%m-%d")}
                if spec.id_col:
                    row[spec.id_col] = sid
                row.update(zip(spec.future_features, self.future_values[s, i], strict=True))
                rows.append(row)
        pd.concat([frame, pd.DataFrame(rows)]).to_csv(out, index=False)
        return out


def rel_diff(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12)))


def onnx_session(case: Case):
    """The model's ONNX export, checked with shape inference (full_check), in onnxruntime."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    data = export.to_onnx_bytes(case.header, case.arrays)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def predicted(model: Path, data: Path, case: Case) -> np.ndarray:
    """`lstm predict` on DATA with future rows, as (S, horizon, K, max(1, nq)) in the model's ids order."""
    result = run("predict", model, data)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    spec = case.spec
    parts = ([frame[frame[spec.id_col].astype(str) == sid] for sid in case.forecaster.ids] if spec.id_col
             else [frame])
    columns = [f"{t}_q{q:g}" for t in spec.targets for q in spec.quantiles] or list(spec.targets)
    got = np.stack([p[columns].to_numpy(np.float64) for p in parts])
    return got.reshape(len(parts), spec.horizon, len(spec.targets), max(1, len(spec.quantiles)))


# --- ONNX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(MODELS) | {"holidays_us"}))
def test_onnx_with_known_inputs_matches_the_forecaster(models, name):
    if name not in models:
        pytest.skip("the holidays package is not installed")
    case = Case(*models[name])
    session = onnx_session(case)
    spec = case.spec
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["x"] + (["series_index"] if spec.id_col else []) + ["future"]
    assert inputs["x"].shape == ["batch", spec.lookback, len(spec.input_columns) - 1]
    n_known = len(spec.future_features) + len(spec.derived_columns)
    assert inputs["future"].shape == ["batch", spec.horizon, n_known] and inputs["future"].type == "tensor(float)"
    (got,) = session.run(["forecast"], case.feed())
    want = case.expected()
    assert rel_diff(got.reshape(want.shape), want) <= RTOL_FLOAT32


def test_onnx_future_input_changes_the_forecast_where_the_model_reads_it(models):
    """The graph does read `future`: other promotions, another forecast (the same as the forecaster's)."""
    case = Case(*models["direct_level_future"])
    session = onnx_session(case)
    before = session.run(["forecast"], case.feed())[0]
    case.future_values = 1.0 - case.future_values
    after = session.run(["forecast"], case.feed())[0]
    assert not np.allclose(before, after)
    want = case.expected()
    assert rel_diff(after.reshape(want.shape), want) <= RTOL_FLOAT32


@pytest.mark.parametrize("name", ["direct_level_future", "panel_series_future_and_past"])
def test_onnx_matches_lstm_predict_on_a_csv_with_future_rows(models, name, tmp_path):
    path, data = models[name]
    case = Case(path, data)
    want = predicted(path, case.csv_with_future_rows(data, tmp_path / "with_future.csv"), case)
    (got,) = onnx_session(case).run(["forecast"], case.feed())
    assert rel_diff(got.reshape(want.shape), want) <= RTOL_FLOAT32


def test_onnx_metadata_and_doc_string_name_the_known_inputs(models):
    pytest.importorskip("onnx")
    import onnx

    case = Case(*models["panel_recursive_quantiles_calendar_gru"])
    model = onnx.load_from_string(export.to_onnx_bytes(case.header, case.arrays))
    props = {p.key: p.value for p in model.metadata_props}
    derived = ["dayofweek_sin", "dayofweek_cos", "dayofyear_sin", "dayofyear_cos"]
    assert json.loads(props["future_features"]) == ["promo"]
    assert json.loads(props["calendar"]) == ["dayofweek", "dayofyear"]
    assert props["holidays"] == "null"
    assert json.loads(props["derived_columns"]) == derived
    assert json.loads(props["x_columns"]) == ["sales", "promo"] + derived
    assert json.loads(props["future_columns"]) == ["promo"] + derived
    assert json.loads(props["input_columns"]) == ["sales", "promo"] + derived + ["horizon_flag"]
    assert json.loads(props["inputs"]) == ["x", "series_index", "future"]
    assert json.loads(props["n_past"]) == 1
    doc = model.doc_string
    for text in ("Input future: float32 [batch, 4, 5]", "(weekday, Monday = 0, + time of day in days) / 7",
                 "days in that year", "horizon_flag", "future[:, i]"):
        assert text in doc, text


def test_onnx_doc_string_gives_the_holiday_rule(models):
    if "holidays_us" not in models:
        pytest.skip("the holidays package is not installed")
    pytest.importorskip("onnx")
    import onnx

    case = Case(*models["holidays_us"])
    model = onnx.load_from_string(export.to_onnx_bytes(case.header, case.arrays))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["holidays"] == "US" and json.loads(props["future_columns"])[-1] == "holiday"
    assert "public holidays of 'US'" in model.doc_string


def test_a_model_without_known_inputs_keeps_its_graph_inputs(models, tmp_path):
    """No `future` input, x as wide as the network's input, the new metadata empty."""
    pytest.importorskip("onnx")
    import onnx

    _, data = models["direct_level_future"]
    path = tmp_path / "plain.lstm"
    assert run("train", data, "--target", "sales", "--features", "promo", "--horizon", "3", "--out", path,
               *FAST).exit_code == 0
    header, arrays = modelfile.load(path)
    model = onnx.load_from_string(export.to_onnx_bytes(header, arrays))
    assert [i.name for i in model.graph.input] == ["x"]
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 14, 2]
    props = {p.key: p.value for p in model.metadata_props}
    assert "future_columns" not in props and json.loads(props["inputs"]) == ["x"]
    assert json.loads(props["x_columns"]) == json.loads(props["input_columns"]) == ["sales", "promo"]
    assert "Input future" not in model.doc_string and "horizon_flag" not in model.doc_string


# --- JSON, NPZ and the docs' snippets ---------------------------------------------------------------


def test_json_and_npz_metadata_carry_the_known_inputs_and_the_column_order(models):
    case = Case(*models["panel_recursive_quantiles_calendar_gru"])
    meta = json.loads(export.to_json_text(case.header, case.arrays))["metadata"]
    assert meta["future_features"] == ["promo"] and meta["calendar"] == ["dayofweek", "dayofyear"]
    assert meta["holidays"] is None
    assert meta["derived_columns"] == list(case.spec.derived_columns)
    assert meta["input_columns"] == list(case.spec.input_columns)
    assert meta["known_columns"] == ["promo", *case.spec.derived_columns]
    assert meta["n_past"] == case.spec.n_past == 1
    with np.load(io.BytesIO(export.to_npz_bytes(case.header, case.arrays)), allow_pickle=False) as npz:
        assert json.loads(npz["metadata_json"].item()) == meta
        assert npz["scaler.loc"].shape[1] == len(meta["input_columns"])


def doc_blocks(word: str) -> list[str]:
    return [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if word in b]


@pytest.mark.parametrize("name", ["f64_seasonal_blend_future", "f64_calendar", "f64_recursive_future_panel"])
def test_docs_torch_snippet_reproduces_a_known_inputs_model_to_float64_precision(models, name, tmp_path,
                                                                                 monkeypatch):
    pytest.importorskip("torch")
    path, data = models[name]
    case = Case(path, data)
    (tmp_path / "model.json").write_text(export.to_json_text(case.header, case.arrays))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    (snippet,) = doc_blocks("torch")
    exec(snippet, namespace)
    x, future = case.x(), case.future()
    got = np.stack([namespace["forecast"](x[s], s, future[s]) for s in range(len(x))])
    assert rel_diff(got, case.expected()) <= 1e-12
    want = predicted(path, case.csv_with_future_rows(data, tmp_path / "with_future.csv"), case)
    assert rel_diff(got, want) <= 1e-12


def test_docs_calendar_columns_snippet_equals_what_lstm_derives():
    (snippet,) = doc_blocks("def calendar_columns")
    namespace = {}
    exec(snippet, namespace)
    rng = np.random.default_rng(3)
    times = np.concatenate([rng.integers(-(2**61), 2**62, 500), [0, -1, 951_782_400 * 10**9]])  # 2000-02-29
    for components in (("hour",), ("dayofweek",), ("dayofyear",), ("month",), calendar.COMPONENTS, ()):
        got = namespace["calendar_columns"](times.astype("datetime64[ns]"), list(components))
        want = calendar.derive(components, None, times, 86_400 * 10**9)
        assert got.shape == want.shape and np.max(np.abs(got - want), initial=0.0) <= 1e-15, components


@pytest.mark.parametrize("name", ["calendar_only", "seasonal_blend_future"])
def test_docs_onnx_example_for_known_inputs_forecasts_a_csv_with_future_rows(models, name, tmp_path, monkeypatch):
    """The docs' calendar helper and known-inputs example (after the first example's session and
    meta), run as written on a CSV that ends with the forecast steps' rows."""
    path, data = models[name]
    case = Case(path, data)
    session = onnx_session(case)
    case.csv_with_future_rows(data, tmp_path / "data.csv")
    monkeypatch.chdir(tmp_path)
    namespace = {"json": json, "np": np, "pd": pd, "session": session,  # what the first example defines
                 "meta": session.get_modelmeta().custom_metadata_map}
    (helper,) = doc_blocks("def calendar_columns")
    (sequel,) = doc_blocks('{"x": x, "future": future}')
    for block in (helper, sequel):
        exec(block, namespace)
    want = case.expected()
    assert rel_diff(namespace["forecast"].reshape(want.shape), want) <= RTOL_FLOAT32


def test_a_holidays_model_exports_without_the_holidays_package(models, tmp_path, monkeypatch):
    """Export writes the holiday column's name and rule, not its values: a machine without the
    optional package exports the model (exit 0), in every format."""
    if "holidays_us" not in models:
        pytest.skip("the holidays package is not installed (no holidays model to export)")
    monkeypatch.setitem(sys.modules, "holidays", None)  # `import holidays` raises ImportError
    formats = ["json", "npz"] + (["onnx"] if importlib.util.find_spec("onnx") else [])
    for fmt in formats:
        result = run("export", models["holidays_us"][0], "--format", fmt, "--out", tmp_path / f"m.{fmt}", "-q")
        assert result.exit_code == 0, (fmt, result.output)
    meta = json.loads((tmp_path / "m.json").read_text())["metadata"]
    assert meta["holidays"] == "US" and meta["known_columns"][-1] == "holiday"


# --- the fitted effect of the regressors (future features, holidays) ------------------------------

PROMO_EFFECT = 60.0  # sales units a promotion adds, on a level of 100: most of what a forecast must get right
STRONG_MODELS = {  # name: train options on the strong-effect data
    "strong_direct_level": ["--target", "sales", "--future-features", "promo", "--horizon", "4", "--scaling", "level"],
    "strong_recursive_seasonal_quantiles": ["--target", "sales", "--future-features", "promo", "--horizon", "4",
                                            "--strategy", "recursive", "--scaling", "seasonal",
                                            "--quantiles", "0.1,0.5,0.9"],
}
HOLIDAY_LIFT = 80.0
HOLIDAY_LAST_DAY = "2023-07-02"  # the forecast's second step is the 4th of July


def write_strong_effect_data(root: Path) -> Path:
    rng = np.random.default_rng(11)
    days = pd.date_range(FIRST_DAY, periods=N_ROWS, freq="D").strftime("%Y-%m-%d")
    promo = (rng.random(N_ROWS) < 0.3).astype(int)
    sales = 100 + 5 * np.sin(np.arange(N_ROWS) * 2 * np.pi / 7) + PROMO_EFFECT * promo + rng.normal(0, 1, N_ROWS)
    path = root / "strong.csv"
    pd.DataFrame({"date": days, "sales": sales.round(3), "promo": promo}).to_csv(path, index=False)
    return path


def write_holiday_data(root: Path) -> Path:
    """Daily sales that jump on US public holidays, ending the day before the 4th of July."""
    days = pd.date_range(FIRST_DAY, HOLIDAY_LAST_DAY, freq="D")
    times = days.to_numpy().astype("datetime64[ns]").astype(np.int64)
    holiday = calendar.derive((), "US", times, 86_400 * 10**9)[:, 0]
    rng = np.random.default_rng(12)
    sales = 100 + HOLIDAY_LIFT * holiday + rng.normal(0, 1, len(days))
    path = root / "holidays.csv"
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "sales": sales.round(3)}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def strong_models(tmp_path_factory):
    """name -> (model path, csv path) of models whose regressors have a large fitted effect."""
    root = tmp_path_factory.mktemp("export_known_effect")
    data = write_strong_effect_data(root)
    out = {}
    for name, options in STRONG_MODELS.items():
        path = root / f"{name}.lstm"
        result = run("train", data, *options, "--out", path, *FAST)
        assert result.exit_code == 0, result.output
        out[name] = (path, data)
    return out


def effect_in_units(case: Case, regressor: int = 0) -> float:
    """What one unit of a regressor adds to the (first) target in original units, by the fitted effect."""
    position = case.spec.regressors[regressor]
    return case.spec.known_coef[regressor][0] * case.forecaster.scale[0, 0] / case.forecaster.scale[0, position]


@pytest.mark.parametrize("name", sorted(STRONG_MODELS))
def test_onnx_of_a_model_with_a_strong_future_feature_effect_equals_lstm_predict(strong_models, name, tmp_path):
    """The graph subtracts the fitted effect from the window and adds the steps' effect back: a
    graph without it would be off by tens of sales units."""
    path, data = strong_models[name]
    case = Case(path, data)
    assert effect_in_units(case) > PROMO_EFFECT / 2  # the fit found the promotion's effect
    case.future_values[:] = [[1.0], [0.0], [1.0], [0.0]]  # steps with and without a promotion
    want = predicted(path, case.csv_with_future_rows(data, tmp_path / "with_future.csv"), case)
    (got,) = onnx_session(case).run(["forecast"], case.feed())
    assert rel_diff(got.reshape(want.shape), want) <= RTOL_FLOAT32


def test_onnx_of_a_holidays_model_applies_the_holiday_effect(tmp_path):
    pytest.importorskip("holidays")
    data = write_holiday_data(tmp_path)
    path = tmp_path / "holidays.lstm"
    result = run("train", data, "--target", "sales", "--holidays", "US", "--horizon", "3", "--out", path, *FAST)
    assert result.exit_code == 0, result.output
    case = Case(path, data)
    assert list(case.spec.regressors) == [len(case.spec.input_columns) - 2]  # the holiday column
    assert effect_in_units(case) > HOLIDAY_LIFT / 2
    (got,) = onnx_session(case).run(["forecast"], case.feed())
    want = predicted(path, case.csv_with_future_rows(data, tmp_path / "with_future.csv"), case)
    assert rel_diff(got.reshape(want.shape), want) <= RTOL_FLOAT32
    steps = got.reshape(-1)  # July 3, 4, 5: the 4th is the holiday
    assert steps[1] - max(steps[0], steps[2]) > HOLIDAY_LIFT / 2


def test_json_npz_and_onnx_metadata_carry_the_fitted_effect(strong_models):
    pytest.importorskip("onnx")
    import onnx

    case = Case(*strong_models["strong_direct_level"])
    d = case.header["data"]
    meta = json.loads(export.to_json_text(case.header, case.arrays))["metadata"]
    assert meta["known_coef"] == d["known_coef"] and len(meta["known_coef"]) == 1
    assert meta["known_intercept"] == d["known_intercept"]
    assert meta["regressors"] == list(case.spec.regressors) == [1]
    assert meta["regressor_columns"] == ["promo"]
    with np.load(io.BytesIO(export.to_npz_bytes(case.header, case.arrays)), allow_pickle=False) as npz:
        assert json.loads(npz["metadata_json"].item()) == meta
    model = onnx.load_from_string(export.to_onnx_bytes(case.header, case.arrays))
    props = {p.key: p.value for p in model.metadata_props}
    for key in ("known_coef", "known_intercept", "regressors", "regressor_columns"):
        assert json.loads(props[key]) == meta[key], key
    assert "Known effect" in model.doc_string and "['promo']" in model.doc_string


def test_a_model_without_regressors_has_no_effect_in_its_graph(models):
    """Calendar inputs alone have no fitted effect (the anchor and the network model the season):
    the graph has no effect nodes and the metadata's effect is empty."""
    pytest.importorskip("onnx")
    import onnx

    case = Case(*models["calendar_only"])
    model = onnx.load_from_string(export.to_onnx_bytes(case.header, case.arrays))
    assert not [n for n in model.graph.node if "known_effect" in n.output[0] or n.op_type == "MatMul"]
    assert "Known effect" not in model.doc_string
    meta = json.loads(export.to_json_text(case.header, case.arrays))["metadata"]
    assert meta["known_coef"] == meta["known_intercept"] == meta["regressors"] == meta["regressor_columns"] == []


def test_a_future_features_model_without_a_fitted_effect_exports_as_before(models):
    """A model file without known_coef (written before lstm fitted the effect) forecasts without one,
    and so does its graph."""
    case = Case(*models["direct_level_future"])
    data = {k: v for k, v in case.header["data"].items() if k not in ("known_coef", "known_intercept")}
    case.header = {**case.header, "data": data}
    case.forecaster = Forecaster.from_file_parts(case.header, case.arrays)
    assert not case.forecaster.spec.known_coef
    (got,) = onnx_session(case).run(["forecast"], case.feed())
    want = case.expected()
    assert rel_diff(got.reshape(want.shape), want) <= RTOL_FLOAT32
    assert json.loads(export.to_json_text(case.header, case.arrays))["metadata"]["regressors"] == [1]
