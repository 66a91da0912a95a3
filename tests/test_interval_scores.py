"""Probabilistic scores (issue 18): interval, wQL and CRPS formulas by hand, and `lstm evaluate` of a
quantile model reporting them for the model and for the seasonal naive's empirical band."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_cli import baselines, metrics
from lstm_cli.cli import cli

A10 = Path(__file__).resolve().parents[1] / "sample_data" / "a10_monthly.csv"
H = 6
TARGET = "cost_million_aud"


def test_interval_scores_by_hand():
    # alpha = 0.2, 2/alpha = 10: below by 1 -> 1 + 10; inside -> 2; above by 2 -> 4 + 20
    s = metrics.interval_scores([1, 5, 10], [2, 4, 4], [3, 6, 8], 0.8)
    assert s["coverage"] == pytest.approx(100 / 3)
    assert s["width"] == pytest.approx(7 / 3)
    assert s["winkler"] == pytest.approx(37 / 3)


def test_interval_scores_of_a_zero_width_band_charge_only_the_misses():
    # lo == hi: an actual on the point is covered at no cost; a miss by 1 costs 2/alpha = 20
    s = metrics.interval_scores([2, 3], [2, 2], [2, 2], 0.9)
    assert s == pytest.approx({"coverage": 50.0, "width": 0.0, "winkler": 10.0})


def test_interval_scores_without_a_band_are_undefined():
    s = metrics.interval_scores([1, 2], [0, np.nan], [2, np.nan], 0.8)
    assert all(math.isnan(v) for v in s.values())


def test_pinball_by_hand():
    # e = y - f = [1, -1]: q=0.1 -> 0.1 and 0.9
    assert metrics.pinball([2, 4], np.array([1, 5]), 0.1) == pytest.approx(0.5)


def test_weighted_quantile_loss_and_crps_by_hand():
    y = [2, 4]
    qf = np.array([[1, 3], [5, 5]])  # (steps, quantiles 0.1, 0.9)
    # pinball sums: q=0.1 -> 0.1 + 0.9 = 1.0; q=0.9 -> 0.1 + 0.1 = 0.2; sum |y| = 6
    assert metrics.weighted_quantile_loss(y, qf, (0.1, 0.9)) == pytest.approx((2 * 1.0 / 6 + 2 * 0.2 / 6) / 2)
    # mean pinballs 0.5 and 0.1: 2 * mean = 0.6
    assert metrics.crps_from_quantiles(y, qf, (0.1, 0.9)) == pytest.approx(0.6)


def test_weighted_quantile_loss_of_all_zero_actuals_is_undefined():
    qf = np.array([[-1.0, 1.0], [-1.0, 1.0]])
    assert math.isnan(metrics.weighted_quantile_loss([0, 0], qf, (0.1, 0.9)))
    assert metrics.crps_from_quantiles([0, 0], qf, (0.1, 0.9)) == pytest.approx(2 * 0.1)


@pytest.mark.parametrize("quantiles, expected", [
    ((0.1, 0.5, 0.9), [(0, 2, "80")]),
    ((0.025, 0.1, 0.5, 0.9, 0.975), [(0, 4, "95"), (1, 3, "80")]),
    ((0.05, 0.95), [(0, 1, "90")]),
    ((0.1, 0.5, 0.8), []),  # no mirror of 0.1: no central interval
    ((), []),
])
def test_interval_levels_pair_each_quantile_with_its_mirror(quantiles, expected):
    assert metrics.interval_levels(quantiles) == expected


def test_seasonal_naive_lags_point_where_the_seasonal_naive_reads():
    x = np.random.default_rng(0).normal(size=30)
    for season, horizon in ((12, 26), (1, 5), (40, 4)):  # 40 > len(x): it falls back to naive
        forecast = baselines.seasonal_naive(x, horizon, season)
        lags = metrics.seasonal_naive_lags(len(x), horizon, season)
        source = len(x) - 1 + np.arange(1, horizon + 1) - lags
        assert np.array_equal(forecast, x[source])


def test_empirical_half_widths_by_hand():
    x = [1, 2, 4, 7, 11]
    # no season: lag h; |lag-1 diffs| = 1,2,3,4 -> median 2.5; |lag-2 diffs| = 3,5,7 -> 5
    assert metrics.empirical_half_widths(x, 2, 1, 0.5) == pytest.approx([2.5, 5.0])
    # season 2: lags 2, 2, 4; |lag-2 diffs| of 1,3,2,5,4,8 = 1,2,2,3 -> 2; lag 4: 3,5 -> 4
    assert metrics.empirical_half_widths([1, 3, 2, 5, 4, 8], 3, 2, 0.5) == pytest.approx([2.0, 2.0, 4.0])


def test_empirical_half_widths_undefined_where_the_history_has_no_error_at_that_lag():
    out = metrics.empirical_half_widths([1, 2, 4], 3, 1, 0.8)
    assert np.isfinite(out[:2]).all() and math.isnan(out[2])


def train(path, *extra):
    result = CliRunner().invoke(cli, ["train", str(A10), "--target", TARGET, "--horizon", str(H), "--out", str(path),
                                      "--hidden", "4", "--epochs", "2", "--threads", "1", "-q", *extra])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def quantile_model(tmp_path_factory):
    # --intervals none: scored on its raw quantile pairs (a conformal table would be scored instead)
    return train(tmp_path_factory.mktemp("iscores") / "q.lstm", "--quantiles", "0.1,0.5,0.9", "--intervals", "none")


def evaluate(model, *extra):
    """evaluate on a10 (one origin, the last H rows); the table needs no -q (it hides it)."""
    result = CliRunner().invoke(cli, ["evaluate", str(model), str(A10), *extra])
    assert result.exit_code == 0, result.output
    return result


def a10_values():
    with open(A10, newline="") as fh:
        return np.array([float(r[TARGET]) for r in csv.DictReader(fh)])


def test_evaluate_json_scores_the_quantile_models_interval_and_the_baselines_own(quantile_model, tmp_path):
    doc = json.loads(evaluate(quantile_model, "--format", "json").stdout)
    values = a10_values()
    past, actual = values[:-H], values[-H:]
    # the model's forecast from the rows before the origin, as predict gives it
    cut = tmp_path / "cut.csv"
    cut.write_text("".join(A10.read_text().splitlines(keepends=True)[: 1 + len(past)]))
    pred = CliRunner().invoke(cli, ["predict", str(quantile_model), str(cut), "--format", "json", "-q"])
    assert pred.exit_code == 0, pred.output
    rows = json.loads(pred.stdout)["forecast"]
    qf = np.array([[r[f"{TARGET}_q{q}"] for q in ("0.1", "0.5", "0.9")] for r in rows])
    records = {r["method"]: r for r in doc["records"]}
    lstm, snaive = records["lstm"], records["seasonal_naive"]
    expected = metrics.interval_scores(actual, qf[:, 0], qf[:, 2], 0.8)
    for name in ("coverage", "width", "winkler"):
        assert lstm[f"{name}_80"] == pytest.approx(expected[name], rel=1e-4, abs=1e-4)
    assert lstm["wql"] == pytest.approx(metrics.weighted_quantile_loss(actual, qf, (0.1, 0.5, 0.9)), rel=1e-4)
    assert lstm["crps"] == pytest.approx(metrics.crps_from_quantiles(actual, qf, (0.1, 0.5, 0.9)), rel=1e-4)
    assert "coverage_0.1_0.9" in lstm and "pinball" in lstm  # the existing keys stay
    # the seasonal naive's band: its forecast +- the 80% quantile of its past h-step absolute errors
    season = doc["header"]["season"]
    f = baselines.seasonal_naive(past, H, season)
    half = metrics.empirical_half_widths(past, H, season, 0.8)
    expected = metrics.interval_scores(actual, f - half, f + half, 0.8)
    for name in ("coverage", "width", "winkler"):
        assert snaive[f"{name}_80"] == pytest.approx(expected[name], rel=1e-9)
        assert doc["overall"]["seasonal_naive"][f"{name}_80"] == pytest.approx(expected[name], rel=1e-9)
    assert "wql" not in snaive and "coverage_80" not in records["naive"] and "coverage_80" not in records["theta"]
    assert doc["overall"]["lstm"]["wql"] == pytest.approx(lstm["wql"])


def test_evaluate_table_shows_one_line_per_interval_level(quantile_model):
    out = evaluate(quantile_model).stdout
    lines = [line for line in out.splitlines() if "% interval" in line]
    assert len(lines) == 1 and lines[0].split()[:2] == ["80%", "interval"]
    assert "lstm coverage" in lines[0] and "seasonal_naive coverage" in lines[0] and "winkler" in lines[0]
    lstm_line = next(line for line in out.splitlines() if line.split()[:1] == ["lstm"])
    assert "wql" in lstm_line and "crps" in lstm_line and "width_80" not in lstm_line


def test_evaluate_csv_carries_the_interval_columns(quantile_model):
    rows = list(csv.DictReader(io.StringIO(evaluate(quantile_model, "--format", "csv").stdout)))
    assert {"coverage_80", "width_80", "winkler_80", "wql", "crps"} <= set(rows[0])
    assert list(rows[0])[-1] == "in_sample"
    by_method = {r["method"]: r for r in rows}
    assert by_method["seasonal_naive"]["winkler_80"] != "" and by_method["naive"]["winkler_80"] == ""


def test_evaluate_scores_every_central_interval_of_the_quantile_grid(tmp_path):
    model = train(tmp_path / "q5.lstm", "--quantiles", "0.025,0.1,0.5,0.9,0.975")
    result = evaluate(model, "--format", "json")
    overall = json.loads(result.stdout)["overall"]
    for method in ("lstm", "seasonal_naive"):
        assert {"coverage_95", "width_95", "winkler_95", "coverage_80", "width_80"} <= set(overall[method])
    assert overall["seasonal_naive"]["width_95"] >= overall["seasonal_naive"]["width_80"]
    table = evaluate(model).stdout
    assert "95% interval" in table and "80% interval" in table


def test_point_model_without_intervals_gets_no_interval_scores(tmp_path):
    doc = json.loads(evaluate(train(tmp_path / "p.lstm", "--intervals", "none"), "--format", "json").stdout)
    keys = {k for r in doc["records"] for k in r} | {k for o in doc["overall"].values() for k in o}
    assert not {k for k in keys if k.startswith(("coverage", "width", "winkler")) or k in ("wql", "crps", "pinball")}
