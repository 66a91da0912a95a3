"""Issue 15, the time axis: frequencies (flag and model file), DATA whose step is not the model's,
forecast and difference arithmetic past int64 / 2262, --now outside the ns range, durations
without a unit. Each test failed (exit 70, exit 0 with wrong output, or a misleading message)
before its fix. CliRunner, tiny shapes, 1 thread."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_cli import engine_dask, frame, modelfile
from lstm_cli.cli import cli
from lstm_cli.errors import DataError, UsageError

FAST = ["--epochs", "2", "--hidden", "4", "--threads", "1", "--lookback", "6", "--horizon", "3", "-q"]


def run(*args, input=None, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env, catch_exceptions=False)


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    return lines[0]


def usage_error(result) -> str:
    """The message of an exit-2 error: one 'lstm: ' line, or the 'Error:' line of click's usage text."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(("lstm: ", "Error: "))]
    assert len(lines) == 1, result.stderr
    return lines[0]


def write_csv(path: Path, times, col: str = "time", ids=None) -> Path:
    """A wavy y over the given times (and an id column when ids is given: one id per row)."""
    head = f"{col},y" if ids is None else f"{col},id,y"
    rows = [f"{t},{'' if ids is None else ids[i] + ','}{10 + 5 * math.sin(i / 4):.4f}" for i, t in enumerate(times)]
    path.write_text(head + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def stamps(start: str, n: int, freq: str) -> list[str]:
    idx = pd.date_range(start, periods=n, freq=freq)
    return list(idx.strftime("%Y-%m-%d" if (idx.asi8 % frame.DAY_NS == 0).all() else "%Y-%m-%d %H:%M:%S"))


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("time")


def train(d: Path, name: str, data: Path, *extra) -> Path:
    out = d / f"{name}.lstm"
    result = run("train", data, "--target", "y", *FAST, *extra, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def half_hour(d) -> Path:
    return train(d, "half", write_csv(d / "half.csv", stamps("2024-01-01", 120, "30min")))


@pytest.fixture(scope="module")
def weekly(d) -> Path:
    return train(d, "weekly", write_csv(d / "weekly.csv", stamps("2020-01-05", 60, "W-SUN")))


@pytest.fixture(scope="module")
def daily(d) -> Path:
    return train(d, "daily", write_csv(d / "daily.csv", stamps("2020-01-01", 60, "D")))


@pytest.fixture(scope="module")
def integer(d) -> Path:
    return train(d, "int", write_csv(d / "int.csv", range(100, 160), "t"), "--time-col", "t")


def with_header(d: Path, model: Path, name: str, **data_fields) -> Path:
    """A copy of model whose header's data section has data_fields (checksums recomputed)."""
    header, arrays = modelfile.load(model)
    header = dict(header, data=dict(header["data"], **data_fields))
    out = d / f"{name}.lstm"
    modelfile.save(out, header, arrays, schema=False)
    return out


# ----------------------------------------------------------------------------------------------
# freq_values


BAD_FREQS = ["0h", "0D", "-1h", "-0min", "1000000D", "3000YS", "11YS", "121MS", "99999999999999999999h",
             "9223372036854775807ns", "1e3h", "10**20", "H", "", " ", "D\x00", "é"]


@pytest.mark.parametrize("freq", BAD_FREQS)
def test_freq_values_bad_flag_is_a_usage_error_before_training(d, freq):
    data = write_csv(d / "daily_train.csv", stamps("2020-01-01", 40, "D"))
    out = d / "never.lstm"
    result = run("train", data, "--target", "y", *FAST, "--freq", freq, "--out", out)
    assert "--freq" in usage_error(result)
    assert not out.exists()
    checked = run("validate", data, "--target", "y", "--freq", freq)
    assert "--freq" in usage_error(checked)


@pytest.mark.parametrize("freq", ["D", "h", "5min", "1D1h", "W-MON", "2W", "QS-DEC", "MS", "ME", "YS", "10YS",
                                  "120MS", "3660D", "B", "bh", "SMS", "WOM-1MON"])
def test_freq_values_anchored_and_long_aliases_are_valid(freq):
    assert frame.freq_problem(freq) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=12),
                 st.from_regex(r"[+-]?[0-9]{0,22}(ns|us|ms|s|min|h|D|W|MS|ME|QS|YS|B)(-[A-Z]{3})?", fullmatch=True)))
def test_freq_values_any_string_validates_or_is_a_usage_error(text):
    try:
        frame._check_freq(text)
    except UsageError as e:
        assert "\n" not in str(e) and str(e).startswith("--freq ")


@pytest.mark.parametrize("freq", ["0h", "-1h", "1000000D", "3000YS", "nonsense"])
def test_freq_values_bad_freq_in_a_model_file_names_the_file_and_field(d, half_hour, freq):
    model = with_header(d, half_hour, f"badfreq{BAD_FREQS.index(freq) if freq in BAD_FREQS else 'x'}", freq=freq)
    data = d / "half.csv"
    for args in (("predict", model, data), ("evaluate", model, data), ("validate", data, "--model", model),
                 ("info", model)):
        result = run(*args)
        assert result.exit_code == 65, (args, result.output)
        line = one_error_line(result)
        assert str(model) in line and "data.freq" in line and "--freq" not in line, line


def test_freq_values_model_step_that_contradicts_its_fixed_freq_is_refused(d, half_hour):
    model = with_header(d, half_hour, "badstep", step=3600 * 10**9)  # freq 30min, step 1h
    result = run("predict", model, d / "half.csv")
    assert result.exit_code == 65
    line = one_error_line(result)
    assert "data.step" in line and str(model) in line


def test_freq_values_model_of_integers_with_a_freq_is_refused(d, integer):
    model = with_header(d, integer, "intfreq", freq="D")
    result = run("predict", model, d / "int.csv")
    assert result.exit_code == 65 and "data.freq" in one_error_line(result)


# ----------------------------------------------------------------------------------------------
# step_mismatch


def test_step_mismatch_hourly_data_for_a_half_hour_model(d, half_hour):
    """Every hourly time is on the 30-minute grid: it forecast on at 30 minutes, exit 0."""
    hourly = write_csv(d / "hourly.csv", stamps("2024-02-01", 40, "h"))
    for args in (("predict", half_hour, hourly), ("evaluate", half_hour, hourly)):
        result = run(*args)
        assert result.exit_code == 65, (args, result.output)
        line = one_error_line(result)
        assert "hourly.csv" in line and "30min" in line and "by h" in line, line
    checked = run("validate", hourly, "--model", half_hour, "--format", "json")
    assert checked.exit_code == 65
    assert '"usable": false' in checked.stdout and "model contract" in checked.stdout


def test_step_mismatch_integer_steps(d, integer):
    every_other = write_csv(d / "int2.csv", range(100, 220, 2), "t")
    result = run("predict", integer, every_other)
    assert result.exit_code == 65
    assert "step by 2" in one_error_line(result) and "step is 1" in one_error_line(result)
    assert run("validate", every_other, "--model", integer, "-q").exit_code == 65


def test_step_mismatch_calendar_data_on_the_model_grid(d, daily):
    """Month starts lie on the D grid: they were 'gaps' of a daily model, exit 0."""
    monthly = write_csv(d / "monthly.csv", stamps("2015-01-01", 40, "MS"))
    result = run("predict", daily, monthly)
    assert result.exit_code == 65
    line = one_error_line(result)
    assert "by MS" in line and "step is D" in line


def test_step_mismatch_calendar_data_off_the_model_grid_does_not_say_pass_freq(d, weekly):
    monthly = write_csv(d / "monthly.csv", stamps("2015-01-01", 40, "MS"))
    result = run("predict", weekly, monthly)
    assert result.exit_code == 65
    line = one_error_line(result)
    assert "W-SUN" in line and "model's frequency" in line and "--freq" not in line


def test_step_mismatch_same_step_with_gaps_still_forecasts(d, half_hour):
    t = stamps("2024-03-01", 60, "30min")
    gappy = write_csv(d / "gappy.csv", t[:20] + t[21:40] + t[42:])
    result = run("predict", half_hour, gappy)
    assert result.exit_code == 0, result.output
    assert "gaps in time" in result.stderr


def test_step_mismatch_in_a_dask_partition(d, half_hour):
    """--engine dask reads each partition through the same reader."""
    from lstm_cli.pipeline import load_model

    model, _ = load_model(str(half_hour))
    part = pd.DataFrame({"time": stamps("2024-02-01", 30, "h"), "y": np.arange(30.0)})
    with pytest.raises(DataError, match=r"data\.csv \(partition 0\): times step by h"):
        engine_dask._read_partition(part, model.spec, "interpolate", "data.csv (partition 0)")


# ----------------------------------------------------------------------------------------------
# time_overflow


def test_time_overflow_integer_forecast_past_int64(d):
    top = 2**63 - 1
    data = write_csv(d / "top.csv", range(top - 60, top - 1), "t")
    model = train(d, "top", write_csv(d / "below_top.csv", range(top - 60, top - 4), "t"), "--time-col", "t")
    result = run("predict", model, data)  # ends at top - 2: the 3 forecast steps pass top
    assert result.exit_code == 65, result.output
    line = one_error_line(result)
    assert str(top - 2) in line and "64-bit" in line and "top.csv" in line


def test_time_overflow_future_times_integers():
    top = 2**63 - 1
    assert frame.future_times(top - 3, 1, None, "integer", 3).tolist() == [top - 2, top - 1, top]
    with pytest.raises(DataError, match="64-bit integer limit"):
        frame.future_times(top - 3, 1, None, "integer", 4)
    with pytest.raises(DataError, match="64-bit integer limit"):
        frame.future_times(0, 2**62, None, "integer", 2)


def test_time_overflow_dates_name_the_series(d):
    t = stamps("2257-01-01", 60, "MS")
    data = write_csv(d / "late.csv", t + t, ids=["a"] * 60 + ["b"] * 60)
    model = train(d, "late", data, "--id-col", "id")
    result = run("predict", model, data, "--horizon", "50")
    assert result.exit_code == 65
    line = one_error_line(result)
    assert "series 'a'" in line and "2262-04-11" in line


def test_time_overflow_integer_times_too_far_apart_to_subtract(d):
    data = write_csv(d / "far.csv", [-(2**62 + 2**61), 2**62 + 2**61, 2**62 + 2**61 + 1], "t")
    with pytest.raises(DataError, match="too far apart"):
        frame.read_series(str(data), targets=["y"], time_col="t")


def test_time_overflow_dates_more_than_292_years_apart(d):
    """The ns difference of 1700 and 2200 wraps: a negative step."""
    data = write_csv(d / "far_dates.csv", ["1700-01-01", "2200-01-01", "2201-01-01"])
    with pytest.raises(DataError, match="too far apart"):
        frame.read_series(str(data), targets=["y"])


def test_time_overflow_fixed_grid_of_a_series_longer_than_292_years(d):
    """times - first wrapped for an hourly grid spanning 500 years: a false 'not on the h grid'."""
    data = write_csv(d / "long_hours.csv", ["1700-01-01 00:00:00", "1950-01-01 00:00:00", "2200-01-01 00:00:00"])
    series = frame.read_series(str(data), targets=["y"], freq="h")
    assert series.step == 3600 * 10**9
    t = series.times
    assert frame._on_grid(t, "h").all()


# ----------------------------------------------------------------------------------------------
# now_value


@pytest.mark.parametrize("now", ["9999-12-31", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
                                 "1600-01-01", "2262-04-11T23:47:17Z", "1677-09-21T00:12:43Z", "", " ",
                                 "tomorrow"])
def test_now_value_outside_the_ns_range_is_a_usage_error(d, daily, now):
    result = run("predict", daily, d / "daily.csv", "--max-age", "2d", "--now", now)
    assert "--now" in usage_error(result)


def test_now_value_edges_and_fractions_before_1970():
    from lstm_cli.cli import _parse_now

    assert _parse_now("1969-12-31T23:59:59.5") == -500_000_000  # was +500 ms (float truncation)
    assert _parse_now("2024-01-01T05:30:00+05:30") == pd.Timestamp("2024-01-01").value
    assert _parse_now("2262-04-11T23:47:16Z") == pd.Timestamp("2262-04-11 23:47:16").value
    assert _parse_now("1677-09-21T00:12:44Z") == pd.Timestamp("1677-09-21 00:12:44").value


def test_now_value_at_the_edge_gives_a_stale_verdict_not_a_crash(d, daily):
    result = run("predict", daily, d / "daily.csv", "--max-age", "1d", "--now", "2262-04-11T23:47:16Z")
    assert result.exit_code == 4
    assert "2262-04-11 23:47:16" in one_error_line(result)


# ----------------------------------------------------------------------------------------------
# duration_units


@pytest.mark.parametrize("option", ["--max-age", "--time-limit"])
@pytest.mark.parametrize("value", ["2", "90", "1.5", " 2 "])
def test_duration_units_a_bare_number_is_refused(d, daily, option, value):
    if option == "--max-age":
        result = run("predict", daily, d / "daily.csv", option, value)
    else:
        result = run("train", d / "daily.csv", "--target", "y", *FAST, option, value, "--out", d / "no.lstm")
    line = usage_error(result)
    assert option in line and "no unit" in line and f"{value.strip()}s" in line


@pytest.mark.parametrize("value", ["1e400s", "99999999999999999999d", "101y", "inf", "nan", "0s", "-2h",
                                   "36600000000000000000000000000000000h"])
def test_duration_units_absurd_durations_are_refused(d, daily, value):
    result = run("predict", daily, d / "daily.csv", "--max-age", value)
    assert "--max-age" in usage_error(result)


def test_duration_units_a_config_file_number_is_refused(d, daily, tmp_path):
    conf = tmp_path / "job.toml"
    conf.write_text("[predict]\nmax-age = 2\n", encoding="utf-8")
    result = run("--config", conf, "predict", daily, d / "daily.csv")
    line = usage_error(result)
    assert "no unit" in line and '"2s"' in line
    conf.write_text("[predict]\nmax-age = 1979-05-27\n", encoding="utf-8")  # a TOML date
    line = usage_error(run("--config", conf, "predict", daily, d / "daily.csv"))
    assert "1979-05-27 is a date or time, not a duration" in line and "datetime" not in line
    conf.write_text('[predict]\nmax-age = "20000d"\n', encoding="utf-8")
    assert run("--config", conf, "predict", daily, d / "daily.csv", "-q").exit_code == 0


def test_duration_units_an_environment_number_is_refused(d, daily):
    result = run("predict", daily, d / "daily.csv", env={"LSTM_MAX_AGE": "2"})
    assert "no unit" in usage_error(result)


def test_duration_units_with_units_still_work():
    from lstm_cli.cli import DurationType

    t = DurationType()
    assert [t.convert(v, None, None) for v in ("90s", "10m", "10min", "2h", "1.5d", " 3 h ")] == \
        [90.0, 600.0, 600.0, 7200.0, 129600.0, 10800.0]


def test_step_mismatch_in_a_warm_start(d, integer):
    """A fine-tune of a model of steps of 1 on every other integer went through (no freq to compare)."""
    every_other = write_csv(d / "int2w.csv", range(300, 420, 2), "t")
    out = d / "warm.lstm"
    result = run("train", every_other, "--target", "y", *FAST, "--time-col", "t", "--warm-start", integer,
                 "--out", out)
    assert result.exit_code == 65, result.output
    line = one_error_line(result)
    assert "--warm-start" in line and "step by 2" in line and not out.exists()
    same = write_csv(d / "int1w.csv", range(300, 360), "t")
    assert run("train", same, "--target", "y", *FAST, "--time-col", "t", "--warm-start", integer,
               "--out", out).exit_code == 0


def test_freq_values_warm_start_with_an_alias_of_the_same_grid(d, weekly):
    """--freq W is W-SUN: the warm start compared the strings and refused it."""
    newer = write_csv(d / "weekly_newer.csv", stamps("2021-03-07", 40, "W-SUN"))
    result = run("train", newer, "--target", "y", *FAST, "--freq", "W", "--warm-start", weekly,
                 "--out", d / "weekly_warm.lstm")
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------------------------
# retest: one contract check for every reader of DATA for a model (time kind first), --freq
# spelled with spaces or signs, --freq that is not the data's step, sub-ms durations, exact --now


@pytest.fixture(scope="module")
def irregular(d) -> Path:
    """A model of dates without a frequency: hourly stamps with holes (no alias)."""
    t = stamps("2024-01-01", 80, "h")
    return train(d, "irregular", write_csv(d / "irregular.csv", [x for i, x in enumerate(t) if i % 7 != 3]))


def test_step_mismatch_dates_for_an_integer_model_in_every_command(d, integer):
    """evaluate scored datetime DATA with a model of integer times (exit 0, in_sample false)."""
    dates = write_csv(d / "dt_t.csv", stamps("2020-01-01", 60, "D"), "t")
    for args in (("evaluate", integer, dates, "--format", "csv"), ("evaluate", integer, dates, "--refit"),
                 ("predict", integer, dates)):
        result = run(*args)
        assert result.exit_code == 65, (args, result.output)
        line = one_error_line(result)
        assert "dt_t.csv" in line and "holds datetime times, but the model was trained on integer times" in line
    checked = run("validate", dates, "--model", integer, "--format", "json")
    assert checked.exit_code == 65 and "model contract" in checked.stdout and "datetime times" in checked.stdout


def test_step_mismatch_integers_for_a_date_model_without_a_freq(d, irregular):
    """A model of dates with no alias has no freq for the reader to refuse integers with."""
    ints = write_csv(d / "ints_time.csv", range(1000, 1080))
    for args in (("evaluate", irregular, ints), ("predict", irregular, ints)):
        result = run(*args)
        assert result.exit_code == 65, (args, result.output)
        assert "holds integer times, but the model was trained on datetime times" in one_error_line(result)


def test_step_mismatch_time_kind_in_a_dask_partition(d, integer):
    from lstm_cli.pipeline import load_model

    model, _ = load_model(str(integer))
    part = pd.DataFrame({"t": stamps("2024-02-01", 30, "D"), "y": np.arange(30.0)})
    with pytest.raises(DataError, match=r"data\.csv \(partition 0\): column 't' holds datetime times"):
        engine_dask._read_partition(part, model.spec, "interpolate", "data.csv (partition 0)")


@pytest.mark.parametrize("freq", ["MS ", " MS", "+1MS", "1 MS", "MS\t", "+2h", "\u00a0MS", "2 h"])
def test_freq_values_spaces_and_signs_are_refused(d, freq):
    """pandas reads ' MS' as MS, but the string was what the model recorded: season 1, not 12."""
    monthly = write_csv(d / "monthly_sp.csv", stamps("2015-01-01", 40, "MS"))
    out = d / "spaced.lstm"
    line = usage_error(run("train", monthly, "--target", "y", *FAST, "--freq", freq, "--out", out))
    assert "--freq" in line and ("without them" in line or not freq.isascii()), line
    assert not out.exists()
    assert "--freq" in usage_error(run("validate", monthly, "--target", "y", "--freq", freq))


def test_freq_values_spaces_from_the_environment_and_a_config_file(d, tmp_path):
    monthly = write_csv(d / "monthly_sp.csv", stamps("2015-01-01", 40, "MS"))
    line = usage_error(run("validate", monthly, "--target", "y", env={"LSTM_FREQ": " MS"}))
    assert "--freq ' MS'" in line and "e.g. MS" in line
    conf = tmp_path / "job.toml"
    conf.write_text('[train]\nfreq = "MS "\n', encoding="utf-8")
    result = run("--config", conf, "train", monthly, "--target", "y", *FAST, "--out", d / "never2.lstm")
    assert "--freq 'MS '" in usage_error(result)


def test_freq_values_spaced_freq_in_a_model_file_names_the_field(d, half_hour):
    model = with_header(d, half_hour, "spacedfreq", freq="30min ")
    result = run("info", model)
    assert result.exit_code == 65 and "data.freq" in one_error_line(result)


@pytest.mark.parametrize("freq,season", [("MS", 12), ("120MS", 12), ("w", 52), ("2W", 52), ("W-MON", 52),
                                         ("d", 7), ("b", 5), ("QS-DEC", 4), ("SME", 24), ("YS", 1)])
def test_freq_values_season_from_pandas_offset_not_the_spelling(freq, season):
    from lstm_cli.pipeline import season_length

    assert season_length(freq, frame.DAY_NS, "datetime") == season


def test_freq_values_milliseconds_are_not_month_starts():
    """'ms'.upper() is 'MS': millisecond data got a season of 12."""
    from lstm_cli.pipeline import season_length

    assert season_length("ms", 10**6, "datetime") != 12


A10 = Path(__file__).parent / "data" / "a10_monthly.csv"


def test_step_mismatch_given_freq_ms_on_monthly_data(d):
    """train --freq ms took every month as a gap of milliseconds (exit 0); predict then refused."""
    out = d / "a10_ms.lstm"
    result = run("train", A10, "--target", "cost_million_aud", *FAST, "--freq", "ms", "--out", out)
    assert result.exit_code == 65, result.output
    line = one_error_line(result)
    assert "a10_monthly.csv" in line and "by MS" in line and "--freq 'ms'" in line and "--freq MS" in line
    assert not out.exists()
    checked = run("validate", A10, "--target", "cost_million_aud", "--freq", "ms", "--format", "json")
    assert checked.exit_code == 65 and '"usable": false' in checked.stdout and "--freq 'ms'" in checked.stdout


@pytest.mark.parametrize("data_freq,given", [("h", "30min"), ("QS", "MS"), ("MS", "D"), ("2h", "h"),
                                              ("W-SUN", "D"), ("D", "h")])
def test_step_mismatch_given_freq_finer_than_the_data(d, data_freq, given):
    """Every stamp is on the finer grid, so the reader saw only 'gaps'."""
    data = write_csv(d / f"coarse_{data_freq}.csv", stamps("2020-01-05", 40, data_freq))
    result = run("validate", data, "--target", "y", "--freq", given, "-q")
    assert result.exit_code == 65, result.output
    out = d / f"coarse_{data_freq}.lstm"
    trained = run("train", data, "--target", "y", *FAST, "--freq", given, "--out", out)
    assert trained.exit_code == 65, trained.output
    line = one_error_line(trained)
    assert f"--freq {given!r}" in line and "most common difference" in line and not out.exists()


@pytest.mark.parametrize("freq", ["MS", "h", "D"])
def test_step_mismatch_given_freq_with_a_few_gaps_still_trains(d, freq):
    t = stamps("2010-01-01", 60, freq)
    data = write_csv(d / f"gaps_{freq}.csv", t[:10] + t[11:30] + t[32:])
    result = run("train", data, "--target", "y", *FAST, "--freq", freq, "--out", d / f"gaps_{freq}.lstm")
    assert result.exit_code == 0, result.output
    checked = run("validate", data, "--target", "y", "--freq", freq, "--format", "json")
    assert checked.exit_code == 0 and "gaps in time" in checked.stdout


def test_step_mismatch_given_freq_matching_the_data_passes():
    series = frame.read_series(str(A10), targets=["cost_million_aud"], freq="MS")
    frame.check_given_freq(series, "MS")
    frame.check_given_freq(series, None)


@pytest.mark.parametrize("value", ["0.0000000001s", "0.0009s", "0.00001m", "0.0000001h", "0.00000001d"])
def test_duration_units_under_a_millisecond_is_refused(d, daily, value):
    """1e-10 s was accepted and shown as '0s', while 0s is refused."""
    result = run("predict", daily, d / "daily.csv", "--max-age", value)
    line = usage_error(result)
    assert "--max-age" in line and "millisecond" in line


def test_duration_units_sub_second_ages_are_shown_exactly(d, daily):
    from lstm_cli.cli import DurationType

    assert DurationType().convert("0.001s", None, None) == 0.001
    assert frame._fmt_duration(500_000_000, "datetime") == "0.5s"
    assert frame._fmt_duration(DAY_PLUS := frame.DAY_NS + 1, "datetime") == "1d 0.000000001s" and DAY_PLUS
    assert frame._fmt_duration(90 * 10**9, "datetime") == "1min 30s"
    result = run("predict", daily, d / "daily.csv", "--max-age", "0.25s", "--now", "2024-01-01")
    assert result.exit_code == 4 and "--max-age 0.25s before" in one_error_line(result)


@pytest.mark.parametrize("now,value", [("2262-04-11 23:47:16.854775800", 2**63 - 8),
                                       ("2262-04-11T23:47:16.854775807Z", 2**63 - 1),
                                       ("1677-09-21 00:12:43.145224193", -(2**63) + 1),
                                       ("1677-09-21T00:12:43.5Z", pd.Timestamp("1677-09-21 00:12:43.5").value),
                                       ("2024-01-01T00:00:00.000000001", pd.Timestamp("2024-01-01").value + 1),
                                       ("2024-01-01T05:30:00,25+05:30", pd.Timestamp("2024-01-01").value + 25 * 10**7)])
def test_time_overflow_now_bounds_are_pandas_own_to_the_nanosecond(now, value):
    from lstm_cli.cli import _parse_now

    assert _parse_now(now) == value == pd.Timestamp(value).value


@pytest.mark.parametrize("now", ["2262-04-11 23:47:16.854775808", "1677-09-21 00:12:43.145224192",
                                 "2024-01-01T00:00:00.1234567891", "2024-01-01T00:00:00.5.5"])
def test_time_overflow_now_past_the_bounds_or_finer_than_ns_is_refused(d, daily, now):
    result = run("predict", daily, d / "daily.csv", "--max-age", "2d", "--now", now)
    assert "--now" in usage_error(result)


def test_time_overflow_now_at_the_last_nanosecond_gives_a_stale_verdict(d, daily):
    result = run("predict", daily, d / "daily.csv", "--max-age", "1d", "--now", "2262-04-11 23:47:16.854775807")
    assert result.exit_code == 4
    assert "before 2262-04-11 23:47:16;" in one_error_line(result)


# ----------------------------------------------------------------------------------------------
# forecast_fits: validate and train refuse data whose next horizon steps predict cannot write


def late_month_starts(d: Path) -> Path:
    return write_csv(d / "late_ms.csv", stamps("2257-01-01", 63, "MS"))  # ends 2262-03-01


def int_near_top(d: Path) -> Path:
    top = 2**63 - 1
    return write_csv(d / "int_top.csv", range(top - 40, top), "t")  # ends at top - 1


@pytest.mark.parametrize("make, extra", [(late_month_starts, ()), (int_near_top, ("--time-col", "t"))])
def test_forecast_fits_train_refuses_data_it_could_not_forecast(d, make, extra):
    data = make(d)
    out = d / "unforecastable.lstm"
    result = run("train", data, "--target", "y", *FAST, *extra, "--out", out)
    assert result.exit_code == 65, result.output
    line = one_error_line(result)
    assert data.name in line and "forecast times after" in line
    assert not out.exists()


def test_forecast_fits_validate_model_agrees_with_predict(d):
    early = write_csv(d / "early_ms.csv", stamps("2250-01-01", 63, "MS"))
    model = train(d, "early_ms", early)
    data = late_month_starts(d)
    predicted = run("predict", model, data)
    assert predicted.exit_code == 65
    checked = run("validate", data, "--model", model)
    assert checked.exit_code == 65, checked.output
    assert "forecast times after 2262-03-01" in checked.output
    assert run("validate", early, "--model", model).exit_code == 0


def test_forecast_fits_validate_model_integers_near_the_limit(d, integer):
    data = int_near_top(d)
    assert run("predict", integer, data).exit_code == 65
    checked = run("validate", data, "--model", integer)
    assert checked.exit_code == 65 and "64-bit integer limit" in checked.output


def test_forecast_fits_validate_with_horizon(d):
    data = late_month_starts(d)
    checked = run("validate", data, "--target", "y", "--horizon", "3")
    assert checked.exit_code == 65 and "forecast times after 2262-03-01" in checked.output
    assert run("validate", data, "--target", "y", "--horizon", "1").exit_code == 0
    assert run("validate", data, "--target", "y").exit_code == 0  # no horizon: nothing to forecast


# ----------------------------------------------------------------------------------------------
# off_phase: data on the model's frequency at another time of day (pandas' MS takes any time on day 1)


def at_time_of_day(times: list[str], clock: str) -> list[str]:
    """The dates of `times` (midnight stamps) at `clock` instead."""
    return [f"{t[:10]}T{clock}" for t in times]


@pytest.fixture(scope="module")
def monthly(d) -> Path:
    return train(d, "monthly", write_csv(d / "monthly.csv", stamps("2000-01-01", 60, "MS")))


@pytest.mark.parametrize("clock", ["12:00:00", "00:00:01", "23:59:59", "00:00:00.000000001"])
def test_off_phase_month_starts_at_a_time_of_day_for_a_midnight_model(d, monthly, clock):
    data = write_csv(d / "monthly_clock.csv", at_time_of_day(stamps("2000-01-01", 60, "MS"), clock))
    predicted = run("predict", monthly, data)
    assert predicted.exit_code == 65, predicted.output
    line = one_error_line(predicted)
    assert "monthly_clock.csv" in line and "time 2000-01-01 " in line and "MS grid" in line
    checked = run("validate", data, "--model", monthly)
    assert checked.exit_code == 65 and "MS grid" in checked.output
    scored = run("evaluate", monthly, data)  # scored the model at a phase it never saw, exit 0
    assert scored.exit_code == 65 and "MS grid" in one_error_line(scored)


def test_off_phase_model_trained_at_a_time_of_day_keeps_it(d):
    days = stamps("2000-01-01", 60, "MS")
    odd = write_csv(d / "monthly_odd.csv", at_time_of_day(days, "00:00:01"))
    model = train(d, "monthly_odd", odd)
    own = run("predict", model, odd)
    assert own.exit_code == 0, own.output
    assert "2005-01-01 00:00:01" in own.stdout
    midnight = run("predict", model, write_csv(d / "monthly_midnight.csv", days))
    assert midnight.exit_code == 65
    line = one_error_line(midnight)
    assert "monthly_midnight.csv" in line and "MS grid" in line and "2004-12-01 00:00:01" in line


def test_off_phase_weekly_and_half_hour_models(d, weekly, half_hour):
    noon = write_csv(d / "weekly_noon.csv", at_time_of_day(stamps("2020-01-05", 60, "W-SUN"), "12:00:00"))
    assert "W-SUN grid" in one_error_line(run("predict", weekly, noon))
    quarter = write_csv(d / "half_quarter.csv", stamps("2024-01-01 00:15", 120, "30min"))
    result = run("predict", half_hour, quarter)
    assert result.exit_code == 65 and "30min grid" in one_error_line(result)


def test_off_phase_warm_start(d, monthly):
    data = write_csv(d / "monthly_warm.csv", at_time_of_day(stamps("2000-01-01", 64, "MS"), "12:00:00"))
    out = d / "warm_off.lstm"
    result = run("train", data, "--target", "y", *FAST, "--warm-start", monthly, "--out", out)
    assert result.exit_code == 65, result.output
    assert "--warm-start" in one_error_line(result) and not out.exists()
