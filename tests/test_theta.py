"""The Theta baseline (lstm_cli.baselines.theta) and its row in every evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.optimize import minimize

from lstm_cli import baselines
from lstm_cli.cli import cli

SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"
A10 = SAMPLES / "a10_monthly.csv"


def ses_by_scipy(x: np.ndarray) -> tuple[float, float]:
    """An independent SES fit: (alpha, last level) minimising the one-step squared error over alpha
    and the initial level with a general optimiser, many starts."""

    def sse(p):
        alpha, level = p
        total = 0.0
        for value in x:
            total += (value - level) ** 2
            level += alpha * (value - level)
        return total

    best = min((minimize(sse, [a, x[0]], bounds=[(1e-3, 0.999), (None, None)], method="L-BFGS-B")
                for a in (0.05, 0.3, 0.6, 0.95)), key=lambda r: r.fun)
    alpha, level = best.x
    for value in x:
        level += alpha * (value - level)
    return float(alpha), float(level)


def test_ses_fit_matches_a_general_optimiser():
    x = np.array([12.0, 15.0, 11.0, 14.0, 18.0, 16.0, 19.0, 17.0, 21.0, 20.0, 24.0, 22.0])
    alpha, level = baselines.ses_fit(x)
    want_alpha, want_level = ses_by_scipy(x)
    assert alpha == pytest.approx(want_alpha, abs=2e-3)
    assert level == pytest.approx(want_level, rel=1e-3)


def test_theta_on_a_short_non_seasonal_series_is_the_hand_formula():
    # SES with drift: level + b/2 (h - 1 + (1 - (1 - alpha)^n) / alpha), b the OLS slope on 0..n-1
    x = np.array([3.0, 5.0, 4.0, 6.0, 8.0, 7.0, 9.0])
    alpha, level = ses_by_scipy(x)
    b = np.polyfit(np.arange(7.0), x, 1)[0]
    want = [level + b / 2 * (h - 1 + (1 - (1 - alpha) ** 7) / alpha) for h in (1, 2, 3)]
    np.testing.assert_allclose(baselines.theta(x, 3, 1), want, rtol=2e-3)


def test_theta_follows_a_linear_trend_at_half_its_slope():
    # Hyndman & Billah (2003): the theta-0 line (the trend) and theta-2 line combined, drift b/2
    x = 50.0 + 2.0 * np.arange(30)
    f = baselines.theta(x, 6, 1)
    np.testing.assert_allclose(np.diff(f), 1.0)
    assert f[0] == pytest.approx(x[-1] + 1.0, abs=0.01)  # alpha ~ 1: the last value plus one drift


def test_theta_of_a_constant_is_the_constant():
    np.testing.assert_allclose(baselines.theta(np.full(30, 7.5), 5, 4), 7.5)
    np.testing.assert_allclose(baselines.theta(np.full(30, 7.5), 5, 1), 7.5)


@pytest.mark.parametrize("level", [100.0, 0.0])  # positive: multiplicative; with values <= 0: additive
def test_theta_repeats_a_seasonal_pattern(level):
    pattern = np.array([-20.0, 5.0, 30.0, -15.0]) if level == 0 else np.array([0.8, 1.1, 1.3, 0.8])
    x = np.tile(pattern, 10) + level if level == 0 else level * np.tile(pattern, 10)
    assert baselines.seasonality_test(x, 4)
    f = baselines.theta(x, 9, 4)
    np.testing.assert_allclose(f, x[-4:][np.arange(9) % 4], rtol=1e-9, atol=1e-9)


def test_theta_scales_with_the_data():
    rng = np.random.default_rng(3)
    t = np.arange(60)
    x = (100 + t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) + rng.normal(0, 3, 60)
    np.testing.assert_allclose(baselines.theta(1000.0 * x, 12, 12), 1000.0 * baselines.theta(x, 12, 12), rtol=1e-9)


def test_seasonality_test_is_the_90_percent_acf_rule():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=48)
    x = noise + 3.0 * np.tile([1.0, -1.0, 0.5, -0.5], 12)
    d = x - x.mean()
    r = np.array([d[: 48 - k] @ d[k:] for k in range(1, 5)]) / (d @ d)
    want = abs(r[3]) > 1.645 * np.sqrt((1 + 2 * np.sum(r[:3] ** 2)) / 48)
    assert baselines.seasonality_test(x, 4) == want == True  # noqa: E712
    assert not baselines.seasonality_test(noise, 4)
    assert not baselines.seasonality_test(x[:7], 4)  # fewer than two whole seasons
    assert not baselines.seasonality_test(x, 1)


def test_seasonal_series_is_deseasonalised_before_the_drift():
    # a trend with a multiplicative season: the forecast keeps the season's shape and the trend's direction
    t = np.arange(48)
    season = np.array([0.7, 0.9, 1.2, 1.3, 1.1, 0.8])
    x = (200 + 3 * t) * season[t % 6]
    f = baselines.theta(x, 12, 6)
    ratio = f / f.mean()
    assert np.argmax(f[:6]) == 3 and np.argmin(f[:6]) == 0  # same phase as the data (48 % 6 == 0)
    assert f[6:].mean() > f[:6].mean()  # rising
    np.testing.assert_allclose(ratio[:6] / ratio[6:], 1.0, atol=0.05)


def test_theta_falls_back_to_naive_below_three_points():
    assert baselines.theta(np.array([4.0]), 3, 1).tolist() == [4.0] * 3
    assert baselines.theta(np.array([4.0, 6.0]), 2, 12).tolist() == [6.0] * 2


def test_theta_is_among_the_baselines():
    assert "theta" in baselines.BASELINES


def evaluate_doc(*args):
    model = args[0]
    result = CliRunner().invoke(cli, ["evaluate", str(model), str(A10), "--format", "json", "-q", *args[1:]])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def a10_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("theta") / "a10.lstm"
    result = CliRunner().invoke(cli, ["train", str(A10), "--target", "cost_million_aud", "--horizon", "6",
                                      "--hidden", "4", "--epochs", "2", "--out", str(path), "-q"])
    assert result.exit_code == 0, result.output
    return path


def test_evaluate_scores_theta_and_the_skill_against_it(a10_model):
    doc = evaluate_doc(a10_model, "--backtest", "2")
    assert "theta" in doc["overall"] and doc["overall"]["theta"]["mase"] > 0
    lstm, theta = doc["overall"]["lstm"]["mase"], doc["overall"]["theta"]["mase"]
    assert doc["skill"]["theta"] == pytest.approx(1 - lstm / theta)
    records = [r for r in doc["records"] if r["method"] == "theta"]
    assert [r["origin"] for r in records] == [1, 2]
    table = CliRunner().invoke(cli, ["evaluate", str(a10_model), str(A10)])
    assert "skill vs theta" in table.stdout and "\n  theta " in table.stdout


def test_evaluate_theta_row_is_the_baseline_on_the_rows_before_each_origin(a10_model):
    import pandas as pd

    y = pd.read_csv(A10)["cost_million_aud"].to_numpy(float)
    doc = evaluate_doc(a10_model, "--backtest", "2", "--step", "3")
    for origin, cut in ((1, len(y) - 6 - 3), (2, len(y) - 6)):
        (rec,) = [r for r in doc["records"] if r["method"] == "theta" and r["origin"] == origin]
        f = baselines.theta(y[:cut], 6, 12)
        assert rec["mae"] == pytest.approx(np.mean(np.abs(y[cut : cut + 6] - f)))


def test_refit_evaluation_has_the_same_theta_row(a10_model):
    fixed = evaluate_doc(a10_model, "--backtest", "2")
    refit = evaluate_doc(a10_model, "--backtest", "2", "--refit")
    assert refit["overall"]["theta"] == fixed["overall"]["theta"]


def test_gate_against_theta(a10_model):
    result = CliRunner().invoke(cli, ["evaluate", str(a10_model), str(A10), "-q", "--fail-if-worse-than", "theta"])
    doc = evaluate_doc(a10_model)
    worse = doc["overall"]["lstm"]["mase"] > doc["overall"]["theta"]["mase"]
    assert result.exit_code == (3 if worse else 0), result.output


def test_theta_is_exact_on_exact_data():
    """A constant history gives exactly that constant, and an exact seasonal pattern with zeros gives
    exact zeros (not 1e-16, which sMAPE would count as a 200% error against an actual 0)."""
    from lstm_cli import baselines, metrics

    assert np.array_equal(baselines.theta(np.full(30, 7.0), 5, 12), np.full(5, 7.0))
    t = np.arange(120)
    y = np.maximum(0.0, np.round(10 * np.sin(2 * np.pi * t / 12), 12))
    f = baselines.theta(y[:-6], 6, 12)
    assert metrics.smape(y[-6:][y[-6:] == 0], f[y[-6:] == 0]) == 0.0


def test_evaluate_table_shows_undefined_scores_as_a_dash(tmp_path):
    from click.testing import CliRunner

    from lstm_cli.cli import cli

    data = tmp_path / "flat.csv"
    data.write_text("date,y\n" + "".join(f"2020-{m:02d}-01,7\n" for m in range(1, 13))
                    + "".join(f"2021-{m:02d}-01,7\n" for m in range(1, 13)))
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", str(data), "--target", "y", "--horizon", "3", "--epochs", "1",
                                  "--hidden", "4", "--threads", "1", "-q", "--out", str(tmp_path / "m.lstm")])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "m.lstm"), str(data)])
    assert result.exit_code == 0, result.output
    assert "mase -" in result.stdout and "nan" not in result.stdout
