"""Inputs known in advance at the edges (issue 16): what evaluate's report says of them, validate's
future-rows check, and --engine dask giving the local engine's bytes for models that read them.

Tiny models (--hidden 4, --epochs 2): nothing here is about accuracy, only about which inputs are
read, from where, and what the user is told."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import evaluate
from lstm_cli.cli import cli
from lstm_cli.errors import EXIT_DATA, EXIT_USAGE

H = 4
N_HISTORY = 60
IDS = ("a", "b", "c")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def panel_frame(n_future=H, seed=0) -> pd.DataFrame:
    """Daily series a, b, c: y = 10 + 3 promo + a weekly wave + noise; their last n_future rows are
    future rows (y empty, promo planned). Rows shuffled: the order of the file must not matter."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, sid in enumerate(IDS):
        n = N_HISTORY + n_future
        dates = pd.date_range("2021-01-04", periods=n, freq="D")
        promo = (rng.random(n) < 0.3).astype(int)
        y = 10 + k + 3 * promo + np.sin(2 * np.pi * np.arange(n) / 7) + rng.normal(0, 0.3, n)
        part = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "id": sid, "y": y.round(3).astype(str),
                             "promo": promo.astype(str)})
        part.loc[N_HISTORY:, "y"] = ""
        parts.append(part)
    return pd.concat(parts).sample(frac=1.0, random_state=seed)


def history_of(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["y"] != ""]


def write(df: pd.DataFrame, path):
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("edges")
    df = panel_frame()
    out = {"dir": d, "frame": df, "future": write(df, d / "future.csv"),
           "history": write(history_of(df), d / "history.csv")}
    for name, extra in (("ff", ("--future-features", "promo")), ("cal", ("--calendar", "dayofweek")),
                        ("mix", ("--future-features", "promo", "--calendar", "dayofweek", "--holidays", "US")),
                        ("plain", ())):
        if name == "mix":
            pytest.importorskip("holidays")
        model = d / f"{name}.lstm"
        r = run("train", out["history"], "--target", "y", "--id-col", "id", "--horizon", H, "--lookback", 8,
                "--hidden", 4, "--epochs", 2, "--threads", 1, "--seed", 0, "-q", "--out", model, *extra)
        assert r.exit_code == 0, r.output
        out[name] = model
    return out


def evaluate_json(model, data, *extra):
    r = run("evaluate", model, data, "--format", "json", "-q", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def table_of(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


# ----------------------------------------------------------------------------------------------
# evaluate: where the known inputs came from


def test_evaluate_json_header_names_future_features_taken_from_the_actual_rows(files):
    header = evaluate_json(files["ff"], files["history"])["header"]
    assert header["known_inputs"] == {"future_features": ["promo"], "calendar": [], "holidays": None,
                                      "from": "the actual rows after each origin"}
    assert header["future_rows_not_scored"] == 0


def test_evaluate_json_header_of_a_calendar_model_names_its_components(files):
    header = evaluate_json(files["cal"], files["history"])["header"]
    assert header["known_inputs"] == {"future_features": [], "calendar": ["dayofweek"], "holidays": None,
                                      "from": "the actual rows after each origin"}


def test_evaluate_json_header_of_a_plain_model_has_no_known_inputs(files):
    header = evaluate_json(files["plain"], files["history"])["header"]
    assert header["known_inputs"] is None
    assert header["future_rows_not_scored"] == 0


def test_evaluate_table_says_future_features_are_the_actual_rows_known_in_advance(files):
    text = table_of(run("evaluate", files["ff"], files["history"]))
    line = next(x for x in text.splitlines() if "known inputs" in x)
    assert "future features promo from the actual rows after each origin (known in advance by definition)" in line


def test_evaluate_table_says_calendar_inputs_come_from_the_timestamps(files):
    text = table_of(run("evaluate", files["cal"], files["history"]))
    assert "calendar dayofweek from the timestamps of the actual rows after each origin" in text
    mixed = table_of(run("evaluate", files["mix"], files["history"]))
    assert ("future features promo from the actual rows after each origin (known in advance by definition); "
            "calendar dayofweek and holidays US from their timestamps") in mixed


def test_evaluate_table_of_a_plain_model_has_no_known_inputs_line(files):
    assert "known inputs" not in table_of(run("evaluate", files["plain"], files["history"]))


def test_evaluate_notes_the_future_rows_it_cannot_score_and_scores_the_rest_alone(files):
    r = run("evaluate", files["ff"], files["future"], "--format", "json", "--backtest", 2)
    assert r.exit_code == 0, r.output
    assert (f"lstm: note: {3 * H} future rows of 3 series (the target empty after the last value) not scored: "
            "they have no actuals; the backtest ends at each series' last value") in r.stderr
    doc = json.loads(r.stdout)
    assert doc["header"]["future_rows_not_scored"] == 3 * H
    alone = evaluate_json(files["ff"], files["history"], "--backtest", 2)
    assert doc["records"] == alone["records"]  # the future rows change nothing that is scored


def test_evaluate_of_a_model_without_future_features_refuses_future_rows(files):
    r = run("evaluate", files["cal"], files["future"])
    assert r.exit_code == EXIT_DATA
    assert "future rows, but this model reads no future features" in r.stderr
    assert "Traceback" not in r.output


def test_refit_trains_every_origin_with_the_files_known_inputs(files, monkeypatch):
    fitted_specs = []
    train_on_series = evaluate.train_on_series

    def recording(history, req, **kw):
        model, result = train_on_series(history, req, **kw)
        fitted_specs.append(model.spec)
        return model, result

    monkeypatch.setattr(evaluate, "train_on_series", recording)
    r = run("evaluate", files["mix"], files["future"], "--refit", "--backtest", 2, "--format", "json")
    assert r.exit_code == 0, r.output
    assert len(fitted_specs) == 2
    for spec in fitted_specs:
        assert (spec.future_features, spec.calendar, spec.holidays) == (("promo",), ("dayofweek",), "US")
    assert json.loads(r.stdout)["header"]["mode"] == "refit"


# ----------------------------------------------------------------------------------------------
# validate: the future rows


def validate_json(*args):
    r = run("validate", *args, "--format", "json")
    return r, json.loads(r.stdout)


def check_named(doc, name):
    return next(c for c in doc["checks"] if c["name"] == name)


def test_validate_model_future_rows_check_passes_on_enough_rows_on_the_grid(files):
    r, doc = validate_json(files["future"], "--model", files["ff"])
    assert r.exit_code == 0, r.output
    check = check_named(doc, "future rows")
    assert check["status"] == "ok"
    assert f"every series has {H} future rows" in check["detail"]
    assert doc["summary"]["future_rows"] == {"total": 3 * H, "fewest": H, "most": H}


def test_validate_model_fails_the_future_rows_check_on_too_few_rows(files, tmp_path):
    df = files["frame"]  # history ends on 2021-03-04; future rows 03-05 to 03-08
    short = write(df[~((df["id"] == "b") & df["date"].isin(["2021-03-07", "2021-03-08"]))], tmp_path / "short.csv")
    r, doc = validate_json(short, "--model", files["ff"])
    assert r.exit_code == EXIT_DATA
    check = check_named(doc, "future rows")
    assert check["status"] == "fail"
    assert "series 'b' has 2 future rows after its last value" in check["detail"]
    assert f"need {H}" in check["detail"]
    assert doc["usable"] is False


def test_validate_model_fails_the_future_rows_check_on_an_empty_future_feature(files, tmp_path):
    df = files["frame"].copy()
    df.loc[(df["id"] == "c") & (df["date"] == "2021-03-06"), "promo"] = ""
    r, doc = validate_json(write(df, tmp_path / "nan.csv"), "--model", files["ff"])
    assert r.exit_code == EXIT_DATA
    check = check_named(doc, "future rows")
    assert check["status"] == "fail"
    assert "column 'promo': empty in a future row (series 'c')" in check["detail"]


def test_validate_model_fails_the_future_rows_check_without_future_rows(files):
    r, doc = validate_json(files["history"], "--model", files["ff"])
    assert r.exit_code == EXIT_DATA
    check = check_named(doc, "future rows")
    assert check["status"] == "fail" and "series 'a' has no future rows after its last value" in check["detail"]
    assert r.stderr.startswith(f"lstm: {files['history']}: series 'a' has no future rows")


def test_validate_model_fails_future_rows_off_the_grid(files, tmp_path):
    df = files["frame"].copy()
    first_future = (df["id"] == "a") & (df["y"] == "") & (df["date"] == "2021-03-05")
    df.loc[first_future, "date"] = "2021-03-15"  # past the other future rows: a day is skipped
    r, doc = validate_json(write(df, tmp_path / "skip.csv"), "--model", files["ff"])
    assert r.exit_code == EXIT_DATA
    assert "does not continue the series" in check_named(doc, "future rows")["detail"]


def test_validate_model_horizon_past_the_trained_one_needs_whole_calls_of_future_rows(files):
    r, doc = validate_json(files["future"], "--model", files["ff"], "--horizon", H + 2)
    assert r.exit_code == EXIT_DATA
    detail = check_named(doc, "future rows")["detail"]
    assert f"need {2 * H} (the {H + 2} steps asked, rounded up to whole calls" in detail


def test_validate_calendar_model_says_its_inputs_come_from_the_timestamps(files):
    r, doc = validate_json(files["history"], "--model", files["cal"])
    assert r.exit_code == 0, r.output
    check = check_named(doc, "known inputs")
    assert check["status"] == "ok"
    assert "calendar dayofweek: derived from the timestamps of the forecast steps, nothing to supply" in check["detail"]
    assert all(c["name"] != "future rows" for c in doc["checks"])


def test_validate_holiday_model_warns_when_the_holidays_package_is_missing(files, monkeypatch):
    from lstm_cli import calendar
    from lstm_cli.errors import MissingDependencyError

    def missing(code):
        raise MissingDependencyError("--holidays needs the holidays package: pip install 'lstm-cli[holidays]'")

    monkeypatch.setattr(calendar, "check_holidays", missing)
    r, doc = validate_json(files["future"], "--model", files["mix"])
    assert r.exit_code == 0, r.output  # the data is usable; predict would exit 69 until it is installed
    check = check_named(doc, "known inputs")
    assert check["status"] == "warn" and "pip install 'lstm-cli[holidays]'" in check["detail"]
    assert check_named(doc, "future rows")["status"] == "ok"


def test_validate_without_model_counts_future_rows_per_series(files, tmp_path):
    df = files["frame"]
    uneven = df[~((df["id"] == "b") & (df["date"] == "2021-03-08"))]  # b: 3 future rows
    r, doc = validate_json(write(uneven, tmp_path / "uneven.csv"), "--target", "y", "--id-col", "id",
                           "--future-features", "promo")
    assert r.exit_code == 0, r.output
    assert doc["summary"]["future_rows"] == {"total": 3 * H - 1, "fewest": H - 1, "most": H}
    detail = check_named(doc, "future rows")["detail"]
    assert f"{H - 1} to {H} future rows per series (series 'b' has {H - 1})" in detail
    r, doc = validate_json(tmp_path / "uneven.csv", "--target", "y", "--id-col", "id", "--future-features",
                           "promo", "--horizon", H)
    assert r.exit_code == EXIT_DATA
    assert "series 'b' has 3 future rows" in check_named(doc, "future rows")["detail"]


def test_validate_without_model_a_file_without_future_rows_is_one_to_train_on(files):
    r, doc = validate_json(files["history"], "--target", "y", "--id-col", "id", "--future-features", "promo",
                           "--horizon", H)
    assert r.exit_code == 0, r.output
    assert "no future rows after the last value: a file to train on" in check_named(doc, "future rows")["detail"]


def test_validate_refuses_a_column_both_feature_and_future_feature(files):
    r = run("validate", files["history"], "--target", "y", "--features", "promo", "--future-features", "promo")
    assert r.exit_code == EXIT_USAGE
    assert "one role" in r.stderr


# ----------------------------------------------------------------------------------------------
# --engine dask: the same bytes as --engine local


def local_predict(model, data, *extra) -> bytes:
    r = run("predict", model, data, *extra)
    assert r.exit_code == 0, r.output
    return r.stdout_bytes


def dask_predict(cluster, model, data, out, *extra):
    return run("predict", model, data, "--engine", "dask", "--scheduler", cluster.scheduler_address, "--out", out,
               "-q", *extra)


@pytest.mark.parametrize("name,data", [("ff", "future"), ("cal", "history"), ("mix", "future")])
def test_dask_predict_equals_local_for_models_with_known_inputs(cluster, files, tmp_path, name, data):
    out = tmp_path / "f.csv"
    r = dask_predict(cluster, files[name], files[data], out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == local_predict(files[name], files[data])


def test_dask_predict_past_the_trained_horizon_equals_local(cluster, files, tmp_path):
    df = panel_frame(n_future=2 * H)
    data = write(df, tmp_path / "long_future.csv")
    out = tmp_path / "f.csv"
    r = dask_predict(cluster, files["ff"], data, out, "--horizon", H + 3)
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == local_predict(files["ff"], data, "--horizon", H + 3)


def test_dask_future_rows_travel_with_their_series_across_blocks_and_files(cluster, files, tmp_path):
    """Tiny blocks cut series (and their future rows) apart before the shuffle; the future rows in a
    second file of the glob; more partitions than series (empty ones): the local engine's rows."""
    from lstm_cli import engine_dask

    df = files["frame"]
    d = tmp_path / "in"
    d.mkdir()
    write(history_of(df), d / "1-history.csv")
    write(df[df["y"] == ""], d / "2-future.csv")
    seen = []
    _, meta = engine_dask.predict_dask(str(files["ff"]), str(d / "*.csv"), str(tmp_path / "f.csv"),
                                       scheduler=cluster.scheduler_address, npartitions=7, blocksize=500,
                                       on_progress=lambda done, total, series: seen.append(series))
    assert meta["series"] == 3 and seen.count(0) >= 4
    got = pd.read_csv(tmp_path / "f.csv", dtype=str).sort_values(["id", "date"], ignore_index=True)
    want = pd.read_csv(io.BytesIO(local_predict(files["ff"], files["future"])), dtype=str)  # in id order
    pd.testing.assert_frame_equal(got[["date", "id"]], want[["date", "id"]])
    # partitions of other sizes: float32 sums of the small-batch kernel round differently in the last bits
    np.testing.assert_allclose(got["y"].astype(float), want["y"].astype(float), rtol=1e-6, atol=0)


def test_dask_refusal_of_short_future_rows_names_the_file_as_local_does(cluster, files, tmp_path):
    df = files["frame"]
    data = write(df[~((df["id"] == "b") & (df["date"] == "2021-03-08"))], tmp_path / "s.csv")
    local = run("predict", files["ff"], data)
    r = dask_predict(cluster, files["ff"], data, tmp_path / "f.csv")
    assert local.exit_code == r.exit_code == EXIT_DATA
    assert "<stdin>" not in r.stderr
    assert r.stderr == local.stderr  # "s.csv: series 'b' has 3 future rows ... with the target empty and ..."
    assert not (tmp_path / "f.csv").exists()


@pytest.mark.parametrize("name,data", [("ff", "future"), ("cal", "history")])
def test_dask_evaluate_equals_local(cluster, files, name, data):
    args = ("evaluate", files[name], files[data], "--format", "json", "--backtest", 2)
    local = run(*args)
    r = run(*args, "--engine", "dask", "--scheduler", cluster.scheduler_address)
    assert local.exit_code == r.exit_code == 0, r.output
    assert r.stdout == local.stdout
    notes = [x for x in local.stderr.splitlines() if x.startswith("lstm: note:")]
    assert notes == [x for x in r.stderr.splitlines() if x.startswith("lstm: note:")]  # the future-rows note too


def test_dask_evaluate_names_unscored_future_rows_across_partitions(cluster, files):
    from lstm_cli import engine_dask

    ev = engine_dask.evaluate_dask(str(files["ff"]), str(files["future"]), scheduler=cluster.scheduler_address,
                                   npartitions=5, blocksize=500)
    assert ev.future_rows == 3 * H
    assert any(n.startswith(f"{3 * H} future rows of 3 series") for n in ev.notes)
    local = evaluate.evaluate_from_csv(str(files["ff"]), str(files["future"]))
    assert ev.known_inputs == local.known_inputs
    assert [{k: v for k, v in r.items() if not isinstance(v, float)} for r in ev.records] == \
        [{k: v for k, v in r.items() if not isinstance(v, float)} for r in local.records]
    # partitions of other sizes: float32 sums of the small-batch kernel round differently in the last bits
    assert ev.records == [{k: pytest.approx(v, rel=1e-6) if isinstance(v, float) else v for k, v in r.items()}
                          for r in local.records]


def test_dask_predict_one_series_without_id_column_with_future_rows(cluster, files, tmp_path):
    df = files["frame"]
    one = df[df["id"] == "a"].drop(columns="id")
    history = write(history_of(one), tmp_path / "one_history.csv")
    model = tmp_path / "one.lstm"
    r = run("train", history, "--target", "y", "--future-features", "promo", "--horizon", H, "--lookback", 8,
            "--hidden", 4, "--epochs", 2, "--threads", 1, "-q", "--out", model)
    assert r.exit_code == 0, r.output
    data = write(one, tmp_path / "one.csv")
    out = tmp_path / "f.csv"
    r = dask_predict(cluster, model, data, out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == local_predict(model, data)
    assert len(pd.read_csv(io.BytesIO(out.read_bytes()))) == H
