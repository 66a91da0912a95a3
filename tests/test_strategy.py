"""`lstm train --strategy recursive`: a one-step network fed its own forecasts, `horizon` times.

The forecasts are checked against a by-hand recursion (Network.predict on windows grown with the
previous steps, anchors read from the grown sequence); the training windows, validation rows,
model file, refusals and the evaluate/refit/warm-start paths are checked on tiny models."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import frame, modelfile, windows
from lstm_cli.cli import cli
from lstm_cli.errors import ModelFileError, UsageError
from lstm_cli.evaluate import refit_request
from lstm_cli.pipeline import TrainRequest, load_model, train_on_series
from lstm_cli.train import TrainConfig

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
A10 = SAMPLES / "a10_monthly.csv"
PANEL = SAMPLES / "departures_monthly_panel.csv"
MACRO = SAMPLES / "us_macro_quarterly.csv"
FAST = ["--epochs", "2", "--hidden", "8", "-q"]


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def train(tmp_path: Path, name: str, data: Path, *options) -> Path:
    path = tmp_path / f"{name}.lstm"
    result = run("train", data, *options, "--out", path, *FAST)
    assert result.exit_code == 0, result.output
    return path


def raw_series(data: Path, header: dict) -> list[np.ndarray]:
    """Every series' raw rows (targets, then features), in the model's ids order, read with pandas."""
    d = header["data"]
    table = pd.read_csv(data)
    columns = d["targets"] + d["features"]
    if d["id_col"] is None:
        return [table[columns].to_numpy(np.float64)]
    ids = table[d["id_col"]].astype(str)
    return [table[ids == sid][columns].to_numpy(np.float64) for sid in header["series"]["ids"]]


def by_hand(model, histories: list[np.ndarray], horizon: int) -> np.ndarray:
    """The recursion written out: (S, horizon, K, nq) in original units, one row of `histories`
    per series of the model (raw rows, in its ids order). Step t's window is the `lookback` rows
    before t of the history followed by the forecasts so far; its anchor is the row one season
    before t ("seasonal"), the row before t ("level") or 0 ("series"), mixed with the row
    seasonal naive takes (one season before t, or the row before t) by the model's blend w:
    (1 - w) * anchor + w * that row. All series go through one
    Network.predict call per step, as in the forecaster (float32 results depend on the batch)."""
    spec, net = model.spec, model.network
    K, nq, L, S = len(spec.targets), max(1, len(spec.quantiles)), spec.lookback, len(histories)
    loc, scale = model.loc[:S], model.scale[:S]
    seqs = [list((h - loc[s]) / scale[s]) for s, h in enumerate(histories)]  # scaled rows; forecasts appended
    out = []
    for _ in range(horizon):
        ts = [len(seq) for seq in seqs]  # the index of the step being forecast, per series
        window = np.stack([np.array(seq[t - L :]) for seq, t in zip(seqs, ts, strict=True)])  # (S, L, C)
        inputs, base = windows.split_anchor(window, 1, K, spec.scaling, spec.season, spec.blend)
        w = spec.blend
        snaive_back = spec.season if 1 < spec.season <= L else 1
        snaive = np.stack([seq[t - snaive_back][:K] for seq, t in zip(seqs, ts, strict=True)])
        if spec.scaling == "series":
            np.testing.assert_array_equal(base[:, 0], 0.0 * (1 - w) + snaive * w)
            np.testing.assert_array_equal(inputs, window)
        else:
            back = spec.season if spec.scaling == "seasonal" else 1
            anchors = np.stack([seq[t - back][:K] for seq, t in zip(seqs, ts, strict=True)])
            np.testing.assert_array_equal(base[:, 0], anchors * (1 - w) + snaive * w if w else anchors)
            np.testing.assert_array_equal(inputs, window - window[:, -1:])
        raw = net.predict(inputs).astype(np.float64)
        assert raw.shape == (S, K * nq)  # one step per call
        y = np.sort(raw.reshape(S, K, nq) + base[:, 0, :, None], axis=2)
        out.append(y * scale[:, :K, None] + loc[:, :K, None])
        for s, seq in enumerate(seqs):
            seq.append(y[s, :, nq // 2])  # the median (the only column without quantiles) is fed back
    return np.stack(out, axis=1)


def predicted(model_path: Path, data: Path, header: dict, *extra) -> np.ndarray:
    """`lstm predict` parsed back into (S, h, K, nq), series in the model's ids order."""
    result = run("predict", model_path, data, "--precision", "17", *extra)  # every digit: the arithmetic is tested
    assert result.exit_code == 0, result.output
    d = header["data"]
    ids = header["series"]["ids"]
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    K, nq = len(d["targets"]), max(1, len(d["quantiles"]))
    h = len(rows) // len(ids)
    y = np.full((len(ids), h, K, nq), np.nan)
    step = dict.fromkeys(ids, 0)
    for row in rows:
        sid = row[d["id_col"]] if d["id_col"] else ids[0]
        for k, target in enumerate(d["targets"]):
            for q in range(nq):
                col = f"{target}_q{d['quantiles'][q]:g}" if d["quantiles"] else target
                y[ids.index(sid), step[sid], k, q] = float(row[col])
        step[sid] += 1
    assert not np.isnan(y).any()
    return y


CASES = {  # name: (csv, options); seasonal ones forecast beyond a season, so anchors land on forecasts
    "lstm_level": (A10, ["--target", "cost_million_aud", "--horizon", "5"]),
    "gru_seasonal_beyond_a_season": (A10, ["--cell", "gru", "--target", "cost_million_aud", "--horizon", "14",
                                           "--scaling", "seasonal"]),
    "lstm_series_2layer": (A10, ["--target", "cost_million_aud", "--horizon", "4", "--scaling", "series",
                                 "--layers", "2"]),
    "panel_quantiles_seasonal": (PANEL, ["--id-col", "series_id", "--target", "departures_thousands",
                                         "--horizon", "13", "--quantiles", "0.1,0.5,0.9", "--scaling", "seasonal"]),
    "gru_panel_quantiles_level": (PANEL, ["--cell", "gru", "--id-col", "series_id", "--target",
                                          "departures_thousands", "--horizon", "3", "--quantiles", "0.2,0.5,0.8"]),
}


@pytest.fixture(scope="module")
def recursive_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("recursive")
    return {name: (train(root, name, data, "--strategy", "recursive", *options), data)
            for name, (data, options) in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_recursive_forecast_is_the_network_fed_its_own_forecasts(recursive_models, name):
    path, data = recursive_models[name]
    model, header = load_model(path)
    d = header["data"]
    K, nq = len(d["targets"]), max(1, len(d["quantiles"]))
    assert d["strategy"] == "recursive" and model.spec.strategy == "recursive"
    assert header["arch"]["output_size"] == K * nq  # one step: targets x quantiles
    if "seasonal" in name:
        assert d["scaling"] == "seasonal" and d["season"] == 12 and d["horizon"] > d["season"]
    got = predicted(path, data, header)
    assert got.shape[1] == d["horizon"]
    np.testing.assert_allclose(got, by_hand(model, raw_series(data, header), d["horizon"]), rtol=1e-12, atol=0)


def test_first_step_is_the_one_step_output_on_the_last_window(recursive_models):
    path, data = recursive_models["lstm_level"]
    model, header = load_model(path)
    history = raw_series(data, header)[0]
    spec = model.spec
    xs = (history[-spec.lookback :] - model.loc[0]) / model.scale[0]
    snaive_row = spec.lookback - spec.season if 1 < spec.season <= spec.lookback else spec.lookback - 1
    anchor = xs[-1, 0] * (1 - spec.blend) + xs[snaive_row, 0] * spec.blend if spec.blend else xs[-1, 0]
    one_step = model.network.predict((xs - xs[-1])[None]).astype(np.float64)[0, 0] + anchor
    first = one_step * model.scale[0, 0] + model.loc[0, 0]
    forecast, _ = model.forecast(model.ids, history, np.array([0, len(history)]))
    assert forecast[0, 0, 0, 0] == pytest.approx(first, rel=1e-12)
    # the second step is not the network on the unchanged window: the first forecast was fed back
    again = model.network.predict((xs - xs[-1])[None]).astype(np.float64)[0, 0] + anchor
    assert forecast[0, 1, 0, 0] != pytest.approx(again * model.scale[0, 0] + model.loc[0, 0], rel=1e-9)


def test_longer_horizon_continues_the_same_recursion(recursive_models):
    path, data = recursive_models["panel_quantiles_seasonal"]
    model, header = load_model(path)
    H = header["data"]["horizon"]
    longer = predicted(path, data, header, "--horizon", H + 4)
    assert longer.shape[1] == H + 4
    np.testing.assert_array_equal(longer[:, :H], predicted(path, data, header))
    np.testing.assert_allclose(longer, by_hand(model, raw_series(data, header), H + 4), rtol=1e-12, atol=0)


def test_direct_stays_the_default_and_outputs_every_step(tmp_path):
    path = train(tmp_path, "direct", A10, "--target", "cost_million_aud", "--horizon", "5")
    header, _ = modelfile.load(path)
    assert header["data"]["strategy"] == "direct" and header["arch"]["output_size"] == 5
    info = run("info", path)
    assert info.exit_code == 0 and "horizon 5, direct" in info.output


def test_model_file_round_trips_and_info_shows_the_strategy(recursive_models, tmp_path):
    path, _ = recursive_models["panel_quantiles_seasonal"]
    model, header = load_model(path)
    again = tmp_path / "again.lstm"
    modelfile.save(again, *model.to_file_parts())
    assert again.read_bytes() == path.read_bytes()
    info = run("info", path)
    assert info.exit_code == 0, info.output
    assert "horizon 13, recursive" in info.output
    doc = json.loads(run("info", path, "--format", "json").stdout)
    assert doc["data"]["strategy"] == "recursive"


def test_model_file_checks_the_one_step_output_size(recursive_models):
    path, _ = recursive_models["lstm_level"]
    header, _ = modelfile.load(path)
    modelfile.validate_header(header)
    header = json.loads(json.dumps(header))
    header["data"]["strategy"] = "direct"  # a direct model of horizon 5 outputs 5 steps, not 1
    with pytest.raises(ModelFileError, match="arch.output_size"):
        modelfile.validate_header(header)


def test_features_are_refused_with_one_line_and_exit_2(tmp_path):
    out = tmp_path / "f.lstm"
    result = CliRunner().invoke(cli, ["train", str(MACRO), "--target", "real_gdp", "--features", "cpi",
                                      "--horizon", "4", "--strategy", "recursive", "--out", str(out), *FAST])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm: ")
    assert "--strategy recursive" in lines[0] and "features (cpi) whose future values are unknown" in lines[0]
    assert not out.exists()
    # and in the training core itself (evaluate --refit calls it)
    series = frame.read_series(str(MACRO), targets=("real_gdp",), features=("cpi",))
    req = TrainRequest(data=str(MACRO), out="", targets=("real_gdp",), features=("cpi",), horizon=4,
                       strategy="recursive", train=TrainConfig(epochs=1))
    with pytest.raises(UsageError, match="future values are unknown"):
        train_on_series(series, req)


def test_an_unknown_strategy_is_refused():
    result = run("train", A10, "--target", "cost_million_aud", "--horizon", "4", "--strategy", "both",
                 "--out", "x.lstm")
    assert result.exit_code == 2 and "--strategy" in result.output


@pytest.mark.parametrize("val_frac", [0.1, 0.01])
def test_recursive_trains_on_one_step_windows_and_holds_out_the_same_rows(val_frac):
    """Direct and recursive validate on the same last rows of each series (the rule takes the
    user's horizon even when a recursive model's windows are one step): with --val-frac 0.01 that
    is one horizon of rows, not 2% of them."""
    series = frame.read_series(str(PANEL), targets=("departures_thousands",), id_col="series_id")
    H, L = 6, 12
    lengths = np.diff(series.starts)
    held = np.array([windows.val_rows_for(int(n), val_frac, H) for n in lengths])
    if val_frac == 0.01:
        assert (held == H).all()
    seen = {}
    for strategy in ("direct", "recursive"):
        req = TrainRequest(data=str(PANEL), out="", targets=("departures_thousands",), id_col="series_id",
                           horizon=H, lookback=L, val_frac=val_frac, strategy=strategy, hidden=4,
                           train=TrainConfig(epochs=1))
        events = {}
        model, _ = train_on_series(series, req, on_event=lambda kind, x, events=events: events.setdefault(kind, x))
        seen[strategy] = (events["data"], model)
    recursive = seen["recursive"][0]
    steps = {"direct": H, "recursive": 1}
    for strategy, (info, model) in seen.items():
        w = steps[strategy]
        # validation windows: those whose last target row is among the held-out rows of its series
        assert info["val_windows"] == int(np.sum(np.minimum(held, lengths - L - w + 1))), strategy
        assert info["train_windows"] == int(np.sum(lengths - L - w + 1 - held)), strategy
        assert model.spec.strategy == strategy and model.network.arch.output_size == w
        assert model.spec.horizon == H
    assert recursive["val_windows"] == int(held.sum())  # one window per held-out row
    # both scalers are fitted on the same training rows
    np.testing.assert_array_equal(seen["direct"][1].loc, seen["recursive"][1].loc)
    np.testing.assert_array_equal(seen["direct"][1].scale, seen["recursive"][1].scale)


def test_make_windows_val_horizon_takes_the_users_horizon():
    values = np.arange(40, dtype=np.float64)[:, None]
    starts = np.array([0, 40])
    w = windows.make_windows(values, starts, 1, 5, 1, val_frac=0.05, val_horizon=6)
    held = windows.val_rows_for(40, 0.05, 6)
    assert held == 6
    assert sorted(w["y_val"][:, 0]) == list(range(40 - held, 40))  # the targets of the held-out rows
    assert w["y_train"][:, 0].max() == 40 - held - 1
    plain = windows.make_windows(values, starts, 1, 5, 1, val_frac=0.05)  # horizon 1's own rule
    assert len(plain["y_val"]) == windows.val_rows_for(40, 0.05, 1) == 2


def test_evaluate_and_refit_keep_the_strategy(recursive_models, tmp_path, monkeypatch):
    path, data = recursive_models["lstm_level"]
    model, _ = load_model(path)
    req, _ = refit_request(model, str(data), None)
    assert req.strategy == "recursive" and req.horizon == 5

    from lstm_cli import evaluate

    trained = []
    real = evaluate.train_on_series

    def spy(series, req, **kw):
        fitted, result = real(series, req, **kw)
        trained.append(fitted)
        return fitted, result

    monkeypatch.setattr(evaluate, "train_on_series", spy)
    for extra in ([], ["--refit"]):
        result = run("evaluate", path, data, "--backtest", "2", "--format", "json", "-q", *extra)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["header"]["mode"] == ("refit" if extra else "fixed") and doc["header"]["horizon"] == 5
        assert np.isfinite(doc["overall"]["lstm"]["mase"])
        if not extra:  # the last origin holds out the last 5 rows: the recursion from the rows before
            history = raw_series(data, load_model(path)[1])[0]
            want = by_hand(model, [history[:-5]], 5)[0, :, 0, 0]
            (rec,) = [r for r in doc["records"] if r["origin"] == 2 and r["method"] == "lstm"]
            assert rec["mae"] == pytest.approx(float(np.mean(np.abs(want - history[-5:, 0]))), rel=1e-9)
    assert len(trained) == 2
    assert all(m.spec.strategy == "recursive" and m.network.arch.output_size == 1 for m in trained)


def test_warm_start_keeps_the_recursive_strategy(recursive_models, tmp_path):
    path, data = recursive_models["lstm_level"]
    out = tmp_path / "warm.lstm"
    result = run("train", data, "--target", "cost_million_aud", "--horizon", "5", "--warm-start", path,
                 "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    header, _ = modelfile.load(out)
    assert header["data"]["strategy"] == "recursive" and header["arch"]["output_size"] == 1
