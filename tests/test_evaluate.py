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
    assert set(doc["overall"]) == {"lstm", "naive", "seasonal_naive", "theta"}
    assert set(doc["skill"]) == {"naive", "seasonal_naive", "theta"}
    assert doc["header"]["season"] == 12 and doc["header"]["origins"] == 2
    assert len(doc["records"]) == 2 * 5 * 4
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


# --- --plot -------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature and the chunk name."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_is_a_png_with_one_panel_per_series(panel_model, tmp_path):
    out = tmp_path / "dep.png"
    result = CliRunner().invoke(cli, ["evaluate", str(panel_model), str(SAMPLES / "departures_monthly_panel.csv"),
                                      "--backtest", "2", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert f"plot written to {out}" in result.stderr
    data = out.read_bytes()
    assert png_size(data) == (1440, 1110)  # 5 panels: 2 columns x 3 rows of 720 x 340 px, 90 px header
    import matplotlib.image

    pixels = matplotlib.image.imread(str(out))  # decodes the whole file: a valid PNG
    assert pixels.shape[:2] == (1110, 1440)
    rgb = np.round(pixels[:, :, :3] * 255).astype(int)
    forecast_blue = np.all(rgb == (0x1F, 0x77, 0xB4), axis=2)
    assert forecast_blue.sum() > 500  # the forecast lines are drawn
    # the lines are in all five panels: blue pixels in both columns of the first two rows, and the third row
    assert forecast_blue[: 1110 // 3, :720].any() and forecast_blue[: 1110 // 3, 720:].any()
    # (the legend's bottom 40 px left out: its blue sample moves right when it names in-sample actuals)
    assert forecast_blue[2 * 340 :, :720].any() and not forecast_blue[2 * 340 : 1110 - 40, 720:].any()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".dep.png.lock")] == ["dep.png"]


def test_plot_limits_panels_and_says_how_many_were_left_out(panel_model, tmp_path):
    rows = ["date,series_id,departures_thousands"]
    for s in range(14):  # series the model never saw: scaled by their own history
        for t in range(40):
            rows.append(f"{2000 + t // 12}-{t % 12 + 1:02d}-01,s{s:02d},{100 + 10 * s + 5 * np.sin(t / 2):.3f}")
    csv_path = tmp_path / "many.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "many.png"
    result = CliRunner().invoke(cli, ["evaluate", str(panel_model), str(csv_path), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "--plot: 12 of 14 series x target panels drawn, 2 left out" in result.stderr
    assert png_size(out.read_bytes()) == (2160, 1450)  # 3 columns x 4 rows


def test_plot_not_written_on_error(panel_model, tmp_path):
    out = tmp_path / "dep.png"
    out.write_bytes(b"previous")
    result = CliRunner().invoke(cli, ["evaluate", str(panel_model), str(SAMPLES / "departures_monthly_panel.csv"),
                                      "--backtest", "200", "--plot", str(out)])
    assert result.exit_code == 65 and "need at least" in result.stderr
    assert out.read_bytes() == b"previous"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    new = tmp_path / "new.png"
    result = CliRunner().invoke(cli, ["evaluate", str(panel_model), str(SAMPLES / "departures_monthly_panel.csv"),
                                      "--backtest", "200", "--plot", str(new)])
    assert result.exit_code == 65 and not new.exists()


def test_plot_path_checked_before_any_work(panel_model, tmp_path):
    # the data does not exist (exit 66 once read): the hopeless --plot path is refused first
    result = CliRunner().invoke(cli, ["evaluate", str(panel_model), str(tmp_path / "missing.csv"),
                                      "--plot", str(tmp_path / "no" / "dir" / "x.png")])
    assert result.exit_code == 73 and "does not exist" in result.stderr
    result = CliRunner().invoke(cli, ["evaluate", str(panel_model), str(SAMPLES / "a10_monthly.csv"),
                                      "--plot", str(panel_model)])
    assert result.exit_code == 73 and "same file as the input" in result.stderr


def test_plot_without_matplotlib_is_one_line_and_exit_69(panel_model, tmp_path, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    out = tmp_path / "dep.png"
    result = CliRunner().invoke(cli, ["evaluate", str(panel_model), str(SAMPLES / "departures_monthly_panel.csv"),
                                      "--plot", str(out)])
    assert result.exit_code == 69
    assert result.stderr == "lstm: --plot needs matplotlib: pip install 'lstm-cli[plot]'\n"
    assert result.stdout == "" and not out.exists()


# --- --refit ------------------------------------------------------------------------------------

A10 = SAMPLES / "a10_monthly.csv"


@pytest.fixture(scope="module")
def a10_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval_a10") / "a10.lstm"
    result = CliRunner().invoke(cli, ["train", str(A10), "--target", "cost_million_aud", "--horizon", "6",
                                      "--out", str(path), "--epochs", "15", "--hidden", "8", "--threads", "2", "-q"])
    assert result.exit_code == 0, result.output
    return path


def evaluate_json(*args):
    result = CliRunner().invoke(cli, ["evaluate", *map(str, args), "--format", "json", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return json.loads(result.stdout)


def test_refit_changes_the_scores_and_says_so(a10_model):
    fixed = evaluate_json(a10_model, A10, "--backtest", "3")
    refit = evaluate_json(a10_model, A10, "--backtest", "3", "--refit")
    assert fixed["header"]["mode"] == "fixed" and refit["header"]["mode"] == "refit"
    assert refit["overall"]["seasonal_naive"] == fixed["overall"]["seasonal_naive"]  # same origins, same baselines
    assert refit["overall"]["theta"] == fixed["overall"]["theta"]
    assert len(refit["records"]) == len(fixed["records"]) == 3 * 4
    m_fixed, m_refit = fixed["overall"]["lstm"]["mase"], refit["overall"]["lstm"]["mase"]
    assert m_refit != m_fixed
    # trained on less data, but still a forecaster: not absurdly worse than the seasonal naive
    assert 0 < m_refit < 2 * refit["overall"]["seasonal_naive"]["mase"]


def test_refit_progress_and_mode_on_stderr(a10_model):
    args = ["evaluate", str(a10_model), str(A10), "--backtest", "2", "--refit"]
    loud = CliRunner().invoke(cli, args)
    assert loud.exit_code == 0, loud.output
    assert "lstm: origin 1/2 (held out from 2007-07-01): refit " in loud.stderr
    assert "lstm: origin 2/2 (held out from 2008-01-01): refit " in loud.stderr
    assert "refit at every origin" in loud.stdout  # the table is evaluate's answer: stdout
    quiet = CliRunner().invoke(cli, args + ["-q"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""
    fixed = CliRunner().invoke(cli, args[:-1])
    assert "fixed model (no refit)" in fixed.stdout and "lstm: origin" not in fixed.stderr


def test_refit_uses_only_rows_before_each_origin(a10_model, tmp_path):
    from lstm_cli.evaluate import evaluate_from_csv

    lines = A10.read_text().splitlines()
    n = len(lines) - 1  # 204 rows; horizon 6, 2 origins: the first held-out row is n - 12
    changed = lines[: 1 + n - 12] + [f"{line.split(',')[0]},{float(line.split(',')[1]) * 3 + 7:.6f}"
                                      for line in lines[1 + n - 12 :]]
    future = tmp_path / "future_changed.csv"
    future.write_text("\n".join(changed) + "\n")
    runs = {}
    for refit in (False, True):
        for name, data in (("original", A10), ("changed", future)):
            ev = evaluate_from_csv(str(a10_model), str(data), backtests=2, refit=refit, plot_panels=1, threads=2)
            runs[refit, name] = [o.lstm for o in ev.panels[0].origins]
    for refit in (False, True):
        first_a, second_a = runs[refit, "original"]
        first_b, second_b = runs[refit, "changed"]
        assert np.array_equal(first_a, first_b)  # the changed rows are all after the first origin
        assert not np.array_equal(second_a, second_b)  # ... and in the history of the second one
    # the refit models are not the stored one
    assert not np.array_equal(runs[True, "original"][0], runs[False, "original"][0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_refit_retrains_with_the_options_the_model_file_records(a10_model, cell, tmp_path):
    """On all rows, train_on_series with refit_request's options gives the very weights `lstm train`
    wrote (same data, options, seed and threads)."""
    from lstm_cli import frame
    from lstm_cli.evaluate import refit_request
    from lstm_cli.pipeline import load_model, train_on_series

    path = a10_model
    if cell != "lstm":
        path = tmp_path / f"{cell}.lstm"
        result = CliRunner().invoke(cli, ["train", str(A10), "--target", "cost_million_aud", "--horizon", "6",
                                          "--out", str(path), "--epochs", "15", "--hidden", "8", "--threads", "2",
                                          "--cell", cell, "-q"])
        assert result.exit_code == 0, result.output
    model, _ = load_model(str(path))
    req, notes = refit_request(model, str(A10), None)
    assert notes == [] and req.hidden == 8 and req.train.epochs == 15 and req.threads == 2 and req.cell == cell
    series = frame.read_series(str(A10), targets=req.targets, features=req.features, time_col=req.time_col,
                               id_col=req.id_col, freq=req.freq)
    again, result = train_on_series(series, req)
    assert result.epochs_run == model.training["epochs_run"]
    assert np.array_equal(again.network.params, model.network.params)
    assert np.array_equal(again.loc, model.loc) and np.array_equal(again.scale, model.scale)


def test_refit_needs_training_rows_before_the_first_origin(a10_model):
    # 204 rows, lookback 24, horizon 6, 28 origins 6 apart: 192 rows forecast the first origin with the
    # stored model, but a refit there also needs validation rows and training windows (207 rows)
    args = ["evaluate", str(a10_model), str(A10), "--backtest", "28", "-q"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    result = CliRunner().invoke(cli, args + ["--refit"])
    assert result.exit_code == 65
    assert "has 204 rows, need at least 207 (--refit trains at the first origin" in result.stderr


def test_plot_written_whatever_the_gate_says(panel_model, tmp_path):
    args = ["evaluate", str(panel_model), str(SAMPLES / "departures_monthly_panel.csv"), "-q"]
    doc = json.loads(CliRunner().invoke(cli, args + ["--format", "json"]).stdout)
    for gate in ("naive", "seasonal_naive"):
        out = tmp_path / f"{gate}.png"
        result = CliRunner().invoke(cli, args + ["--fail-if-worse-than", gate, "--plot", str(out)])
        worse = doc["overall"]["lstm"]["mase"] > doc["overall"][gate]["mase"]
        assert result.exit_code == (3 if worse else 0), result.output
        assert png_size(out.read_bytes()) == (1440, 1110)
