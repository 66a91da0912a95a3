"""A tiny model file committed with its expected forecast: a format or numerics change that
breaks old model files, or changes what they predict, fails here."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from lstm_cli import modelfile
from lstm_cli.cli import cli

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
# every option that shaped the golden model, so that later changes of defaults do not move it
PINNED = ["--lookback", "24", "--layers", "1", "--dropout", "0", "--batch-size", "32", "--lr", "0.003",
          "--optimizer", "adam", "--clip", "1.0", "--val-frac", "0.1", "--patience", "15",
          "--dtype", "float32", "--scaling", "level", "--forget-bias", "1.0", "--weight-decay", "0",
          "--calibrate", "none", "--blend", "0"]


def test_committed_model_still_loads_and_forecasts_the_same(tmp_path):
    # The model was made with (SOURCE_DATE_EPOCH=1764288000):
    #   lstm train tests/data/golden/a10_head60.csv --target cost_million_aud --horizon 6 --hidden 4 \
    #     --epochs 5 --threads 1 --seed 7 --out tests/data/golden/tiny.lstm
    # (and the defaults of that day, pinned in the test below)
    model = tmp_path / "tiny.lstm"
    shutil.copy(GOLDEN / "tiny.lstm", model)
    before = model.read_bytes()
    header, arrays = modelfile.load(model)
    assert header["format_version"] == 1 and header["data"]["horizon"] == 6
    result = CliRunner().invoke(cli, ["predict", str(model), str(GOLDEN / "a10_head60.csv")])
    assert result.exit_code == 0, result.output
    got = list(csv.DictReader(io.StringIO(result.stdout)))
    want = list(csv.DictReader(io.StringIO((GOLDEN / "tiny_forecast.csv").read_text())))
    assert [r["date"] for r in got] == [r["date"] for r in want]
    np.testing.assert_allclose([float(r["cost_million_aud"]) for r in got],
                               [float(r["cost_million_aud"]) for r in want], rtol=1e-5)
    assert model.read_bytes() == before  # predict never modifies the model


def test_retraining_the_golden_model_reproduces_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764288000")
    out = tmp_path / "tiny.lstm"
    result = CliRunner().invoke(cli, ["train", str(GOLDEN / "a10_head60.csv"), "--target", "cost_million_aud",
                                      "--horizon", "6", "--hidden", "4", "--epochs", "5", "--threads", "1",
                                      "--seed", "7", "--out", str(out), "-q", *PINNED])
    assert result.exit_code == 0, result.output
    new_header, new_arrays = modelfile.load(out)
    old_header, old_arrays = modelfile.load(GOLDEN / "tiny.lstm")
    # "season" and "blend" joined the data section later (files without them read as season 1, blend 0)
    assert new_header["data"]["blend"] == 0.0
    assert {k: v for k, v in new_header["data"].items() if k not in ("season", "blend")} == old_header["data"]
    for name, old in old_arrays.items():
        np.testing.assert_allclose(new_arrays[name], old, rtol=1e-4, atol=1e-6, err_msg=name)
