"""--blend W: the forecast is (1 - W) x the network's forecast + W x seasonal naive. The anchor
mixing is checked by hand, the trained models against their unblended twins and seasonal naive
computed from the raw CSV, the exports against the forecaster."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import modelfile, windows
from lstm_cli.cli import cli
from lstm_cli.errors import ModelFileError
from lstm_cli.evaluate import refit_request
from lstm_cli.pipeline import load_model

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "a10_monthly.csv"
NILE = Path(__file__).resolve().parent / "data" / "nile_yearly.csv"
TARGET = "cost_million_aud"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def train(out, *args, data=SAMPLE, target=TARGET):
    result = run("train", data, "--target", target, "--epochs", "3", "--hidden", "4", "--threads", "1",
                 "--seed", "3", "-q", "--out", out, *args)
    assert result.exit_code == 0, result.output
    return out


def predicted(model, data=SAMPLE, target=TARGET) -> np.ndarray:
    result = run("predict", model, data, "--precision", "17")  # every digit: the arithmetic is tested
    assert result.exit_code == 0, result.output
    return np.array([float(r[target]) for r in csv.DictReader(io.StringIO(result.stdout))])


@pytest.mark.parametrize("scaling", ["level", "seasonal", "series"])
def test_split_anchor_mixes_seasonal_naive_into_the_anchor(scaling):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8, 2))  # lookback 8, two columns (one target)
    snaive = x[:, [5, 6, 7, 5, 6], :1]  # season 3: the row one season before each of the 5 steps
    anchor = {"level": x[:, [7] * 5, :1], "seasonal": snaive, "series": np.zeros((3, 5, 1))}[scaling]
    inputs0, _ = windows.split_anchor(x, 5, 1, scaling, 3)
    inputs, base = windows.split_anchor(x, 5, 1, scaling, 3, blend=0.25)
    np.testing.assert_array_equal(inputs, inputs0)  # the network's inputs do not change
    np.testing.assert_array_equal(base, anchor * 0.75 + snaive * 0.25)
    if scaling != "seasonal":  # no season, or one longer than the window: the partner is naive
        anchor = {"level": x[:, [7, 7], :1], "series": np.zeros((3, 2, 1))}[scaling]
        for season in (1, 12):
            _, base = windows.split_anchor(x, 2, 1, scaling, season, blend=0.25)
            np.testing.assert_array_equal(base, anchor * 0.75 + x[:, [7, 7], :1] * 0.25)


def test_blended_forecast_is_the_combination_with_seasonal_naive(tmp_path):
    """Same seed and data: the blended model's forecast is half the unblended one plus half
    seasonal naive (the last 12 months of the CSV), and its head is exactly half the other's."""
    plain = train(tmp_path / "plain.lstm", "--horizon", "15", "--blend", "0")
    half = train(tmp_path / "half.lstm", "--horizon", "15")  # the default: 0.5
    (h0, a0), (h1, a1) = modelfile.load(plain), modelfile.load(half)
    assert h0["data"]["blend"] == 0.0 and h1["data"]["blend"] == 0.5 and h1["data"]["season"] == 12
    for name in a0:
        want = a0[name] * np.float32(0.5) if name.startswith("head.") else a0[name]
        np.testing.assert_array_equal(a1[name], want, err_msg=name)
    history = pd.read_csv(SAMPLE)[TARGET].to_numpy()
    snaive = history[-12:][np.arange(15) % 12]  # step 13-15 repeat the last season
    np.testing.assert_allclose(predicted(half), 0.5 * predicted(plain) + 0.5 * snaive, rtol=1e-9)


def test_blend_one_is_seasonal_naive_and_naive_without_a_season(tmp_path):
    history = pd.read_csv(SAMPLE)[TARGET].to_numpy()
    got = predicted(train(tmp_path / "s.lstm", "--horizon", "6", "--blend", "1"))
    np.testing.assert_allclose(got, history[-12:-6], rtol=1e-12)  # exact up to scaling there and back
    nile = pd.read_csv(NILE)
    target = nile.columns[1]
    got = predicted(train(tmp_path / "n.lstm", "--horizon", "4", "--blend", "1", data=NILE, target=target), NILE, target)
    np.testing.assert_allclose(got, [nile[target].iloc[-1]] * 4, rtol=1e-12)  # yearly: season 1, naive


def test_quantile_models_are_not_blended_and_refit_keeps_the_blend(tmp_path):
    q = train(tmp_path / "q.lstm", "--horizon", "3", "--quantiles", "0.1,0.5,0.9", "--blend", "0.7")
    assert modelfile.load(q)[0]["data"]["blend"] == 0.0
    b = train(tmp_path / "b.lstm", "--horizon", "3", "--blend", "0.3")
    model, _ = load_model(b)
    assert model.spec.blend == 0.3
    assert refit_request(model, str(SAMPLE), 1)[0].blend == 0.3


def test_blend_out_of_range_is_refused(tmp_path):
    result = run("train", SAMPLE, "--target", TARGET, "--horizon", "3", "--blend", "1.5", "--out", tmp_path / "x.lstm")
    assert result.exit_code == 2 and "--blend" in result.output
    good = train(tmp_path / "g.lstm", "--horizon", "3")
    header, arrays = modelfile.load(good)
    header["data"]["blend"] = 2.0
    with pytest.raises(ModelFileError, match="data.blend"):
        modelfile.validate_header(header)


@pytest.mark.parametrize("options", [["--blend", "0.3"], ["--blend", "0.3", "--scaling", "series"],
                                     ["--scaling", "seasonal"], ["--lookback", "8"],
                                     ["--strategy", "recursive"]])
def test_onnx_export_forecasts_the_blend(tmp_path, options):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = train(tmp_path / "m.lstm", "--horizon", "14", "--dtype", "float64", *options)
    model, _ = load_model(path)
    assert model.spec.blend in (0.3, 0.5)
    history = pd.read_csv(SAMPLE)[[TARGET]].to_numpy(np.float64)
    want, _ = model.forecast(model.ids, history, np.array([0, len(history)]))
    assert run("export", path, "--format", "onnx", "--out", tmp_path / "m.onnx", "-q").exit_code == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = history[-model.spec.lookback:][None].astype(np.float32)
    got = session.run(["forecast"], {"x": x})[0]
    np.testing.assert_allclose(got[0, :, 0], want[0, :, 0, 0], rtol=1e-5)


def test_warm_start_trains_on_from_the_unblended_head(tmp_path, monkeypatch):
    """The stored head is the network's times 1 - W; fine-tuning starts from the network's own
    head (else every warm start would halve it again)."""
    from lstm_cli import pipeline

    old = train(tmp_path / "old.lstm", "--horizon", "6")  # blend 0.5
    old_head = modelfile.load(old)[1]["head.weight"]
    seen = []
    real_fit = pipeline.fit

    def spy(network, *args, **kwargs):
        seen.append(network.layout.views(network.params)["head.weight"].copy())
        return real_fit(network, *args, **kwargs)

    monkeypatch.setattr(pipeline, "fit", spy)
    train(tmp_path / "new.lstm", "--horizon", "6", "--warm-start", old)
    np.testing.assert_array_equal(seen[0], old_head * np.float32(2.0))
