"""Issue 15, the forecast written out: formula injection (--excel-safe), ids kept verbatim,
provenance columns that never collide with data columns, and floats printed as short as the
model's precision (--precision)."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_cli import engine_dask, frame, modelfile, pipeline
from lstm_cli.cli import cli
from lstm_cli.errors import ModelFileError
from lstm_cli.model import DataSpec

TINY = ["--horizon", "3", "--hidden", "4", "--epochs", "2", "--threads", "1", "-q"]
HOSTILE_IDS = ["=1+2", "+SUM(A1:A9)", "-x", "@cmd", "\tfoo", " =HYPERLINK(x)", "\uff1d1+1", " a", "b ",
               'q"uo,te', "multi\nline", "cr\rinside", "M\u00fcnchen", "\xa0nbsp\u2003", "-5", "plain"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write_panel(path, ids, id_col="store", target="sales", time_col="period", n=30, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")  # so that an id with a '\r' is quoted
    w.writerow([time_col, id_col, target])
    for j, sid in enumerate(ids):
        for k in range(n):
            w.writerow([k + 1, sid, f"{scale * (10 + j + np.sin(k) + 0.1 * rng.normal()):.4f}"])
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def read_csv_rows(text):
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A float32 model trained on ids a spreadsheet would run, and ids with spaces, quotes, newlines."""
    d = tmp_path_factory.mktemp("hostile")
    data = write_panel(d / "hostile.csv", HOSTILE_IDS, target="=y")
    model = d / "m.lstm"
    result = run("train", data, "--target", "=y", "--id-col", "store", "--out", model, *TINY)
    assert result.exit_code == 0, result.output
    return data, model


# ----------------------------------------------------------------------------------------------
# formula_injection


def test_formula_injection_cells_are_verbatim_by_default(hostile):
    data, model = hostile
    result = run("predict", model, data)
    assert result.exit_code == 0, result.output
    rows = read_csv_rows(result.stdout)
    assert rows[0] == ["period", "store", "=y"]
    assert sorted({r[1] for r in rows[1:]}) == sorted(HOSTILE_IDS)  # a pipeline joins back on them


def test_formula_injection_excel_safe_quotes_text_never_numbers(hostile):
    data, model = hostile
    result = run("predict", model, data, "--excel-safe")
    assert result.exit_code == 0, result.output
    rows = read_csv_rows(result.stdout)
    assert rows[0] == ["period", "store", "'=y"]
    got = {r[1] for r in rows[1:]}
    for sid in HOSTILE_IDS:
        risky = sid[0] in "\t\r\n" or sid.lstrip(" ")[:1] in "=+-@\uff1d" and sid != "-5"
        assert ("'" + sid if risky else sid) in got, sid
    for r in rows[1:]:
        float(r[2])  # the forecasts are numbers, untouched
        assert not r[0].startswith("'")


def test_formula_injection_numbers_negative_or_not_are_never_altered():
    text = frame.write_csv_text({"t": [-3, -2], "id": ["-1.5", "-1+2"], "v": [-1.5, float("nan")],
                                 "mixed": [-2, "=x"]}, ["t", "id", "v", "mixed"], excel_safe=True)
    assert read_csv_rows(text) == [["t", "id", "v", "mixed"], ["-3", "-1.5", "-1.5", "-2"],
                                   ["-2", "'-1+2", "NaN", "'=x"]]
    for danger in ["=1", "+1+1", "@SUM(1)", "-A1", "\t=1", "\r=1", "\n=1", "  =1", "\uff20x", "\uff0b1",
                   " \t=cmd", "\u00a0=cmd", "\u3000=cmd", "\u200b=cmd", "\ufeff@x", "\u2003-A1"]:
        assert frame.formula_like(danger) and frame.spreadsheet_safe(danger) == "'" + danger, repr(danger)
    for fine in ["", "a=1", "1e-5", "-0.5", "+3", " 12 ", "x@y.z", "'=already"]:
        assert not frame.formula_like(fine), repr(fine)


def test_formula_injection_excel_safe_needs_csv(hostile):
    data, model = hostile
    result = run("predict", model, data, "--excel-safe", "--format", "json")
    assert result.exit_code == 2 and "--excel-safe" in result.output
    result = run("evaluate", model, data, "--excel-safe", "--format", "json")
    assert result.exit_code == 2 and "--excel-safe" in result.output


def test_formula_injection_evaluate_csv_excel_safe(hostile):
    data, model = hostile
    plain = run("evaluate", model, data, "--format", "csv")
    safe = run("evaluate", model, data, "--format", "csv", "--excel-safe")
    assert plain.exit_code == 0 and safe.exit_code == 0, safe.output
    plain_ids = {r[1] for r in read_csv_rows(plain.stdout)[1:]}
    safe_rows = read_csv_rows(safe.stdout)
    assert "=1+2" in plain_ids and "'=1+2" in {r[1] for r in safe_rows[1:]}
    assert "'=y" in {r[2] for r in safe_rows[1:]}  # the target name
    mae = safe_rows[0].index("mae")
    assert all(float(r[mae]) >= 0 for r in safe_rows[1:])  # a number, untouched


def test_formula_injection_dask_partition_excel_safe(hostile):
    """The dask engine's part files are written by the same writer, with the same option."""
    data, model = hostile
    part = pd.read_csv(data, dtype=str, keep_default_na=False)
    opts = {"model_source": str(model), "source": str(data), "threads": 1, "missing": "interpolate",
            "horizon": 3, "provenance": None, "precision": None, "excel_safe": True}
    out = engine_dask._forecast_partition(part, model.read_bytes(), opts, {"number": 0})
    rows = read_csv_rows(out["text"][0])
    assert rows[0] == ["period", "store", "'=y"] and "'@cmd" in {r[1] for r in rows[1:]}
    opts["excel_safe"] = False
    rows = read_csv_rows(engine_dask._forecast_partition(part, model.read_bytes(), opts, {"number": 0})["text"][0])
    assert sorted({r[1] for r in rows[1:]}) == sorted(HOSTILE_IDS)


def test_formula_injection_validate_notes_it(hostile):
    data, _ = hostile
    result = run("validate", data, "--target", "=y", "--id-col", "store", "--format", "json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["spreadsheet"]["status"] == "warn" and "--excel-safe" in checks["spreadsheet"]["detail"]
    assert checks["ids"]["status"] == "warn" and "verbatim" in checks["ids"]["detail"]


# ----------------------------------------------------------------------------------------------
# ids_verbatim


def test_ids_verbatim_round_trip_through_train_and_predict(hostile):
    data, model = hostile
    header = modelfile.load_header(model)
    assert sorted(header["series"]["ids"]) == sorted(HOSTILE_IDS)
    result = run("predict", model, data, "--format", "json")
    assert result.exit_code == 0, result.output
    assert "not seen in training" not in result.output  # every verbatim id matched the model's
    got = [r["store"] for r in json.loads(result.stdout)["forecast"]]
    assert sorted(set(got)) == sorted(HOSTILE_IDS) and len(got) == 3 * len(HOSTILE_IDS)


def test_ids_verbatim_blank_id_is_refused(tmp_path):
    data = tmp_path / "blank.csv"
    data.write_text("period,store,sales\n1,a,1\n2, ,2\n")
    result = run("validate", data, "--target", "sales", "--id-col", "store", "--format", "json")
    assert result.exit_code == 65 and "empty series id" in json.loads(result.stdout)["checks"][0]["detail"]


ID_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(ID_TEXT.filter(str.strip), min_size=1, max_size=5, unique=True), sep=st.sampled_from([",", ";"]),
       term=st.sampled_from(["\n", "\r\n"]))
def test_ids_verbatim_property_reader_and_writer(tmp_path, ids, sep, term):
    """Any non-blank id, written by a csv writer, reads back byte for byte on the fast and the
    careful path, and the forecast writer writes it so that a csv reader gets it back again."""
    out = io.StringIO()  # QUOTE_ALL: csv.writer quotes '\r' only when the terminator holds one
    w = csv.writer(out, delimiter=sep, lineterminator=term, quoting=csv.QUOTE_ALL if term == "\n" else csv.QUOTE_MINIMAL)
    w.writerow(["period", "id", "y"])
    for sid in ids:
        for k in range(3):
            w.writerow([k, sid, k * 1.5])
    path = tmp_path / "ids.csv"
    path.write_bytes(out.getvalue().encode("utf-8"))
    kwargs = {"targets": ["y"], "id_col": "id", "time_col": "period", "sep": sep}
    fast = frame.read_series(str(path), **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(frame, "_read_fast", lambda *a, **k: (_ for _ in ()).throw(frame._Unusual("test")))
        careful = frame.read_series(str(path), **kwargs)
    assert fast.ids == careful.ids == tuple(sorted(ids))
    rows = {"period": [str(k) for k in range(len(fast.ids))], "id": list(fast.ids), "y": [1.0] * len(fast.ids)}
    back = read_csv_rows(frame.write_csv_text(rows, ["period", "id", "y"]))
    assert [r[1] for r in back[1:]] == list(fast.ids)


def test_ids_verbatim_dask_shuffle_keeps_spaces(tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    data = write_panel(tmp_path / "spaced.csv", [" a", "a", "a "])
    spec = DataSpec(time_col="period", id_col="store", targets=("sales",), features=(), time_kind="integer",
                    step=1, freq=None, lookback=4, horizon=3)
    ddf = engine_dask._by_series(dd, str(data), spec, ",", "64MB", 1)
    assert sorted(set(ddf.compute(scheduler="sync")["store"])) == [" a", "a", "a "]


# ----------------------------------------------------------------------------------------------
# provenance_columns


def test_provenance_columns_id_named_origin_and_target_named_step(tmp_path):
    data = write_panel(tmp_path / "clash.csv", ["a", "b"], id_col="origin", target="step")
    model = tmp_path / "m.lstm"
    assert run("train", data, "--target", "step", "--id-col", "origin", "--out", model, *TINY).exit_code == 0
    result = run("predict", model, data, "--provenance")
    assert result.exit_code == 0, result.output
    rows = read_csv_rows(result.stdout)
    assert rows[0] == ["period", "origin", "lstm_origin", "lstm_step", "model_sha256", "model_created", "step"]
    assert {r[1] for r in rows[1:]} == {"a", "b"} and {r[2] for r in rows[1:]} == {"30"}
    assert [r[3] for r in rows[1:4]] == ["1", "2", "3"]
    assert "'lstm_origin'" in result.stderr
    doc = json.loads(run("predict", model, data, "--provenance", "--format", "json").stdout)
    assert doc["columns"] == rows[0] and all(set(r) == set(rows[0]) for r in doc["forecast"])


def test_provenance_columns_prefix_that_still_collides():
    assert pipeline.provenance_columns(["step", "lstm_step", "origin"]) == \
        ["lstm_origin", "lstm_lstm_step", "model_sha256", "model_created"]
    assert pipeline.provenance_columns(["date", "lstm_step"]) == ["origin", "step", "model_sha256", "model_created"]
    spec = DataSpec(time_col="model_sha256", id_col="lstm_model_sha256", targets=("model_created",), features=(),
                    time_kind="integer", step=1, freq=None, lookback=4, horizon=3)
    cols = pipeline.forecast_columns(spec, provenance=True)
    assert len(cols) == len(set(cols)) == 7


def test_provenance_columns_quantile_name_clash_refused(tmp_path):
    data = write_panel(tmp_path / "q.csv", ["a", "b"], id_col="sales_q0.5")
    result = run("train", data, "--target", "sales", "--id-col", "sales_q0.5", "--quantiles", "0.1,0.5,0.9",
                 "--out", tmp_path / "q.lstm", *TINY)
    assert result.exit_code == 2 and "'sales_q0.5'" in result.output and "rename" in result.output
    assert not (tmp_path / "q.lstm").exists()
    spec = DataSpec(time_col="period", id_col="sales_q0.5", targets=("sales",), features=(), time_kind="integer",
                    step=1, freq=None, lookback=4, horizon=3, quantiles=(0.5,))
    with pytest.raises(ModelFileError, match="sales_q0.5"):  # a model file made before the check
        pipeline.forecast_columns(spec)


# ----------------------------------------------------------------------------------------------
# float_repr


def shortest_f32(x: float) -> str:
    return repr(float(str(np.float32(x))))


def test_float_repr_float32_model_prints_shortest_round_trip(hostile, tmp_path):
    data, model = hostile
    result = run("predict", model, data)
    assert result.exit_code == 0, result.output
    printed = [r[2] for r in read_csv_rows(result.stdout)[1:]]
    assert max(map(len, printed)) <= 12  # was 17-18 characters
    m, _ = pipeline.load_model(str(model))
    series = pipeline.read_like_model(str(data), m.spec)
    values, _ = m.forecast(series.ids, series.values, series.starts, 3)
    for text, full in zip(printed, values[:, :, 0, 0].ravel().tolist(), strict=True):
        assert text == shortest_f32(full), (text, full)  # the same float32, in its shortest text
    doc = json.loads(run("predict", model, data, "--format", "json").stdout)
    assert [repr(r["=y"]) for r in doc["forecast"]] == printed  # JSON: the same numbers


def test_float_repr_float64_model_keeps_every_digit(tmp_path):
    data = write_panel(tmp_path / "d.csv", ["a", "b"])
    model = tmp_path / "m64.lstm"
    assert run("train", data, "--target", "sales", "--id-col", "store", "--dtype", "float64", "--out", model,
               *TINY).exit_code == 0
    m, _ = pipeline.load_model(str(model))
    series = pipeline.read_like_model(str(data), m.spec)
    values, _ = m.forecast(series.ids, series.values, series.starts, 3)
    printed = [r[2] for r in read_csv_rows(run("predict", model, data).stdout)[1:]]
    assert printed == [repr(v) for v in values[:, :, 0, 0].ravel().tolist()]


def test_float_repr_precision_option(hostile):
    data, model = hostile
    result = run("predict", model, data, "--precision", "3")
    assert result.exit_code == 0, result.output
    for r in read_csv_rows(result.stdout)[1:]:
        digits = re.sub(r"e.*|[-.]", "", r[2]).strip("0")
        assert len(digits) <= 3, r[2]
    assert run("predict", model, data, "--precision", "0").exit_code == 2


def test_float_repr_output_floats_edges():
    x = np.array([9.843599151388043, 0.1, 1e-300, 1e300, -1.5, 0.0, -0.0, np.nan, 1e-39, 4036088.25, 1e-20, 3e25])
    got = [repr(v) for v in frame.output_floats(x, "float32").tolist()]
    assert got == ["9.843599", "0.1", "1e-300", "1e+300", "-1.5", "0.0", "-0.0", "nan", "1e-39", "4036088.2",
                   "1e-20", "3e+25"]  # beyond float32 range (1e+300, 1e-39): kept as float64
    rng = np.random.default_rng(3)
    y = np.exp(rng.uniform(-40, 40, 20000)) * rng.choice([-1, 1], 20000)
    inside = (np.abs(y) >= np.finfo(np.float32).tiny) & (np.abs(y) <= np.finfo(np.float32).max)
    want = [shortest_f32(v) if ok else repr(v) for v, ok in zip(y.tolist(), inside, strict=True)]
    assert [repr(v) for v in frame.output_floats(y, "float32").tolist()] == want
    for digits in (1, 4, 9, 15, 17):
        assert frame.output_floats(y, "float64", digits).tolist() == [float(f"{v:.{digits}g}") for v in y.tolist()]
    assert frame.output_floats(y, "float64").tolist() == y.tolist()


def test_log_forging_header_of_thousands_of_columns_gives_a_short_line(tmp_path):
    """A missing column or no time column in a header of 4,100 columns: one line that lists the
    first names and counts the rest, not tens of kilobytes."""
    path = tmp_path / "wide.csv"
    names = [f"c{j}" for j in range(4100)]
    path.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    for args in (["--target", "nope"], ["--target", "c1"]):
        result = run("train", path, *args, "--horizon", "1", "--out", tmp_path / "m.lstm")
        assert result.exit_code == 65, result.output
        line = result.stderr.strip()
        assert "\n" not in line and len(line) < 1000 and "more)" in line, line


def test_log_forging_data_path_is_quoted_in_pipeline_messages(tmp_path):
    """A CSV path with a newline reached the pipeline's messages (a series too short, ...) raw; they
    quote it as the reader's messages do."""
    path = tmp_path / "a\nb.csv"
    path.write_text("t,y\n" + "".join(f"{i},{i % 5}\n" for i in range(8)))
    result = run("train", path, "--target", "y", "--time-col", "t", "--horizon", "3", "--lookback", "6",
                 "--out", tmp_path / "m.lstm")
    assert result.exit_code == 65, result.output
    assert result.stderr.startswith(f"lstm: {str(path)!r}: ") and result.stderr.count("\n") == 1, result.stderr
