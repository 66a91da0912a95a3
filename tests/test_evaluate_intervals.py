"""`lstm evaluate` scores a model's conformal intervals (issue 18): coverage, width and Winkler score
per level for the lstm (the bounds predict --intervals gives) next to the seasonal naive's empirical
band; --refit calibrates each origin's model; --fail-if-coverage-below gates on coverage; --plot
shades the band; both engines agree (and predict --intervals works with --engine dask)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_cli import baselines, intervals, metrics, modelfile
from lstm_cli.cli import cli
from lstm_cli.errors import EXIT_DATA, EXIT_USAGE, EXIT_WORSE_THAN_BASELINE

A10 = Path(__file__).resolve().parents[1] / "sample_data" / "a10_monthly.csv"
TARGET = "cost_million_aud"
H = 6
TINY = ["--target", TARGET, "--horizon", str(H), "--hidden", "4", "--epochs", "2", "--threads", "1", "-q"]
SCORES = ("coverage", "width", "winkler")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def train(out: Path, *options) -> Path:
    result = run("train", A10, *TINY, "--out", out, *options)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_intervals")
    return {"point": train(d / "point.lstm"),  # the default: 80 and 95
            "none": train(d / "none.lstm", "--intervals", "none"),
            "narrow": train(d / "narrow.lstm", "--intervals", "20,80"),  # a 20% band misses most actuals
            "dir": d}


def evaluate(model, *extra, code=0, data=A10):
    result = run("evaluate", model, data, *extra)
    assert result.exit_code == code, result.output
    return result


def evaluate_json(model, *extra):
    return json.loads(evaluate(model, "--format", "json", "-q", *extra).stdout)


@pytest.fixture(scope="module")
def point_doc(models):
    return evaluate_json(models["point"], "--backtest", "2")


def a10_values():
    with open(A10, newline="") as fh:
        return np.array([float(r[TARGET]) for r in csv.DictReader(fh)])


# --- scores ----------------------------------------------------------------------------------------


def test_point_model_json_has_coverage_width_winkler_at_80_and_95_for_lstm_and_seasonal_naive(point_doc):
    assert point_doc["header"]["intervals"] == {"levels": [80.0, 95.0], "kind": "conformal"}
    keys = {f"{name}_{level}" for level in ("80", "95") for name in SCORES}
    for method in ("lstm", "seasonal_naive"):
        assert keys <= set(point_doc["overall"][method])
        for rec in (r for r in point_doc["records"] if r["method"] == method):
            assert keys <= set(rec) and all(rec[k] is not None for k in keys)
            assert rec["width_95"] >= rec["width_80"] > 0
            assert rec["winkler_80"] >= rec["width_80"]  # the score adds each miss to the width
    for method in ("naive", "theta"):
        assert not keys & set(point_doc["overall"][method])
    assert "wql" not in point_doc["overall"]["lstm"]  # no quantiles: no quantile scores


def test_the_scores_are_those_of_predict_intervals_on_the_truncated_data(models, point_doc, tmp_path):
    """Origin 1 of 2: the model forecasts from the rows before n - 2H; predict --intervals on exactly
    those rows gives the band evaluate must score (not the last origin's, nor the whole file's scale)."""
    values = a10_values()
    cut = len(values) - 2 * H
    past, actual = values[:cut], values[cut : cut + H]
    truncated = tmp_path / "cut.csv"
    truncated.write_text("".join(A10.read_text().splitlines(keepends=True)[: 1 + cut]))
    pred = run("predict", models["point"], truncated, "--intervals", "all", "--format", "json", "-q")
    assert pred.exit_code == 0, pred.output
    rows = json.loads(pred.stdout)["forecast"]
    records = {r["method"]: r for r in point_doc["records"] if r["origin"] == 1}
    point = np.array([r[TARGET] for r in rows])
    assert records["lstm"]["mae"] == pytest.approx(metrics.mae(actual, point), rel=1e-5)
    for level in ("80", "95"):
        lo = np.array([r[f"{TARGET}_lo{level}"] for r in rows])
        hi = np.array([r[f"{TARGET}_hi{level}"] for r in rows])
        expected = metrics.interval_scores(actual, lo, hi, float(level) / 100)
        for name in SCORES:
            assert records["lstm"][f"{name}_{level}"] == pytest.approx(expected[name], rel=1e-5, abs=1e-5), name
        # the seasonal naive's own band at the same level, from its past errors
        season = point_doc["header"]["season"]
        f = baselines.seasonal_naive(past, H, season)
        half = metrics.empirical_half_widths(past, H, season, float(level) / 100)
        expected = metrics.interval_scores(actual, f - half, f + half, float(level) / 100)
        for name in SCORES:
            assert records["seasonal_naive"][f"{name}_{level}"] == pytest.approx(expected[name], rel=1e-9)
    # the two origins' bands differ (each from its own window): origin 2 is not origin 1's band again
    second = next(r for r in point_doc["records"] if r["origin"] == 2 and r["method"] == "lstm")
    assert second["width_80"] != pytest.approx(records["lstm"]["width_80"], rel=1e-6)


def test_a_model_without_intervals_has_no_interval_keys(models):
    doc = evaluate_json(models["none"])
    assert doc["header"]["intervals"] is None
    keys = {k for r in doc["records"] for k in r} | {k for o in doc["overall"].values() for k in o}
    assert not {k for k in keys if k.startswith(("coverage", "width", "winkler"))}
    labels = [line.split()[0] for line in evaluate(models["none"]).stdout.splitlines()[1:]]
    assert labels[:4] == ["lstm", "naive", "seasonal_naive", "theta"]
    assert "intervals" not in labels and not [x for x in labels if x.endswith("%")]


def test_table_shows_one_line_per_level_and_says_the_band_is_conformal(models):
    out = evaluate(models["point"]).stdout
    lines = [line.split() for line in out.splitlines() if "% interval" in line]
    assert [line[:2] for line in lines] == [["80%", "interval"], ["95%", "interval"]]
    for line in lines:
        assert line[2:4] == ["lstm", "coverage"] and "seasonal_naive" in line and line.count("winkler") == 2
    kind = next(line for line in out.splitlines() if line.split()[:1] == ["intervals"])
    assert "conformal" in kind
    lstm_line = next(line for line in out.splitlines() if line.split()[:1] == ["lstm"])
    assert "coverage_80" not in lstm_line and "width_95" not in lstm_line  # on their own lines only


def test_csv_records_carry_the_interval_columns(models):
    rows = list(csv.DictReader(io.StringIO(evaluate(models["point"], "--format", "csv", "-q").stdout)))
    assert {"coverage_80", "width_80", "winkler_80", "coverage_95", "width_95", "winkler_95"} <= set(rows[0])
    by_method = {r["method"]: r for r in rows}
    assert float(by_method["lstm"]["width_95"]) > 0 and by_method["seasonal_naive"]["winkler_80"] != ""
    assert by_method["naive"]["coverage_80"] == "" and list(rows[0])[-1] == "in_sample"


def test_quantile_model_without_a_table_scores_its_quantile_pairs(models):
    path = train(models["dir"] / "q_none.lstm", "--quantiles", "0.1,0.5,0.9", "--intervals", "none")
    doc = evaluate_json(path)
    assert doc["header"]["intervals"] == {"levels": [80.0], "kind": "quantiles"}
    assert {"coverage_80", "winkler_80", "wql"} <= set(doc["overall"]["lstm"]) and "coverage_95" not in doc["overall"]["lstm"]
    kind = next(line for line in evaluate(path).stdout.splitlines() if line.split()[:1] == ["intervals"])
    assert "quantile pairs" in kind


def test_a_conformalized_quantile_model_is_scored_on_its_conformalized_band(models, tmp_path):
    path = train(models["dir"] / "q.lstm", "--quantiles", "0.1,0.5,0.9")
    if "intervals" not in modelfile.load_header(path):
        pytest.skip("this build does not calibrate quantile models")
    doc = evaluate_json(path)
    assert doc["header"]["intervals"] == {"levels": [80.0], "kind": "conformal"}
    values = a10_values()
    actual = values[-H:]
    truncated = tmp_path / "cut.csv"
    truncated.write_text("".join(A10.read_text().splitlines(keepends=True)[: 1 + len(values) - H]))
    pred = run("predict", path, truncated, "--intervals", "80", "--format", "json", "-q")
    assert pred.exit_code == 0, pred.output
    rows = json.loads(pred.stdout)["forecast"]
    lo, hi = (np.array([r[f"{TARGET}_{side}80"] for r in rows]) for side in ("lo", "hi"))
    lstm = next(r for r in doc["records"] if r["method"] == "lstm")
    expected = metrics.interval_scores(actual, lo, hi, 0.8)
    for name in SCORES:
        assert lstm[f"{name}_80"] == pytest.approx(expected[name], rel=1e-5, abs=1e-5), name
    raw_lo, raw_hi = (np.array([r[f"{TARGET}_q{q}"] for r in rows]) for q in ("0.1", "0.9"))
    assert lstm["coverage_0.1_0.9"] == pytest.approx(metrics.coverage(actual, raw_lo, raw_hi))  # the raw band's


# --- --refit ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refit_doc(models):
    return evaluate_json(models["point"], "--backtest", "2", "--refit")


def test_refit_calibrates_every_origins_model(refit_doc, point_doc):
    assert refit_doc["header"]["intervals"] == {"levels": [80.0, 95.0], "kind": "conformal"}
    lstm = [r for r in refit_doc["records"] if r["method"] == "lstm"]
    assert len(lstm) == 2 and all(r[f"{n}_{v}"] is not None for r in lstm for n in SCORES for v in ("80", "95"))
    # the width is 2 x quantile x the window's scale: with the evaluated model's table it would equal the
    # fixed run's at the same origin (same window); each refit model has its own calibration
    fixed = [r for r in point_doc["records"] if r["method"] == "lstm"]
    assert all(r["width_80"] != pytest.approx(f["width_80"], rel=1e-6) for r, f in zip(lstm, fixed, strict=True))
    # the seasonal naive's band does not depend on the mode
    snaive = [(r["winkler_80"], r["winkler_95"]) for r in refit_doc["records"] if r["method"] == "seasonal_naive"]
    assert snaive == [(r["winkler_80"], r["winkler_95"]) for r in point_doc["records"]
                      if r["method"] == "seasonal_naive"]


def test_refit_table_says_each_origins_model_is_calibrated(models):
    out = evaluate(models["point"], "--refit").stdout
    kind = next(line for line in out.splitlines() if line.split()[:1] == ["intervals"])
    assert "each origin's model calibrated as train does" in kind


def test_refit_origin_that_cannot_be_calibrated_has_no_interval_scores(models, monkeypatch):
    calls = []

    def not_calibrated(model, series, levels, **kw):
        calls.append(tuple(levels))
        raise intervals.NotCalibrated("no finite error")

    monkeypatch.setattr(intervals, "calibrate", not_calibrated)
    result = run("evaluate", models["point"], A10, "--refit", "--format", "json")
    assert result.exit_code == 0, result.output
    assert calls == [(80.0, 95.0)]  # the evaluated model's levels
    assert "--refit: origin 1 has no interval scores: no finite error" in result.stderr
    lstm = next(r for r in json.loads(result.stdout)["records"] if r["method"] == "lstm")
    assert lstm["coverage_80"] is None and lstm["winkler_95"] is None and lstm["mae"] is not None
    gated = run("evaluate", models["point"], A10, "--refit", "-q", "--fail-if-coverage-below", "80")
    assert gated.exit_code == EXIT_DATA, gated.output
    assert "--fail-if-coverage-below 80: the coverage of the 80% interval is undefined" in gated.stderr


# --- --fail-if-coverage-below ----------------------------------------------------------------------


def test_coverage_gate_passes_at_a_low_minimum_and_exits_3_when_the_band_misses(models):
    doc = evaluate_json(models["narrow"], "--backtest", "2")
    found = doc["overall"]["lstm"]["coverage_20"]
    assert found < 100  # a 20% band over 12 actuals misses some: the gate below must fail
    evaluate(models["narrow"], "--backtest", "2", "-q", "--fail-if-coverage-below", "20:0")
    evaluate(models["narrow"], "--backtest", "2", "-q", "--fail-if-coverage-below", f"20:{found - 1e-6:.9f}")  # at it: ok
    result = evaluate(models["narrow"], "--backtest", "2", "-q", "--fail-if-coverage-below", "80:0",
                      "--fail-if-coverage-below", "20:100", code=EXIT_WORSE_THAN_BASELINE)
    assert result.stderr == f"lstm: the 20% interval covered {found:.4g}% of the actuals, below the minimum 100%\n"
    assert result.stdout == ""  # -q: the table is not printed, the exit code answers


def test_coverage_gate_text_and_its_default_minimum():
    from lstm_cli.evaluate import parse_coverage_gate

    assert parse_coverage_gate("80") == (80.0, 80.0)  # MIN defaults to LEVEL
    assert parse_coverage_gate("95:90") == (95.0, 90.0)
    assert parse_coverage_gate("99.5:0") == (99.5, 0.0)
    from lstm_cli.errors import UsageError

    for bad in ("80:", ":80", "101", "abc", "80:120", "80:80:80", "nan", ""):
        with pytest.raises(UsageError):
            parse_coverage_gate(bad)


def test_coverage_gate_without_min_gates_at_the_level(models):
    doc = evaluate_json(models["narrow"], "--backtest", "2")
    found = doc["overall"]["lstm"]["coverage_20"]
    codes = {gate: run("evaluate", models["narrow"], A10, "--backtest", "2", "-q", "--fail-if-coverage-below",
                       gate).exit_code for gate in ("20", "20:20")}
    assert codes["20"] == codes["20:20"] == (EXIT_WORSE_THAN_BASELINE if found < 20 else 0)


def test_coverage_gate_composes_with_the_mase_gate_mase_named_first(models):
    doc = evaluate_json(models["narrow"], "--backtest", "2")
    worse = [b for b in ("theta", "seasonal_naive", "naive")
             if doc["overall"]["lstm"]["mase"] > doc["overall"][b]["mase"]]
    assert worse  # the 2-epoch model loses to some baseline
    result = evaluate(models["narrow"], "--backtest", "2", "-q", "--fail-if-coverage-below", "20:100",
                      "--fail-if-worse-than", worse[0], code=EXIT_WORSE_THAN_BASELINE)
    line = result.stderr.strip()
    assert line.startswith("lstm: MASE ") and f"of {worse[0]}; the 20% interval covered" in line
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("model, gate, message", [
    ("point", "90", "the model has no 90% interval; it has 80, 95% (its conformal table)"),
    ("none", "80", "the model has no 80% interval; it has no intervals"),
    ("point", "100", "give LEVEL[:MIN] in percent"),
    ("point", "80:101", "give LEVEL[:MIN] in percent"),
    ("point", "eighty", "give LEVEL[:MIN] in percent"),
])
def test_coverage_gate_refuses_a_level_the_model_lacks_before_reading_the_data(models, gate, model, message):
    # the data does not exist (exit 66 once read): the gate is refused first
    result = evaluate(models[model], "--fail-if-coverage-below", gate, data=models["dir"] / "missing.csv",
                      code=EXIT_USAGE)
    assert message in result.stderr and len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output


def test_help_documents_the_coverage_gate():
    out = run("evaluate", "--help").output
    assert "--fail-if-coverage-below" in out and "95:90" in out
    top = run("--help").output
    assert "--fail-if-coverage-below" in top  # the exit-code table's line for 3


# --- --plot ----------------------------------------------------------------------------------------


BAND = np.array([215, 231, 242])  # FORECAST_COLOR at alpha 0.18 over white


def band_pixels(png: Path) -> int:
    import matplotlib.image

    rgb = np.round(matplotlib.image.imread(str(png))[:, :, :3] * 255).astype(int)
    return int(np.all(np.abs(rgb - BAND) <= 2, axis=2).sum())


def test_plot_shades_the_widest_conformal_band(models, tmp_path):
    pytest.importorskip("matplotlib")
    from lstm_cli.evaluate import evaluate_from_csv
    from lstm_cli.plot import band_label

    ev = evaluate_from_csv(str(models["point"]), str(A10), backtests=2, plot_panels=1)
    assert band_label(ev) == "95% conformal interval"
    lstm = [r for r in ev.records if r["method"] == "lstm"]
    for origin, rec in zip(ev.panels[0].origins, lstm, strict=True):
        assert (origin.lo <= origin.lstm).all() and (origin.lstm <= origin.hi).all()
        assert np.mean(origin.hi - origin.lo) == pytest.approx(rec["width_95"])  # the 95% band, not 80%
    shaded = {}
    for name in ("point", "none"):
        out = tmp_path / f"{name}.png"
        result = evaluate(models[name], "--backtest", "2", "--plot", out)
        assert f"plot written to {out}" in result.stderr
        shaded[name] = band_pixels(out)
    assert shaded["none"] < 100 < 2000 < shaded["point"]  # (a few antialiased edges match too)


# --- --engine dask ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    """Five series of different lengths, a model trained on them (default intervals)."""
    d = tmp_path_factory.mktemp("eval_intervals_panel")
    rng = np.random.default_rng(4)
    lines = ["id,t,y"]
    for s, n in enumerate((40, 52, 47, 60, 44)):
        t = np.arange(n)
        y = 20 + 5 * s + 4 * np.sin(2 * np.pi * t / 12) + rng.normal(size=n)
        lines += [f"s{s},{i},{v:.4f}" for i, v in zip(t, y, strict=True)]
    data = d / "panel.csv"
    data.write_text("\n".join(lines) + "\n")
    model = d / "panel.lstm"
    result = run("train", data, "--target", "y", "--time-col", "t", "--id-col", "id", "--horizon", 4,
                 "--lookback", 12, "--hidden", 4, "--epochs", 2, "--threads", 1, "--out", model, "-q")
    assert result.exit_code == 0, result.output
    return data, model


def test_dask_evaluate_scores_the_intervals_as_the_local_engine(cluster, panel):
    data, model = panel
    local = json.loads(evaluate(model, "--backtest", "2", "--format", "json", "-q", data=data).stdout)
    remote = json.loads(evaluate(model, "--backtest", "2", "--format", "json", "-q", "--engine", "dask",
                                 "--scheduler", cluster.scheduler_address, data=data).stdout)
    assert remote["header"] == local["header"] and local["header"]["intervals"]["kind"] == "conformal"
    assert [list(r) for r in remote["records"]] == [list(r) for r in local["records"]]
    keys = [f"{n}_{v}" for v in ("80", "95") for n in SCORES]
    for got, want in zip(remote["records"], local["records"], strict=True):
        for k in keys:
            if k in want:
                assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-9), (k, got, want)
    # a level the model lacks: exit 2 before the cluster is asked for anything
    bad = evaluate(model, "--engine", "dask", "--scheduler", cluster.scheduler_address,
                   "--fail-if-coverage-below", "90", code=EXIT_USAGE, data=data)
    assert "no 90% interval" in bad.stderr


def test_dask_predict_writes_the_local_engines_interval_csv(cluster, models, tmp_path):
    """One series (one partition, the same kernel path as locally): the same bytes."""
    local = run("predict", models["point"], A10, "--intervals", "all")
    assert local.exit_code == 0, local.output
    out = tmp_path / "f.csv"
    remote = run("predict", models["point"], A10, "--intervals", "all", "--engine", "dask",
                 "--scheduler", cluster.scheduler_address, "--out", out, "-q")
    assert remote.exit_code == 0, remote.output
    assert out.read_bytes() == local.stdout.encode()
    assert local.stdout.splitlines()[0].endswith(f"{TARGET}_lo95,{TARGET}_hi95")
    refused = run("predict", models["point"], A10, "--intervals", "90", "--engine", "dask",
                  "--scheduler", cluster.scheduler_address, "--out", tmp_path / "g.csv")
    assert refused.exit_code == EXIT_USAGE and "not 90" in refused.stderr and not (tmp_path / "g.csv").exists()


def test_dask_predict_panel_intervals_equal_local_rows(cluster, panel, tmp_path):
    import pandas as pd

    data, model = panel
    local = run("predict", model, data, "--intervals", "80")
    assert local.exit_code == 0, local.output
    want = pd.read_csv(io.StringIO(local.stdout)).sort_values(["id", "t"]).reset_index(drop=True)
    out = tmp_path / "parts"
    remote = run("predict", model, data, "--intervals", "80", "--engine", "dask",
                 "--scheduler", cluster.scheduler_address, "--out", out, "-q")
    assert remote.exit_code == 0, remote.output
    got = pd.concat([pd.read_csv(p) for p in sorted(out.iterdir())]).sort_values(["id", "t"]).reset_index(drop=True)
    assert list(got.columns) == ["t", "id", "y", "y_lo80", "y_hi80"]
    pd.testing.assert_frame_equal(got, want, rtol=1e-6)
    assert not math.isnan(got["y_lo80"].sum())


def test_coverage_gate_on_a_quantile_grid_without_a_pair_names_the_quantiles_to_add(tmp_path):
    model = train(tmp_path / "q5.lstm", "--quantiles", "0.5")
    result = run("evaluate", model, A10, "--fail-if-coverage-below", "95")
    assert result.exit_code == EXIT_USAGE
    assert "retrain it with 0.025,0.975 in --quantiles" in result.output
