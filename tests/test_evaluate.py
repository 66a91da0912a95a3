"""Metrics against hand-computed values, baselines, and `lstm evaluate` through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_cli import baselines, metrics
from lstm_cli.cli import cli

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"


def test_metrics_by_hand():
    y = np.array([2.0, 4.0, 8.0])
    f = np.array([1.0, 5.0, 8.0])
    assert metrics.mae(y, f) == pytest.approx(2 / 3)
    assert metrics.rmse(y, f) == pytest.approx(math.sqrt(2 / 3))
    assert metrics.mape(y, f) == pytest.approx(100 * (0.5 + 0.25 + 0) / 3)
    assert metrics.smape(y, f) == pytest.approx(100 * (2 * 1 / 3 + 2 * 1 / 9 + 0) / 3)
    # history 1,3,2,4 with season 2: |2-1|, |4-3| -> scale 1
    assert metrics.seasonal_naive_scale([1, 3, 2, 4], 2) == pytest.approx(1.0)
    assert metrics.mase(y, f, [1, 3, 2, 4], 2) == pytest.approx(2 / 3)
    # without a season the scale is the naive one: |3-1|, |2-3|, |4-2| -> 5/3
    assert metrics.mase(y, f, [1, 3, 2, 4], 1) == pytest.approx((2 / 3) / (5 / 3))


def test_metrics_edge_cases():
    assert math.isnan(metrics.mape([0.0, 1.0], [1.0, 1.0]))
    assert metrics.smape([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert math.isnan(metrics.mase([1.0], [2.0], [5.0, 5.0, 5.0], 1))  # constant history: scale 0
    assert metrics.pinball([10.0], np.array([8.0]), 0.9) == pytest.approx(0.9 * 2)
    assert metrics.pinball([10.0], np.array([12.0]), 0.9) == pytest.approx(0.1 * 2)
    assert metrics.coverage([1, 2, 3, 4], np.array([0, 0, 0, 5]), np.array([1.5, 2.5, 2.5, 6])) == 50.0


def test_baselines():
    h = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    assert baselines.naive(h, 4).tolist() == [30.0] * 4
    assert baselines.seasonal_naive(h, 5, 3).tolist() == [10.0, 20.0, 30.0, 10.0, 20.0]
    assert baselines.seasonal_naive(h[:2], 3, 3).tolist() == [2.0] * 3  # too short: naive


@pytest.fixture(scope="module")
def panel_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "dep.lstm"
    result = CliRunner().invoke(cli, ["train", str(SAMPLES / "departures_monthly_panel.csv"), "--id-col", "series_id",
                                      "--target", "departures_thousands", "--horizon", "6", "--out", str(path),
                                      "--epochs", "3", "--hidden", "8", "-q"])
    assert result.exit_code == 0, result.output
    return path


def test_evaluate_json_has_baselines_and_every_series(panel_model):
    result = CliRunner().invoke(cli, ["evaluate", str(panel_model), str(SAMPLES / "departures_monthly_panel.csv"),
                                      "--backtest", "2", "--format", "json", "-q"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc["overall"]) == {"lstm", "naive", "seasonal_naive"}
    assert doc["header"]["season"] == 12 and doc["header"]["origins"] == 2
    assert len(doc["records"]) == 2 * 5 * 3
    naive = [r for r in doc["records"] if r["method"] == "naive" and r["origin"] == 2]
    assert all(r["mase"] > 0 for r in naive)


def test_evaluate_gate_exit_code(panel_model):
    args = ["evaluate", str(panel_model), str(SAMPLES / "departures_monthly_panel.csv"), "-q", "--format", "csv"]
    ok = CliRunner().invoke(cli, args)
    assert ok.exit_code == 0 and ok.stdout.startswith("origin,series,target,method,mae")
    doc = json.loads(CliRunner().invoke(cli, args[:-2] + ["--format", "json"]).stdout)
    worse = doc["overall"]["lstm"]["mase"] > doc["overall"]["naive"]["mase"]
    gated = CliRunner().invoke(cli, args + ["--fail-if-worse-than", "naive"])
    assert gated.exit_code == (3 if worse else 0)


def test_evaluate_too_short_for_origins(panel_model):
    result = CliRunner().invoke(cli, ["evaluate", str(panel_model), str(SAMPLES / "departures_monthly_panel.csv"),
                                      "--backtest", "200", "-q"])
    assert result.exit_code == 65 and "need at least" in result.output
