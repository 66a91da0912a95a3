"""Inputs known in advance (issue 16): --future-features, --calendar, the future rows of predict.

The proofs: a series driven by a flag known ahead is forecast to within its noise only when the
flag is a future feature; a day-of-week pattern the window cannot show is forecast only with
--calendar; nothing after the forecast origin leaks in but the known inputs, and those only into
the steps that read them. Then every new bad input, with its message and exit code."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli.cli import cli
from lstm_cli.evaluate import known_after_cuts, score_series
from lstm_cli.model import FutureInputs
from lstm_cli.pipeline import load_model, read_like_model

H = 12
NOISE = 0.3


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def flag_series(n=400, seed=1):
    """y = 10 + 3 * flag + noise, the flag on about a third of the days at random (known ahead)."""
    rng = np.random.default_rng(seed)
    flag = (rng.random(n + H) < 0.3).astype(float)
    y = 10 + 3 * flag + rng.normal(0, NOISE, n + H)
    dates = pd.date_range("2000-01-03", periods=n + H, freq="D").strftime("%Y-%m-%d")
    return dates, y, flag


def write_with_future_rows(path, dates, y, flag, n_obs, n_future):
    frame = pd.DataFrame({"date": dates[: n_obs + n_future], "y": y[: n_obs + n_future],
                          "flag": flag[: n_obs + n_future]})
    frame.loc[n_obs:, "y"] = np.nan  # the future rows: target empty, the flag planned
    frame.to_csv(path, index=False)
    return path


def train(data, out, *args):
    result = run("train", data, "--target", "y", "--horizon", H, "--threads", "1", "--seed", "0", "-q",
                 "--out", out, *args)
    assert result.exit_code == 0, result.output
    return out


def forecast_column(result, column="y"):
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))[column].to_numpy()


@pytest.fixture(scope="module")
def flag_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flag")
    dates, y, flag = flag_series()
    n = 400
    history = tmp / "history.csv"
    pd.DataFrame({"date": dates[:n], "y": y[:n], "flag": flag[:n]}).to_csv(history, index=False)
    future = train(history, tmp / "future.lstm", "--future-features", "flag")
    past = train(history, tmp / "past.lstm", "--features", "flag")
    return {"tmp": tmp, "dates": dates, "y": y, "flag": flag, "n": n, "history": history,
            "future": future, "past": past}


def test_a_future_feature_is_followed_over_the_whole_horizon(flag_models):
    m = flag_models
    data = write_with_future_rows(m["tmp"] / "with_future.csv", m["dates"], m["y"], m["flag"], m["n"], H)
    forecast = forecast_column(run("predict", m["future"], data))
    truth = 10 + 3 * m["flag"][m["n"] :]
    assert len(forecast) == H
    assert np.abs(forecast - truth).mean() < 1.5 * NOISE  # within the noise (its MAE is 0.8 x NOISE)
    assert np.abs(forecast - truth).max() < 1.5  # every flagged step found (a flag is worth 3)


def test_the_same_column_as_a_past_feature_cannot_follow_it(flag_models):
    m = flag_models
    forecast = forecast_column(run("predict", m["past"], m["history"]))
    truth = 10 + 3 * m["flag"][m["n"] :]
    assert np.abs(forecast - truth).mean() > 2.5 * NOISE


def test_a_future_file_gives_the_same_forecast_as_future_rows(flag_models):
    m = flag_models
    data = write_with_future_rows(m["tmp"] / "rows.csv", m["dates"], m["y"], m["flag"], m["n"], H)
    future = m["tmp"] / "future_file.csv"
    pd.DataFrame({"date": m["dates"][m["n"] : m["n"] + H], "flag": m["flag"][m["n"] :]}).to_csv(future, index=False)
    a = run("predict", m["future"], data, "--precision", "17")
    b = run("predict", m["future"], m["history"], "--future", future, "--precision", "17")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert a.stdout == b.stdout
    assert a.stdout.splitlines()[1].startswith(m["dates"][m["n"]])  # the first forecast row is the first future row


def test_changing_a_future_feature_changes_only_the_calls_that_read_it(flag_models):
    """Direct strategy: a call of the network reads the known inputs of all the steps it forecasts,
    so a change at step 16 of a 24-step forecast (two calls of a 12-step model) leaves steps 1-12."""
    m = flag_models
    model, _ = load_model(str(m["future"]))
    n = m["n"]
    values = np.stack([m["y"][:n], m["flag"][:n]], axis=1)
    times = pd.to_datetime(m["dates"][:n]).as_unit("ns").asi8
    stamps = pd.date_range(m["dates"][n], periods=2 * H, freq="D").as_unit("ns").asi8[None, :]
    flags = np.resize(m["flag"][n:], 2 * H)[None, :, None]
    before, _ = model.forecast(("",), values, np.array([0, n]), 2 * H, times=times,
                               future=FutureInputs(stamps, flags))
    changed = flags.copy()
    changed[0, 15, 0] = 1 - changed[0, 15, 0]
    after, _ = model.forecast(("",), values, np.array([0, n]), 2 * H, times=times,
                              future=FutureInputs(stamps, changed))
    assert np.array_equal(before[0, :H], after[0, :H])
    assert not np.allclose(before[0, H:], after[0, H:])
    assert abs(after[0, 15, 0, 0] - before[0, 15, 0, 0]) > 1.0  # the flag's effect at its own step


def test_recursive_model_reads_one_future_row_per_step(tmp_path, flag_models):
    m = flag_models
    model_path = train(m["history"], tmp_path / "rec.lstm", "--future-features", "flag", "--strategy", "recursive",
                       "--epochs", "5", "--hidden", "8")
    model, _ = load_model(str(model_path))
    n = m["n"]
    values = np.stack([m["y"][:n], m["flag"][:n]], axis=1)
    times = pd.to_datetime(m["dates"][:n]).as_unit("ns").asi8
    stamps = pd.date_range(m["dates"][n], periods=H, freq="D").as_unit("ns").asi8[None, :]
    flags = m["flag"][n:][None, :, None].copy()
    before, _ = model.forecast(("",), values, np.array([0, n]), H, times=times, future=FutureInputs(stamps, flags))
    flags[0, 5, 0] = 1 - flags[0, 5, 0]
    after, _ = model.forecast(("",), values, np.array([0, n]), H, times=times, future=FutureInputs(stamps, flags))
    assert np.array_equal(before[0, :5], after[0, :5])  # steps before the change: untouched
    assert not np.allclose(before[0, 5], after[0, 5])


def test_targets_after_the_origin_change_nothing_in_a_backtest(flag_models):
    """evaluate takes the known inputs of each origin's horizon from the actual rows: their targets
    must not reach the forecast (only the future features may)."""
    m = flag_models
    model, _ = load_model(str(m["future"]))
    series = read_like_model(str(m["history"]), model.spec)
    forecasts = []
    for bump in (0.0, 100.0):
        values = series.values.copy()
        values[-H:, 0] += bump  # the targets after the (single) origin's cut
        changed = type(series)(**{**series.__dict__, "values": values})
        seen = []
        score_series(changed, model, backtests=1, step=H, season=7,
                     on_origin=lambda origin, cuts, forecast, *_, seen=seen: seen.append(forecast))
        forecasts.append(seen[0])
    assert np.array_equal(forecasts[0], forecasts[1])
    cuts = np.array([m["n"] - H])
    known = known_after_cuts(series, cuts, model.spec, H)
    assert np.array_equal(known.values[0, :, 0], series.values[-H:, 1])  # the flag of the actual rows


def test_evaluate_and_refit_run_on_a_future_feature_model(flag_models):
    m = flag_models
    result = run("evaluate", m["future"], m["history"], "--format", "json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores  # the scoring itself is tested in test_evaluate; here: it runs and says where the inputs came from


def dow_series(n=350, seed=2):
    """A day-of-week pattern on top of a random walk: a 2-row window cannot tell the weekday."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2001-01-01", periods=n + H, freq="D")
    pattern = np.array([0.0, 2.0, 3.0, 2.0, 0.0, -4.0, -3.0])
    y = 50 + np.cumsum(rng.normal(0, 0.2, n + H)) + pattern[dates.day_of_week] + rng.normal(0, NOISE, n + H)
    return dates.strftime("%Y-%m-%d"), y, pattern[dates.day_of_week]


def test_calendar_day_of_week_follows_a_weekly_pattern_the_window_cannot_show(tmp_path):
    dates, y, effect = dow_series()
    n = 350
    history = tmp_path / "dow.csv"
    pd.DataFrame({"date": dates[:n], "y": y[:n]}).to_csv(history, index=False)
    errors = {}
    for calendar in ("dayofweek", "none"):
        model = train(history, tmp_path / f"{calendar}.lstm", "--calendar", calendar, "--lookback", "2",
                      "--blend", "0", "--scaling", "level")
        forecast = forecast_column(run("predict", model, history))
        change = forecast - forecast[0]
        errors[calendar] = np.abs(change - (effect[n:] - effect[n])).mean()  # the pattern, level aside
    assert errors["dayofweek"] < 0.8
    assert errors["none"] > 1.5
    info = run("info", tmp_path / "dayofweek.lstm")
    assert "dayofweek" in info.stdout


# --- bad inputs ----------------------------------------------------------------------------------


def test_future_rows_missing_short_or_with_nan_are_one_line_errors(flag_models):
    m = flag_models
    short = write_with_future_rows(m["tmp"] / "short.csv", m["dates"], m["y"], m["flag"], m["n"], 3)
    result = run("predict", m["future"], short)
    assert result.exit_code == 65, result.output
    assert "need 12" in result.output and "3" in result.output and len(result.output.strip().splitlines()) == 1
    none = run("predict", m["future"], m["history"])
    assert none.exit_code == 65 and "need 12" in none.output, none.output
    gap = pd.read_csv(write_with_future_rows(m["tmp"] / "nan.csv", m["dates"], m["y"], m["flag"], m["n"], H))
    gap.loc[m["n"] + 4, "flag"] = np.nan
    gap.to_csv(m["tmp"] / "nan.csv", index=False)
    result = run("predict", m["future"], m["tmp"] / "nan.csv")
    assert result.exit_code == 65 and "flag" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_future_rows_for_a_model_without_future_features_are_refused(flag_models, tmp_path):
    m = flag_models
    data = write_with_future_rows(tmp_path / "rows.csv", m["dates"], m["y"], m["flag"], m["n"], H)
    result = run("predict", m["past"], data)
    assert result.exit_code == 65, result.output
    assert "future" in result.output and len(result.output.strip().splitlines()) == 1
    result = run("predict", m["past"], m["history"], "--future", data)
    assert result.exit_code == 2 and "no future features" in result.output, result.output


def test_a_future_file_with_other_series_is_refused(flag_models, tmp_path):
    m = flag_models
    future = tmp_path / "other.csv"
    pd.DataFrame({"date": m["dates"][m["n"] : m["n"] + H], "flag": m["flag"][m["n"] :]}).to_csv(future, index=False)
    panel = tmp_path / "panel.csv"
    pd.DataFrame({"date": list(m["dates"][m["n"] : m["n"] + H]) * 2, "id": ["a"] * H + ["zz"] * H,
                  "flag": list(m["flag"][m["n"] :]) * 2}).to_csv(panel, index=False)
    result = run("predict", m["future"], m["history"], "--future", panel)
    assert result.exit_code != 0 and result.exit_code != 70, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, code, fragment", [
    (("--future-features", "nosuch"), 65, "nosuch"),
    (("--future-features", "flag", "--features", "flag"), 2, "one role"),
    (("--future-features", "y"), 2, "one role"),
    (("--calendar", "weekday"), 2, "weekday"),
    (("--calendar", "month"), 2, "month"),  # daily steps: month-of-year is for monthly or longer steps
])
def test_bad_training_options_are_one_line_errors(flag_models, tmp_path, args, code, fragment):
    result = run("train", flag_models["history"], "--target", "y", "--horizon", H, "--epochs", "1", "--hidden", "4",
                 "-q", "--out", tmp_path / "m.lstm", *args)
    assert result.exit_code == code, result.output
    assert fragment in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.lstm").exists()


def test_calendar_needs_dates(tmp_path):
    data = tmp_path / "steps.csv"
    pd.DataFrame({"t": np.arange(60), "y": np.sin(np.arange(60))}).to_csv(data, index=False)
    result = run("train", data, "--target", "y", "--horizon", 4, "--epochs", "1", "--hidden", "4", "-q",
                 "--calendar", "dayofweek", "--time-col", "t", "--out", tmp_path / "m.lstm")
    assert result.exit_code == 2 and "dates" in result.output, result.output


def test_a_data_column_named_like_a_derived_input_is_refused(flag_models, tmp_path):
    data = tmp_path / "clash.csv"
    frame = pd.read_csv(flag_models["history"])
    frame["dayofweek_sin"] = frame["flag"]
    frame.to_csv(data, index=False)
    result = run("train", data, "--target", "y", "--horizon", H, "--epochs", "1", "--hidden", "4", "-q",
                 "--future-features", "dayofweek_sin", "--calendar", "dayofweek", "--out", tmp_path / "m.lstm")
    assert result.exit_code == 2 and "rename the column" in result.output, result.output


def test_train_on_a_file_with_future_rows_trains_on_its_observed_rows(flag_models, tmp_path):
    m = flag_models
    data = write_with_future_rows(tmp_path / "frame.csv", m["dates"], m["y"], m["flag"], m["n"], H)
    args = ("--future-features", "flag", "--epochs", "2", "--hidden", "4")
    result = run("train", data, "--target", "y", "--horizon", H, "--threads", "1", "--out", tmp_path / "a.lstm", *args)
    assert result.exit_code == 0, result.output
    assert "12 future rows" in result.output and "not trained on" in result.output
    train(m["history"], tmp_path / "b.lstm", *args)
    a = run("predict", tmp_path / "a.lstm", data, "--precision", "17")
    b = run("predict", tmp_path / "b.lstm", data, "--precision", "17")
    assert a.exit_code == 0 and a.stdout == b.stdout


def test_the_fitted_effect_of_a_future_feature_is_its_slope(flag_models):
    """fit_known_effect: least squares of the scaled target on the scaled regressors over the
    training rows: y = 10 + 3 flag + noise gives a slope of 3 in original units."""
    model, _ = load_model(str(flag_models["future"]))
    spec = model.spec
    assert len(spec.known_coef) == 1 and len(spec.known_coef[0]) == 1 and len(spec.known_intercept) == 1
    slope = spec.known_coef[0][0] * model.scale[0, 0] / model.scale[0, spec.n_past]  # back in units of y per flag
    assert abs(slope - 3.0) < 0.1


def test_a_model_file_with_a_bad_known_effect_is_refused(flag_models, tmp_path):
    from lstm_cli import modelfile

    header, arrays = modelfile.load(str(flag_models["future"]))
    for bad in ([[1.0, 2.0]], [], [["x"]], [[float("inf")]]):
        broken = {**header, "data": {**header["data"], "known_coef": bad}}
        with pytest.raises(Exception) as info:
            modelfile.save(str(tmp_path / "bad.lstm"), broken, arrays)
        assert "known_coef" in str(info.value) or "known_intercept" in str(info.value)


# --- found by the red team ----------------------------------------------------------------------


def integer_model(tmp_path):
    data = tmp_path / "int.csv"
    t = np.arange(1, 61)
    pd.DataFrame({"t": t, "v": np.sin(t / 3.0) + (t % 5 == 0), "f": (t % 5 == 0).astype(int)}).to_csv(data, index=False)
    model = tmp_path / "int.lstm"
    result = run("train", data, "--time-col", "t", "--target", "v", "--horizon", 3, "--future-features", "f",
                 "--hidden", "4", "--epochs", "2", "--threads", "1", "-q", "--out", model)
    assert result.exit_code == 0, result.output
    return data, model


@pytest.mark.parametrize("future_times", [(61, 63, 65), (61, 62, 1_000_000), (62, 63, 64)])
def test_future_rows_that_skip_steps_of_integer_time_are_refused(tmp_path, future_times):
    data, model = integer_model(tmp_path)
    rows = pd.read_csv(data)
    ahead = pd.DataFrame({"t": future_times, "v": [np.nan] * 3, "f": [1, 0, 1]})
    pd.concat([rows, ahead]).to_csv(tmp_path / "ahead.csv", index=False)
    result = run("predict", model, tmp_path / "ahead.csv")
    assert result.exit_code == 65 and "does not continue the series" in result.output, result.output
    assert "give one row per step" in result.output and len(result.output.strip().splitlines()) == 1


def test_future_rows_with_a_hole_longer_than_the_history_ever_had_are_refused(tmp_path):
    """Without a frequency (business hours, offsets across DST) whole steps may jump, but not
    further than the series' own history ever did."""
    stamps = pd.date_range("2021-03-01 07:00", periods=40, freq="h")
    stamps = stamps[(stamps.hour >= 7) & (stamps.hour < 15)]  # 8 hours a day (not pandas' bh): 16h jumps
    n = len(stamps)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"time": stamps.strftime("%Y-%m-%d %H:%M:%S"), "y": rng.normal(10, 1, n),
                          "f": rng.integers(0, 2, n)})
    frame.to_csv(tmp_path / "bh.csv", index=False)
    result = run("train", tmp_path / "bh.csv", "--target", "y", "--horizon", 2, "--future-features", "f",
                 "--hidden", "4", "--epochs", "2", "--threads", "1", "-q", "--out", tmp_path / "bh.lstm")
    assert result.exit_code == 0, result.output
    last = stamps[-1]
    for hours, ok in ((1, True), (30 * 24, False)):
        ahead = pd.DataFrame({"time": [(last + pd.Timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
                                       (last + pd.Timedelta(hours=1 + hours)).strftime("%Y-%m-%d %H:%M:%S")],
                              "f": [1, 0]})
        ahead.to_csv(tmp_path / "f.csv", index=False)
        result = run("predict", tmp_path / "bh.lstm", tmp_path / "bh.csv", "--future", tmp_path / "f.csv")
        assert (result.exit_code == 0) == ok, result.output
        if not ok:
            assert "longer than any step of the series' history" in result.output


def test_warm_start_refuses_another_calendar_or_holidays_and_keeps_them_when_not_given(flag_models, tmp_path):
    m = flag_models
    base = train(m["history"], tmp_path / "base.lstm", "--future-features", "flag", "--epochs", "2", "--hidden", "4")
    args = ("train", m["history"], "--target", "y", "--horizon", H, "--future-features", "flag", "--epochs", "1",
            "--threads", "1", "-q", "--warm-start", base)
    other = run(*args, "--calendar", "dayofweek", "--out", tmp_path / "w1.lstm")
    assert other.exit_code == 65 and "calendar none in the old model, dayofweek here" in other.output, other.output
    kept = run(*args, "--out", tmp_path / "w2.lstm")
    assert kept.exit_code == 0, kept.output


def test_future_file_history_rows_are_noted_and_a_directory_is_exit_66(flag_models, tmp_path):
    m = flag_models
    n = m["n"]
    future = tmp_path / "with_history.csv"
    pd.DataFrame({"date": m["dates"][n - 5 : n + H], "flag": np.r_[[9] * 5, m["flag"][n:]]}).to_csv(future, index=False)
    result = run("predict", m["future"], m["history"], "--future", future)
    assert result.exit_code == 0, result.output
    assert "5 rows at or before DATA's last time of their series not used" in result.stderr
    result = run("predict", m["future"], m["history"], "--future", tmp_path)
    assert result.exit_code == 66, result.output


def test_the_time_column_named_as_a_future_feature_is_a_usage_error(flag_models, tmp_path):
    result = run("train", flag_models["history"], "--target", "y", "--horizon", H, "--future-features", "date",
                 "-q", "--out", tmp_path / "m.lstm")
    assert result.exit_code == 2 and "looks like the time column" in result.output, result.output


def test_a_future_feature_constant_in_training_is_noted(flag_models, tmp_path):
    data = tmp_path / "constant.csv"
    frame = pd.read_csv(flag_models["history"])
    frame["flag"] = 0
    frame.to_csv(data, index=False)
    result = run("train", data, "--target", "y", "--horizon", H, "--future-features", "flag", "--epochs", "1",
                 "--hidden", "4", "--threads", "1", "--out", tmp_path / "m.lstm")
    assert result.exit_code == 0, result.output
    assert "future feature 'flag' is constant in the history of every series" in result.output
