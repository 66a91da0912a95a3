"""Conformal intervals (issue 18): `lstm train --intervals` calibrates per-step quantiles of the
scaled absolute errors of the last origins (lstm_cli.intervals), stored in the model header;
`lstm predict --intervals` writes TARGET_loL / TARGET_hiL around each target's forecast."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import frame, intervals, modelfile
from lstm_cli.cli import cli
from lstm_cli.errors import EXIT_DATA, EXIT_USAGE
from lstm_cli.pipeline import TrainRequest, load_model, train_on_series
from lstm_cli.train import TrainConfig
from tests.synthetic import gaussian_seasonal_panel

ROOT = Path(__file__).resolve().parents[1]
A10 = ROOT / "sample_data" / "a10_monthly.csv"
TARGET = "cost_million_aud"
TINY = ["--target", TARGET, "--hidden", "4", "--epochs", "2", "--threads", "1", "-q"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def train(out: Path, *options) -> Path:
    result = run("train", A10, *TINY, "--out", out, *options)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("intervals")
    return {"point": train(d / "point.lstm", "--horizon", "3"),
            "none": train(d / "none.lstm", "--horizon", "3", "--intervals", "none"),
            "quantile": train(d / "q.lstm", "--horizon", "3", "--quantiles", "0.1,0.5,0.9"),
            "dir": d}


def predicted(path, *extra) -> pd.DataFrame:
    result = run("predict", path, A10, *extra)
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


# --- the formula -----------------------------------------------------------------------------------


def test_conformal_quantile_is_the_ceil_n_plus_1_level_th_smallest_score():
    scores = np.array([5.0, 1.0, 4.0, 2.0, 3.0, np.nan])  # n = 5 finite
    assert intervals.conformal_quantile(scores, 50) == 3.0  # ceil(6 * 0.5) = 3rd smallest
    assert intervals.conformal_quantile(scores, 80) == 5.0  # ceil(6 * 0.8) = ceil(4.8) = 5th
    assert intervals.conformal_quantile(scores, 60) == 4.0  # ceil(3.6) = 4th
    assert intervals.conformal_quantile(scores, 95) == 5.0  # ceil(5.7) = 6 > n: the largest
    assert intervals.conformal_quantile(np.arange(1.0, 20.0), 80) == 16.0  # n = 19: ceil(20 * 0.8) = 16, exact


def test_history_scale_is_the_mean_absolute_step_and_1_for_a_constant_series():
    values = np.array([[1.0], [3.0], [2.0], [7.0], [7.0], [7.0]])
    scale = intervals.history_scale(values, np.array([0, 3, 6]), 1)
    assert scale[:, 0].tolist() == [1.5, 1.0]


def test_levels_option_parses_sorts_and_refuses_levels_outside_0_100():
    assert intervals.parse_levels("95, 80,80", "--intervals") == (80.0, 95.0)
    assert intervals.parse_levels("none", "--intervals") == ()
    assert intervals.parse_levels("all", "--intervals", allow_all=True) == "all"
    for bad in ("100", "0", "abc", "80,", "nan", "all", "99.999", "1e-9", "33.3333,66.6667", "99.99999999"):
        with pytest.raises(Exception, match="level in percent"):
            intervals.parse_levels(bad, "--intervals")


# --- coverage --------------------------------------------------------------------------------------


def test_intervals_cover_gaussian_noise_at_their_nominal_levels(tmp_path):
    """4 series of a seasonal signal plus N(0, 1) noise: calibrated on the first 300 rows, the 80% and
    95% intervals of the forecasts at the 97 origins after them cover within 5 points of nominal."""
    n_train, n_all, H = 300, 400, 3
    series, everything = gaussian_seasonal_panel(tmp_path, n_train, n_all)
    req = TrainRequest(data="", out="", targets=("y",), horizon=H, time_col="t", id_col="id", hidden=8,
                       lookback=24, val_frac=0.25, threads=1, train=TrainConfig(epochs=8, seed=1))
    model, _ = train_on_series(series, req)
    intervals.attach(model, intervals.calibrate(model, series, (80.0, 95.0), val_frac=0.25))
    assert model.intervals["origins"] == 75 - H + 1  # the horizons inside the 75 validation rows
    from lstm_cli.evaluate import _truncate

    hits = {80.0: [], 95.0: []}
    for cut in range(n_train, n_all - H + 1):
        history = _truncate(everything, np.full(4, cut))
        point, _ = model.forecast(history.ids, history.values, history.starts, H)
        actual = everything.values[everything.starts[:-1, None] + cut + np.arange(H)][..., :1]
        for level, (lo, hi) in intervals.bounds(model, point, history, (80.0, 95.0)).items():
            hits[level].append((lo <= actual) & (actual <= hi))
    for level, h in hits.items():
        coverage = 100 * np.mean(h)
        assert abs(coverage - level) < 5, (level, coverage)


# --- predict ---------------------------------------------------------------------------------------


def test_train_calibrates_80_and_95_by_default_and_the_model_file_keeps_the_table(models):
    model, header = load_model(str(models["point"]))
    table = header["intervals"]
    assert table["levels"] == [80.0, 95.0] and table["scale"] == intervals.SCALE
    assert np.shape(table["quantiles"]) == (2, 3, 1)
    assert model.intervals == table
    q = np.array(table["quantiles"])
    assert (q >= 0).all() and (q[1] >= q[0]).all()  # 95% at least as wide as 80%


def test_predict_writes_lo_and_hi_columns_after_each_target_and_they_never_cross(models):
    df = predicted(models["point"], "--intervals", "all")
    assert list(df.columns) == ["date", TARGET, f"{TARGET}_lo80", f"{TARGET}_hi80", f"{TARGET}_lo95",
                                f"{TARGET}_hi95"]
    assert (df[f"{TARGET}_lo95"] <= df[f"{TARGET}_lo80"]).all()
    assert (df[f"{TARGET}_lo80"] <= df[TARGET]).all() and (df[TARGET] <= df[f"{TARGET}_hi80"]).all()
    assert (df[f"{TARGET}_hi80"] <= df[f"{TARGET}_hi95"]).all()
    only = predicted(models["point"], "--intervals", "95")
    assert list(only.columns) == ["date", TARGET, f"{TARGET}_lo95", f"{TARGET}_hi95"]
    assert only[f"{TARGET}_hi95"].tolist() == df[f"{TARGET}_hi95"].tolist()


def test_predict_without_intervals_keeps_its_columns(models):
    assert list(predicted(models["point"]).columns) == ["date", TARGET]


def test_predict_json_carries_the_interval_columns(models):
    result = run("predict", models["point"], A10, "--intervals", "80", "--format", "json", "--provenance")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["columns"][-3:] == [TARGET, f"{TARGET}_lo80", f"{TARGET}_hi80"]
    for rec in doc["forecast"]:
        assert rec[f"{TARGET}_lo80"] <= rec[TARGET] <= rec[f"{TARGET}_hi80"]


def test_an_ensemble_is_calibrated_with_its_median_forecast(models):
    path = train(models["dir"] / "ens.lstm", "--horizon", "3", "--ensemble", "2")
    df = predicted(path, "--intervals", "80")
    assert (df[f"{TARGET}_lo80"] <= df[TARGET]).all() and (df[TARGET] <= df[f"{TARGET}_hi80"]).all()


def test_calibration_windows_sets_the_origins(models):
    path = train(models["dir"] / "cw.lstm", "--horizon", "3", "--calibration-windows", "5")
    assert modelfile.load_header(path)["intervals"]["origins"] == 5


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, extra, message", [
    ("none", ["--intervals", "80"], "no calibrated intervals"),
    ("point", ["--intervals", "90"], "calibrated for levels 80,95, not 90"),
    ("point", ["--intervals", "80", "--horizon", "6"], "calibrated for the trained horizon's 3 steps"),
    ("quantile", ["--intervals", "90"], "calibrated for levels 80, not 90"),
    ("point", ["--intervals", "150"], "not a level in percent"),
])
def test_predict_refuses_intervals_it_cannot_give_with_exit_2(models, model, extra, message):
    result = run("predict", models[model], A10, *extra)
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("extra, message", [
    (["--quantiles", "0.1,0.5,0.9", "--intervals", "90"], "gives the levels 80, not 90"),
    (["--intervals", "80,abc"], "not a level in percent"),
    (["--intervals", "none", "--calibration-windows", "3"], "calibrates none"),
])
def test_train_refuses_bad_interval_options_with_exit_2(models, extra, message):
    result = run("train", A10, *TINY, "--horizon", "3", "--out", models["dir"] / "bad.lstm", *extra)
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.output
    assert not (models["dir"] / "bad.lstm").exists()


def test_train_refuses_more_calibration_windows_than_the_data_holds(models):
    result = run("train", A10, *TINY, "--horizon", "3", "--out", models["dir"] / "many.lstm",
                 "--calibration-windows", "100000")
    assert result.exit_code == EXIT_DATA, result.output
    assert "--calibration-windows 100000" in result.output and "ask for at most" in result.output
    assert "lookback 24 rows" in result.output and "epoch" not in result.output  # before training, its lookback


@pytest.mark.parametrize("corrupt, message", [
    (lambda t: t["quantiles"][0][0].__setitem__(0, -1.0), "intervals.quantiles[0][0][0]"),
    (lambda t: t["quantiles"].pop(), "intervals.quantiles"),
    (lambda t: t["quantiles"][1].pop(), "intervals.quantiles[1]"),
    (lambda t: t.__setitem__("levels", [95.0, 80.0]), "intervals.levels"),
    (lambda t: t.__setitem__("scale", "mystery"), "intervals.scale"),
    (lambda t: t.__setitem__("extra", 1), "unknown keys"),
])
def test_a_corrupt_intervals_table_is_refused_with_exit_65(models, tmp_path, corrupt, message):
    header, arrays = modelfile.load(models["point"])
    header = {k: v for k, v in header.items() if k not in ("arrays", "payload_sha256", "header_sha256")}
    corrupt(header["intervals"])
    bad = tmp_path / "bad.lstm"
    modelfile.save(bad, header, arrays, schema=False)
    result = run("predict", bad, A10, "--intervals", "80")
    assert result.exit_code == EXIT_DATA, result.output
    assert message in result.output and "Traceback" not in result.output


def test_train_refuses_an_intervals_table_the_header_cannot_hold_before_training(models):
    levels = ",".join(str(v) for v in range(1, 100))
    result = run("train", A10, *TINY, "--horizon", "20000", "--strategy", "recursive", "--intervals", levels,
                 "--out", models["dir"] / "huge.lstm")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "a model file holds" in result.output


def test_train_summary_names_the_levels_and_warns_of_too_few_errors_for_a_level(models):
    table = {"levels": [80.0, 95.0], "origins": 18, "scores": 18}
    assert intervals.capped_levels(table) == [95.0]  # ceil(19 * 0.95) = 19 > 18 errors
    assert "too few errors for 95%" in intervals.summary(table)
    assert "too few" not in intervals.summary({**table, "scores": 19})
    result = run("train", A10, *[a for a in TINY if a != "-q"], "--horizon", "3", "--out", models["dir"] / "s.lstm",
                 "--calibration-windows", "4")
    assert result.exit_code == 0, result.output
    assert "80,95% conformal, from 4 origins (4 errors per step)" in result.output


def test_a_calibration_without_finite_errors_keeps_the_model_without_intervals(tmp_path):
    """Values near the float64 limit train (and predict refuses their overflowing forecast), so the
    calibration's errors are not finite: the train still succeeds, saying the model has no intervals."""
    from click.testing import CliRunner

    from lstm_cli.cli import cli

    data = tmp_path / "huge.csv"
    data.write_text("date,y\n" + "".join(f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{1.7e308 if i % 2 else -1.7e308}\n"
                                         for i in range(40)))
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(data), "--target", "y", "--horizon", "3", "--lookback", "6",
                                 "--epochs", "2", "--hidden", "4", "--threads", "1", "--out", str(tmp_path / "m.lstm")])
    assert result.exit_code == 0, result.output
    assert "no intervals" in result.output
    asked = runner.invoke(cli, ["predict", str(tmp_path / "m.lstm"), str(data), "--intervals", "80"])
    assert asked.exit_code == 2 and "no calibrated intervals" in asked.output, asked.output


def test_window_scale_reads_only_the_last_lookback_rows_of_each_series():
    values = np.array([[0.0], [10.0], [11.0], [13.0], [5.0], [5.0], [6.0]])
    scale = intervals.window_scale(values, np.array([0, 4, 7]), 1, 3)
    assert scale[:, 0].tolist() == [1.5, 0.5]  # |11-10|,|13-11| ; |5-5|,|6-5| (the jump 0->10 is outside)


def test_a_model_calibrated_on_the_history_scale_keeps_it(models):
    model, _ = load_model(str(models["point"]))
    series = frame.read_series(str(A10), targets=(TARGET,))
    point, _ = model.forecast(series.ids, series.values, series.starts, model.spec.horizon)
    window = intervals.bounds(model, point, series, (80.0,))[80.0]
    model.intervals = dict(model.intervals, scale=intervals.HISTORY_SCALE)
    history = intervals.bounds(model, point, series, (80.0,))[80.0]
    q = np.array(model.intervals["quantiles"][0])[None]
    full = intervals.history_scale(series.values, series.starts, 1)[:, None, :]
    np.testing.assert_allclose(history[1] - point[..., 0], q * full)
    assert not np.allclose(window[1], history[1])


def test_a_level_whose_rank_rounds_to_0_takes_the_smallest_score_not_the_largest():
    assert intervals.conformal_quantile(np.array([3.0, 1.0, 2.0]), 1e-9) == 1.0


def test_a_target_named_like_another_targets_bound_is_refused_not_overwritten(tmp_path):
    df = pd.read_csv(A10)
    df[f"{TARGET}_lo80"] = df[TARGET] * 2
    data = tmp_path / "two.csv"
    df.to_csv(data, index=False)
    out = tmp_path / "two.lstm"
    result = run("train", data, "--target", f"{TARGET},{TARGET}_lo80", "--hidden", "4", "--epochs", "2",
                 "--threads", "1", "-q", "--horizon", "3", "--out", out)
    assert result.exit_code == 0, result.output
    result = run("predict", out, data, "--intervals", "80")
    assert result.exit_code == EXIT_USAGE and f"'{TARGET}_lo80'" in result.output and result.stdout == ""
    assert run("predict", out, data).exit_code == 0


@pytest.mark.parametrize("extra, lookback", [((), 24), (("--ensemble", "3", "--lookback", "24"), 48)])
def test_calibration_windows_are_checked_with_the_lookback_training_will_use_before_it_trains(tmp_path, extra,
                                                                                              lookback):
    result = run("train", A10, *TINY, "--horizon", "6", "--out", tmp_path / "m.lstm", "--calibration-windows",
                 "190", *extra)
    most = 204 - 6 - lookback + 1
    assert result.exit_code == EXIT_DATA and f"lookback {lookback}" in result.output
    assert f"ask for at most {most}" in result.output and "epoch" not in result.output


def test_a_warm_start_keeps_the_old_models_levels_unless_asked_for_others(tmp_path):
    old = train(tmp_path / "old.lstm", "--horizon", "3", "--intervals", "50,90")
    for extra, levels in (((), [50.0, 90.0]), (("--intervals", "80"), [80.0])):
        out = tmp_path / f"new{len(extra)}.lstm"
        train(out, "--horizon", "3", "--warm-start", old, *extra)
        assert modelfile.load(out)[0]["intervals"]["levels"] == levels


def test_info_shows_the_calibrated_levels(models):
    assert "80,95% conformal, from" in run("info", models["point"]).stdout
    assert any(line.split()[:2] == ["intervals", "-"] for line in run("info", models["none"]).stdout.splitlines())
