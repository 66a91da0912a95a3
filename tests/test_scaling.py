"""Scaling and anchors: the segment-wise scaler fit equals the obvious per-series one at any
magnitude; level and seasonal windows anchor where they say; auto picks the closer anchor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_cli import modelfile, scaling, windows
from lstm_cli.cli import cli
from lstm_cli.network import Architecture, Network

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "a10_monthly.csv"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=12), st.sampled_from([1e-300, 1e-3, 1.0, 1e300]),
       st.integers(0, 2**31 - 1))
def test_fit_equals_fit_block_per_series(lengths, magnitude, seed):
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = rng.normal(size=(starts[-1], 2)) * magnitude
    values[starts[0] : starts[1], 1] = 3.0  # a constant column
    train_rows = np.array([max(1, int(n * 0.7)) for n in lengths])
    loc, scale = scaling.fit(values, starts, train_rows)
    for s in range(len(lengths)):
        want_loc, want_scale = scaling.fit_block(values[starts[s] : starts[s] + train_rows[s]])
        np.testing.assert_allclose(loc[s], want_loc, rtol=1e-12)
        np.testing.assert_allclose(scale[s], want_scale, rtol=1e-12)
    scaled = scaling.transform(values, starts, loc, scale)
    assert np.isfinite(scaled).all() and (scale > 0).all()


def test_level_windows_are_relative_to_the_last_input_row():
    values = np.arange(20, dtype=np.float64).reshape(10, 2)
    w = windows.make_windows(values, np.array([0, 10]), 1, lookback=3, horizon=2, scaling="level")
    x, y = w["x_train"], w["y_train"]
    np.testing.assert_array_equal(x[:, -1, :], 0.0)
    np.testing.assert_array_equal(y, [[2.0, 4.0]] * len(y))  # targets rise by 2 a row


def test_seasonal_targets_are_departures_from_seasonal_naive():
    """Season 3, lookback 4, horizon 5: step h is anchored at the window row one season before it
    (rows 1, 2, 3, 1, 2 of the window); a series that repeats every 3 rows gives targets 0."""
    pattern = np.array([5.0, -1.0, 2.0])
    values = np.tile(pattern, 6)[:, None] + np.zeros((18, 2))
    w = windows.make_windows(values, np.array([0, 18]), 1, lookback=4, horizon=5, scaling="seasonal", season=3)
    np.testing.assert_array_equal(w["y_train"], 0.0)
    np.testing.assert_array_equal(w["x_train"][:, -1, :], 0.0)  # inputs: relative to the last row
    assert windows.anchor_rows(4, 5, "seasonal", 3).tolist() == [1, 2, 3, 1, 2]
    assert windows.anchor_rows(4, 2, "level", 3).tolist() == [3, 3]
    assert windows.anchor_rows(4, 2, "seasonal", 1).tolist() == [3, 3]  # no season: the last row
    trend = np.arange(18, dtype=np.float64)[:, None] * np.ones((1, 2))
    w = windows.make_windows(trend, np.array([0, 18]), 1, lookback=4, horizon=5, scaling="seasonal", season=3)
    # a season's worth of trend; two seasons' for steps 4-5 (seasonal naive repeats the last season)
    np.testing.assert_array_equal(w["y_train"], [[3.0, 3.0, 3.0, 6.0, 6.0]] * len(w["y_train"]))


def test_anchor_error_is_the_error_of_naive_and_seasonal_naive():
    """One series 0..9 (a trend, season 3), horizon 2, training rows 8: naive misses by the lag
    (1 and 2 steps), seasonal naive by 3 (one season back) at both steps."""
    values = np.arange(10, dtype=np.float64)[:, None]
    starts, rows = np.array([0, 10]), np.array([8])
    assert windows.anchor_error(values, starts, rows, 1, 2, "level", 3) == (7 * 1 + 6 * 2) / 13
    assert windows.anchor_error(values, starts, rows, 1, 2, "seasonal", 3) == 3.0
    # two series: no pair may straddle them
    two = np.concatenate([values, values + 100.0])
    assert windows.anchor_error(two, np.array([0, 10, 20]), np.array([8, 8]), 1, 2, "seasonal", 3) == 3.0


def test_auto_scaling_picks_the_closer_anchor():
    rng = np.random.default_rng(0)
    t = np.arange(120)
    seasonal = (np.sin(2 * np.pi * t / 12) + 0.05 * rng.normal(size=t.size))[:, None]
    walk = np.cumsum(rng.normal(size=t.size))[:, None]
    starts, rows = np.array([0, 120]), np.array([100])
    assert windows.choose_scaling(seasonal, starts, rows, 1, 6, 12, 24)[0] == "seasonal"
    assert windows.choose_scaling(walk, starts, rows, 1, 6, 12, 24)[0] == "level"
    # a season longer than the lookback cannot anchor: level
    mode, errors = windows.choose_scaling(seasonal, starts, rows, 1, 6, 12, 8)
    assert mode == "level" and set(errors) == {"level"}


def test_zero_head_starts_at_the_anchor():
    """head_init zero: the untrained network outputs 0, so a level model forecasts the last value
    and a seasonal one the value a season back (naive and seasonal naive)."""
    net = Network(Architecture(1, 4, 1, 3), seed=0, head_init="zero")
    x = np.random.default_rng(1).normal(size=(5, 6, 1))
    np.testing.assert_array_equal(net.predict(x), 0.0)
    inputs, base = windows.split_anchor(x, 3, 1, "seasonal", 4)
    np.testing.assert_array_equal(base[:, :, 0], x[:, [2, 3, 4], 0])
    np.testing.assert_array_equal(inputs[:, -1], 0.0)


def _train(*args):
    return CliRunner().invoke(cli, ["train", str(SAMPLE), "--target", "cost_million_aud", "--epochs", "2",
                                    "--hidden", "4", "-q", *map(str, args)])


def test_cli_seasonal_needs_a_season_of_lookback_and_auto_records_its_choice(tmp_path):
    result = _train("--horizon", "6", "--scaling", "seasonal", "--lookback", "8", "--out", tmp_path / "s.lstm")
    assert result.exit_code == 2 and "--lookback >= 12" in result.output
    assert not (tmp_path / "s.lstm").exists()
    result = _train("--horizon", "6", "--scaling", "auto", "--out", tmp_path / "a.lstm")
    assert result.exit_code == 0, result.output
    header, _ = modelfile.load(tmp_path / "a.lstm")
    assert header["data"]["scaling"] == "seasonal" and header["data"]["season"] == 12  # a10: strongly seasonal
    header["data"]["lookback"] = 8  # a seasonal file whose window cannot reach a season back is refused
    with pytest.raises(modelfile.ModelFileError, match="data.season"):
        modelfile.validate_header(header)


def test_calibration_is_the_least_squares_shrink_of_the_head(tmp_path):
    """calibrate_head scales head.weight and head.bias by a = <out, y>/<out, out> clipped to
    [0, 1]: the outputs then fit the validation targets at least as well as before."""
    from lstm_cli.pipeline import calibrate_head

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6, 1))
    for truth_scale, expect_clip in ((0.3, False), (-1.0, True), (5.0, True)):
        net = Network(Architecture(1, 4, 1, 2, "float64"), seed=1)
        out = net.predict(x)
        y = truth_scale * out + 0.01 * rng.normal(size=out.shape)
        a_ls = float(np.sum(out * y) / np.sum(out * out))
        a = calibrate_head(net, x, y)
        assert a == pytest.approx(min(max(a_ls, 0.0), 1.0)) and (a != a_ls) == expect_clip
        np.testing.assert_allclose(net.predict(x), a * out, rtol=1e-12, atol=1e-15)
        assert np.sum((a * out - y) ** 2) <= np.sum((out - y) ** 2) + 1e-12


def test_cli_calibrate_only_scales_the_head(tmp_path):
    plain, cal = tmp_path / "plain.lstm", tmp_path / "cal.lstm"
    assert _train("--horizon", "6", "--calibrate", "none", "--out", plain).exit_code == 0
    assert _train("--horizon", "6", "--out", cal).exit_code == 0  # the default: val
    (h0, a0), (h1, a1) = modelfile.load(plain), modelfile.load(cal)
    scale = h1["training"]["params"]["output_scale"]
    assert 0.0 <= scale <= 1.0 and h0["training"]["params"]["output_scale"] is None
    for name in a0:
        want = a0[name] * np.float32(scale) if name.startswith("head.") else a0[name]
        np.testing.assert_allclose(a1[name], want, rtol=1e-6, err_msg=name)


def test_default_scaling_follows_the_data_size():
    """Fewer than SHORT_DATA_WINDOWS training windows: per-series scaling (issue 17's short-series study)."""
    from lstm_cli.pipeline import SHORT_DATA_WINDOWS, scaling_for_size

    # one series of 100 rows, 10 of them validation, lookback 10, horizon 5: 76 windows (nile)
    assert scaling_for_size(np.array([90]), 10, 5) == "series"
    assert scaling_for_size(np.array([90 + SHORT_DATA_WINDOWS]), 10, 5) == "level"
    assert scaling_for_size(np.array([10 + 5 - 1 + SHORT_DATA_WINDOWS]), 10, 5) == "level"  # exactly the threshold
    assert scaling_for_size(np.array([10 + 5 - 2 + SHORT_DATA_WINDOWS]), 10, 5) == "series"
    assert scaling_for_size(np.array([80, 80]), 10, 5) == "level"  # windows of every series count: 2 x 66


def test_cli_default_scaling_is_series_on_short_data_and_an_explicit_level_is_kept(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("\n".join(SAMPLE.read_text().splitlines()[:61]) + "\n")  # 60 months: 20 windows
    for data, option, expected in ((short, (), "series"), (short, ("--scaling", "level"), "level"),
                                   (SAMPLE, (), "level")):
        out = tmp_path / f"{expected}{len(option)}.lstm"
        result = CliRunner().invoke(cli, ["train", str(data), "--target", "cost_million_aud", "--epochs", "1",
                                          "--hidden", "4", "--horizon", "6", "--out", str(out), *option])
        assert result.exit_code == 0, result.output
        header, _ = modelfile.load(out)
        assert header["data"]["scaling"] == expected, (data.name, option)
        assert ("(the default for fewer than 120 training windows)" in result.output) == (not option and
                                                                                         data == short)
