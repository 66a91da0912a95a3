"""Conformalized quantile regression (issue 18): a quantile model's band (q, 1 - q) is widened or
narrowed by the conformal quantile of max(lo - y, y - hi) / scale over the last origins, and never
crosses the median (lstm_cli.intervals, method "cqr")."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

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
GRID = ["--quantiles", "0.1,0.5,0.9"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def train(out: Path, *options) -> Path:
    result = run("train", A10, *TINY, "--horizon", "3", "--out", out, *options)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("cqr")
    return {"quantile": train(d / "q.lstm", *GRID),
            "point": train(d / "point.lstm"),
            "dir": d}


def predicted(path, *extra) -> pd.DataFrame:
    result = run("predict", path, A10, *extra)
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


# --- the formula, by hand ----------------------------------------------------------------------------


def ramp_series(n: int) -> frame.SeriesSet:
    """One series y_t = t: every window's mean absolute step (the scale) is 1."""
    return frame.SeriesSet(source="ramp", time_col="t", id_col=None, columns=("y",), n_targets=1, ids=("",),
                           starts=np.array([0, n], dtype=np.int64), values=np.arange(n, dtype=np.float64)[:, None],
                           times=np.arange(n, dtype=np.int64), time_kind="integer", step=1, freq=None, warnings=())


class Stub:
    """A quantile 'model' (grid 0.25, 0.5, 0.75) whose band around last + 1 + d has half-width w,
    both chosen by the history's length: the origin."""

    shift = {9: 0.5, 8: -2.0, 7: 0.0}
    half = {9: 1.0, 8: 1.0, 7: 3.0}

    def __init__(self):
        self.spec = SimpleNamespace(horizon=1, targets=("y",), lookback=2, quantiles=(0.25, 0.5, 0.75),
                                    has_known=False)

    def forecast(self, ids, values, starts, horizon, times=None, future=None):
        n = int(starts[1] - starts[0])
        centre = values[starts[1] - 1, 0] + 1 + self.shift[n]
        w = self.half[n]
        return np.array([centre - w, centre, centre + w]).reshape(1, 1, 1, 3), []


def test_cqr_score_is_max_of_lo_minus_y_and_y_minus_hi_and_its_quantile_may_be_negative():
    """Origins cut at 9, 8, 7 rows; the actual is last + 1, so E = |d| - w: -0.5, 1.0, -3.0 (scale 1).
    The 50% level (pair 0.25, 0.75) takes the ceil(4 x 0.5) = 2nd smallest: -0.5, a narrowing."""
    table = intervals.calibrate(Stub(), ramp_series(10), (50.0,), val_frac=0.2, origins=3)
    assert table["method"] == "cqr" and table["origins"] == 3 and table["scores"] == 3
    assert table["quantiles"] == [[[-0.5]]]


def test_cqr_bounds_widen_narrow_and_never_cross_the_median_by_hand():
    # window of the last 3 rows 0, 2, 4: scale 2
    series = SimpleNamespace(values=np.array([[0.0], [2.0], [4.0]]), starts=np.array([0, 3]))
    table = {"levels": [80.0], "scale": intervals.SCALE, "method": "cqr", "origins": 1, "scores": 1,
             "quantiles": [[[0.5], [-0.25], [-1.0]]]}
    model = SimpleNamespace(intervals=table, spec=SimpleNamespace(quantiles=(0.1, 0.5, 0.9), lookback=3))
    forecast = np.array([[8.0, 10.0, 12.0], [9.0, 10.0, 11.0], [9.0, 10.0, 11.0]]).reshape(1, 3, 1, 3)
    lo, hi = intervals.bounds(model, forecast, series, (80.0,))[80.0]
    # step 1: Q 0.5 widens by 1 on each side; step 2: Q -0.25 narrows by 0.5;
    # step 3: Q -1 would give lo 11 > hi 9: both clamp at the median 10
    assert lo[0, :, 0].tolist() == [7.0, 9.5, 10.0]
    assert hi[0, :, 0].tolist() == [13.0, 10.5, 10.0]
    # a quantile grid without 0.5: the point is the middle column (nq // 2), as the recursive roll takes it
    assert intervals.point_index(1) == 0 and intervals.point_index(3) == 1 and intervals.point_index(4) == 2


def test_train_levels_defaults_to_the_grid_s_central_levels_and_refuses_others():
    assert intervals.train_levels(None, ()) == (80.0, 95.0)
    assert intervals.train_levels(None, (0.1, 0.5, 0.9)) == (80.0,)
    assert intervals.train_levels(None, (0.025, 0.1, 0.5, 0.9, 0.975)) == (80.0, 95.0)
    assert intervals.train_levels(None, (0.5,)) == ()  # no pair: no intervals, silently
    assert intervals.train_levels((), (0.1, 0.9)) == ()
    with pytest.raises(Exception, match="gives the levels 80, not 90; .* add 0.05,0.95 to --quantiles"):
        intervals.train_levels((90.0,), (0.1, 0.5, 0.9))


# --- coverage ------------------------------------------------------------------------------------------


def test_conformalized_80_band_of_a_short_trained_quantile_model_covers_80_percent(tmp_path):
    """4 series of a seasonal signal plus N(0, 1) noise, a quantile model of 4 cells trained 1 epoch
    (its 0.1-0.9 band is far too narrow: it covered 59%): calibrated on the first 300 rows, the
    conformalized 80% band covers within 5 points of 80% at the 97 origins after them."""
    n_train, n_all, H = 300, 400, 3
    series, everything = gaussian_seasonal_panel(tmp_path, n_train, n_all)
    req = TrainRequest(data="", out="", targets=("y",), horizon=H, time_col="t", id_col="id", hidden=4,
                       lookback=24, val_frac=0.25, threads=1, quantiles=(0.1, 0.5, 0.9),
                       train=TrainConfig(epochs=1, seed=1))
    model, _ = train_on_series(series, req)
    intervals.attach(model, intervals.calibrate(model, series, (80.0,), val_frac=0.25))
    assert model.intervals["method"] == "cqr" and model.intervals["origins"] == 75 - H + 1
    from lstm_cli.evaluate import _truncate

    cqr, raw = [], []
    for cut in range(n_train, n_all - H + 1):
        history = _truncate(everything, np.full(4, cut))
        forecast, _ = model.forecast(history.ids, history.values, history.starts, H)
        actual = everything.values[everything.starts[:-1, None] + cut + np.arange(H)][..., :1]
        lo, hi = intervals.bounds(model, forecast, history, (80.0,))[80.0]
        cqr.append((lo <= actual) & (actual <= hi))
        raw.append((forecast[..., 0] <= actual) & (actual <= forecast[..., 2]))
    coverage, before = 100 * np.mean(cqr), 100 * np.mean(raw)
    assert abs(coverage - 80) < 5, (coverage, before)
    assert before < 70, (coverage, before)  # the network's own band was too narrow: CQR widened it


# --- train and predict -----------------------------------------------------------------------------------


def test_a_quantile_model_is_conformalized_at_its_grid_s_levels_by_default(models):
    table = modelfile.load_header(models["quantile"])["intervals"]
    assert table["method"] == "cqr" and table["levels"] == [80.0] and np.shape(table["quantiles"]) == (1, 3, 1)
    assert modelfile.load_header(models["point"])["intervals"]["method"] == "absolute"


def test_predict_adds_the_conformalized_band_after_the_quantile_columns_by_the_formula(models):
    plain = predicted(models["quantile"])
    df = predicted(models["quantile"], "--intervals", "all")
    qs = [f"{TARGET}_q0.1", f"{TARGET}_q0.5", f"{TARGET}_q0.9"]
    assert list(df.columns) == ["date", *qs, f"{TARGET}_lo80", f"{TARGET}_hi80"]
    pd.testing.assert_frame_equal(df[["date", *qs]], plain)  # the network's quantiles are unchanged
    model, header = load_model(str(models["quantile"]))
    Q = np.array(header["intervals"]["quantiles"][0])[:, 0]  # (3,) per step
    y = pd.read_csv(A10)[TARGET].to_numpy()[-model.spec.lookback:]
    s = np.mean(np.abs(np.diff(y)))
    np.testing.assert_allclose(df[f"{TARGET}_lo80"], np.minimum(df[qs[0]] - Q * s, df[qs[1]]), rtol=1e-5)
    np.testing.assert_allclose(df[f"{TARGET}_hi80"], np.maximum(df[qs[2]] + Q * s, df[qs[1]]), rtol=1e-5)
    assert (df[f"{TARGET}_lo80"] <= df[qs[1]]).all() and (df[qs[1]] <= df[f"{TARGET}_hi80"]).all()


def test_train_summary_says_conformalized_quantiles(models):
    result = run("train", A10, *[a for a in TINY if a != "-q"], "--horizon", "3", *GRID,
                 "--out", models["dir"] / "s.lstm", "--calibration-windows", "4")
    assert result.exit_code == 0, result.output
    assert "80% conformalized quantiles, from 4 origins (4 errors per step)" in result.output


def test_an_ensemble_of_quantile_models_is_conformalized(models):
    path = train(models["dir"] / "ens.lstm", *GRID, "--ensemble", "2")
    assert modelfile.load_header(path)["intervals"]["method"] == "cqr"
    df = predicted(path, "--intervals", "80")
    assert (df[f"{TARGET}_lo80"] <= df[f"{TARGET}_q0.5"]).all()
    assert (df[f"{TARGET}_q0.5"] <= df[f"{TARGET}_hi80"]).all()


def test_a_grid_without_a_pair_trains_without_intervals_and_predict_says_why(models):
    path = train(models["dir"] / "median.lstm", "--quantiles", "0.5")
    assert "intervals" not in modelfile.load_header(path)
    result = run("predict", path, A10, "--intervals", "80")
    assert result.exit_code == EXIT_USAGE and "has no pair q, 1 - q" in result.output, result.output
    bad = run("train", A10, *TINY, "--horizon", "3", "--quantiles", "0.5", "--calibration-windows", "3",
              "--out", models["dir"] / "cw.lstm")
    assert bad.exit_code == EXIT_USAGE and "--calibration-windows" in bad.output, bad.output
    assert not (models["dir"] / "cw.lstm").exists()


def test_a_warm_start_of_a_quantile_model_calibrates_what_the_model_is(models):
    """--intervals 80 is checked against the old model's grid (known only once it is loaded)."""
    old = train(models["dir"] / "old.lstm", *GRID, "--intervals", "none")
    assert "intervals" not in modelfile.load_header(old)
    asked = train(models["dir"] / "warm.lstm", "--warm-start", old, "--intervals", "80")
    assert modelfile.load_header(asked)["intervals"]["method"] == "cqr"
    default = train(models["dir"] / "warm2.lstm", "--warm-start", old)
    assert modelfile.load_header(default)["intervals"]["levels"] == [80.0]
    result = run("train", A10, *TINY, "--horizon", "3", "--warm-start", old, "--intervals", "90",
                 "--out", models["dir"] / "warm3.lstm")
    assert result.exit_code == EXIT_USAGE and "gives the levels 80, not 90" in result.output, result.output
    assert not (models["dir"] / "warm3.lstm").exists()


# --- the model file --------------------------------------------------------------------------------------


def rewritten(path, tmp_path, change) -> Path:
    header, arrays = modelfile.load(path)
    header = {k: v for k, v in header.items() if k not in ("arrays", "payload_sha256", "header_sha256")}
    change(header)
    out = tmp_path / "changed.lstm"
    modelfile.save(out, header, arrays, schema=False)
    return out


@pytest.mark.parametrize("model, change, message", [
    ("point", lambda h: h["intervals"].__setitem__("method", "cqr"), "of method cqr are for quantile models"),
    ("quantile", lambda h: h["intervals"].pop("method"), "of method absolute are for point models"),
    ("quantile", lambda h: h["intervals"].__setitem__("method", "mystery"), "intervals.method"),
    ("quantile", lambda h: h["intervals"].__setitem__("levels", [90.0]), "quantile grid 0.1,0.5,0.9 has no pair"),
    ("point", lambda h: h["intervals"]["quantiles"][0][0].__setitem__(0, -0.5), "intervals.quantiles[0][0][0]"),
])
def test_a_table_the_model_cannot_use_is_refused_on_load_with_exit_65(models, tmp_path, model, change, message):
    result = run("predict", rewritten(models[model], tmp_path, change), A10)
    assert result.exit_code == EXIT_DATA, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_negative_cqr_quantile_loads_and_narrows_the_band(models, tmp_path):
    def narrow(header):
        header["intervals"]["quantiles"] = [[[-0.01]] * 3]
    df = predicted(rewritten(models["quantile"], tmp_path, narrow), "--intervals", "80")
    assert (df[f"{TARGET}_lo80"] >= df[f"{TARGET}_q0.1"]).all()
    assert (df[f"{TARGET}_hi80"] <= df[f"{TARGET}_q0.9"]).all()


def test_a_dense_grid_gets_no_default_intervals_with_a_note_and_too_many_levels_are_refused(models):
    dense = ",".join(f"{i / 250:g}" for i in range(1, 250))  # 124 central levels: more than a table holds
    result = run("train", A10, *[a for a in TINY if a != "-q"], "--horizon", "3", "--quantiles", dense,
                 "--out", models["dir"] / "dense.lstm")
    assert result.exit_code == 0, result.output
    assert "124 central levels" in result.output and "none are calibrated" in result.output
    assert "intervals" not in modelfile.load_header(models["dir"] / "dense.lstm")
    levels = ",".join(f"{v / 2:g}" for v in range(2, 200))  # 198 levels
    result = run("train", A10, *TINY, "--horizon", "3", "--intervals", levels, "--out", models["dir"] / "many.lstm")
    assert result.exit_code == EXIT_USAGE and "198 levels, more than the 100" in result.output, result.output
