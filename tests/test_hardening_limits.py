"""Issue 15, limits checked before the work: options and data that make a model the model file
cannot hold are refused before DATA is read (exit 2) or before training (exit 65), never by the
header validation at save time after a whole training run (exit 70); the limits are the ones
modelfile.validate_header enforces (lstm_cli.limits, modelfile.MAX_*). And a sparse model file,
whose header promises gigabytes the disk does not hold, is refused at once, not after a minute of
checksumming its holes."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import limits, pipeline
from lstm_cli import modelfile as mf
from lstm_cli.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A10 = os.path.join(ROOT, "sample_data", "a10_monthly.csv")
PANEL = os.path.join(ROOT, "sample_data", "departures_monthly_panel.csv")
LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable))
ENTRY = [LSTM] if LSTM else [sys.executable, "-m", "lstm_cli"]
TINY = ("--hidden", 2, "--epochs", 1)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def refusal(result, code: int) -> str:
    """The one 'lstm: ...' line of a run refused with `code` before any epoch ran."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert "epoch 1/" not in result.output, "refused only after training"
    return [line for line in result.output.splitlines() if line.startswith("lstm: ")][-1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("m") / "a10.lstm"
    result = run("train", A10, "--target", "cost_million_aud", "--horizon", 3, "--lookback", 12, *TINY,
                 "--out", path, "-q")
    assert result.exit_code == 0, result.output
    return str(path)


def header_of(data: bytes) -> dict:
    _, _, n = mf.PREFIX.unpack(data[: mf.PREFIX.size])
    return json.loads(data[mf.PREFIX.size : mf.PREFIX.size + n])


def read_header(path) -> dict:
    with open(path, "rb") as f:
        return header_of(f.read(1 << 20))


# ---------------------------------------------------------------------------------------------
# options: refused before DATA is read (exit 2)


@pytest.fixture(scope="module")
def long_series(tmp_path_factory) -> str:
    """300 rows: enough for --horizon 101 (so a run the limits let through would train)."""
    path = tmp_path_factory.mktemp("d") / "long.csv"
    values = np.random.default_rng(0).normal(size=300)
    pd.DataFrame({"t": np.arange(300), "y": values}).to_csv(path, index=False)
    return str(path)


def test_limits_output_size_refused_before_reading(tmp_path, long_series):
    quantiles = ",".join(str(i / 1000) for i in range(1, 1000))
    result = run("train", long_series, "--time-col", "t", "--target", "y", "--horizon", 101, "--quantiles",
                 quantiles, "--lookback", 7, *TINY, "--out", tmp_path / "m.lstm")
    line = refusal(result, 2)
    assert "100,899 outputs" in line and f"{limits.MAX_OUTPUTS:,}" in line and "--quantiles" in line
    assert not (tmp_path / "m.lstm").exists()


def test_limits_output_size_counts_one_step_for_recursive(tmp_path, long_series):
    quantiles = ",".join(str(i / 1000) for i in range(1, 1000))
    result = run("train", long_series, "--time-col", "t", "--target", "y", "--horizon", 101, "--quantiles",
                 quantiles, "--strategy", "recursive", "--lookback", 7, *TINY, "--out", tmp_path / "m.lstm", "-q")
    assert result.exit_code == 0, result.output  # 999 outputs: fits


def test_limits_too_many_inputs_refused_before_reading(tmp_path):
    # the columns do not exist: refused on the count before DATA is read (else: missing columns, 65)
    features = ",".join(f"c{i}" for i in range(limits.MAX_INPUTS))
    result = run("train", A10, "--target", "cost_million_aud", "--features", features, "--horizon", 2, *TINY,
                 "--out", tmp_path / "m.lstm")
    line = refusal(result, 2)
    assert f"{limits.MAX_INPUTS + 1} input columns" in line and "drop some --features" in line


def test_limits_too_many_targets_refused_before_reading(tmp_path):
    targets = ",".join(f"c{i}" for i in range(limits.MAX_TARGETS + 1))
    result = run("train", A10, "--target", targets, "--horizon", 2, *TINY, "--out", tmp_path / "m.lstm")
    line = refusal(result, 2)
    assert f"{limits.MAX_TARGETS + 1} columns" in line and f"at most {limits.MAX_TARGETS} targets" in line


def test_limits_weights_beyond_the_payload_limit_refused_before_reading(tmp_path):
    # 2.5e9 float64 weights: 20 GB, over the 16 GiB payload (before the memory estimate refuses it)
    result = run("train", A10, "--target", "cost_million_aud", "--horizon", 100_000, "--hidden", 4096,
                 "--layers", 16, "--dtype", "float64", "--out", tmp_path / "m.lstm")
    line = refusal(result, 2)
    assert "a model file can hold" in line and "--dtype float32" in line


def test_limits_match_what_validate_header_enforces(tiny_model):
    header = read_header(tiny_model)
    for key, value, field in (("targets", [f"t{i}" for i in range(limits.MAX_TARGETS + 1)], "data.targets"),
                              ("lookback", limits.MAX_STEPS + 1, "data.lookback"),
                              ("horizon", limits.MAX_STEPS + 1, "data.horizon"),
                              ("season", limits.MAX_STEPS + 1, "data.season")):
        bad = json.loads(json.dumps(header))
        bad["data"][key] = value
        with pytest.raises(mf.ModelFileError, match=field):
            mf.validate_header(bad)


def test_limits_default_lookback_stays_within_the_file_limit():
    # two horizons of 60,000 steps would be a lookback the model header refuses
    assert pipeline.default_lookback(60_000, 1, 10**7, 10) == limits.MAX_STEPS


def test_limits_sub_second_data_trains_with_no_season_beyond_the_limit(tmp_path):
    # 100 ms steps: a day is 864,000 steps, longer than any lookback; the model records no season
    times = pd.date_range("2024-01-01", periods=200, freq="100ms").strftime("%Y-%m-%dT%H:%M:%S.%f")
    data = tmp_path / "fast.csv"
    pd.DataFrame({"time": times, "y": np.random.default_rng(0).normal(size=200)}).to_csv(data, index=False)
    result = run("train", data, "--target", "y", "--horizon", 2, *TINY, "--out", tmp_path / "m.lstm", "-q")
    assert result.exit_code == 0, result.output
    assert read_header(tmp_path / "m.lstm")["data"]["season"] == 1


# ---------------------------------------------------------------------------------------------
# data: refused after reading, before training (exit 65)


def test_limits_series_count_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(mf, "MAX_SERIES", 4)  # the panel has 5 series
    result = run("train", PANEL, "--id-col", "series_id", "--target", "departures_thousands", "--horizon", 3,
                 *TINY, "--out", tmp_path / "m.lstm")
    line = refusal(result, 65)
    assert "5 series, more than the 4 a model file can hold" in line and "split the data by 'series_id'" in line
    assert not (tmp_path / "m.lstm").exists()


def test_limits_header_size_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(mf, "MAX_HEADER_BYTES", 2000)
    result = run("train", PANEL, "--id-col", "series_id", "--target", "departures_thousands", "--horizon", 3,
                 *TINY, "--out", tmp_path / "m.lstm")
    line = refusal(result, 65)
    assert "a model file cannot hold the model of this data" in line and "2000-byte limit" in line


def test_limits_warm_start_adding_series_refused_before_training(tmp_path, monkeypatch):
    part = tmp_path / "part.csv"
    frame = pd.read_csv(PANEL)
    frame[frame.series_id != frame.series_id.iloc[-1]].to_csv(part, index=False)  # 4 of the 5 series
    old = tmp_path / "old.lstm"
    args = ("--id-col", "series_id", "--target", "departures_thousands", "--horizon", 3, *TINY)
    assert run("train", part, *args, "--out", old, "-q").exit_code == 0
    monkeypatch.setattr(mf, "MAX_SERIES", 4)
    result = run("train", PANEL, *args, "--warm-start", old, "--out", tmp_path / "new.lstm")
    line = refusal(result, 65)
    assert "5 series, more than the 4" in line


def test_limits_a_header_of_more_than_a_million_json_values_round_trips(tiny_model):
    # 600,000 series: 1.2 million JSON values (ids and last times), refused before as 'more than
    # 1000000 JSON values'; a real panel size, well inside MAX_SERIES and the header bytes
    header, arrays = mf.load(tiny_model)
    header = json.loads(json.dumps(header))
    n = 600_000
    header["data"]["id_col"] = "id"
    header["series"] = {"ids": [f"s{i}" for i in range(n)], "last_time": [0] * n}
    arrays = dict(arrays, **{"scaler.loc": np.zeros((n, 1)), "scaler.scale": np.ones((n, 1))})
    loaded, _ = mf.loads(mf.dumps(header, arrays))
    assert len(loaded["series"]["ids"]) == n


# ---------------------------------------------------------------------------------------------
# model payload: a sparse file is refused at once


def sparse_model(tiny_model, path, *, write_scale: bool = False) -> int:
    """A model file whose valid, checksummed header describes a 16-layer 4096-wide network (8.3 GB
    of arrays) that the disk does not hold: holes from the header to the end (truncate). With
    write_scale, scaler.scale (the last array) is written with ones, the rest left as holes."""
    from tests.test_hardening_memory import write_hole

    header = read_header(tiny_model)
    header["arch"].update(hidden_size=4096, num_layers=16)
    header["arrays"], payload_len = mf._layout(mf.expected_arrays(header["arch"], 1))
    write_hole(path, header, payload_len)
    if write_scale:
        head_len = os.path.getsize(path) - payload_len
        scale = next(e for e in header["arrays"] if e["name"] == "scaler.scale")
        with open(path, "r+b") as f:
            f.seek(head_len + scale["offset"])
            f.write(struct.pack("<d", 1.0) * (scale["nbytes"] // 8))
    if os.stat(path).st_blocks * 512 >= payload_len:
        pytest.skip("this file system does not keep sparse files sparse")
    return payload_len


def lstm(*args):
    t0 = time.monotonic()
    proc = subprocess.run(ENTRY + [str(a) for a in args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - t0


@pytest.mark.parametrize("write_scale", [False, True], ids=["all-holes", "scale-written"])
def test_model_payload_sparse_file_refused_fast_by_info_and_predict(tiny_model, tmp_path, write_scale):
    path = tmp_path / "sparse.lstm"
    sparse_model(tiny_model, path, write_scale=write_scale)
    expected = "most of its" if write_scale else "array scaler.scale, which must be positive, lies in a hole"
    for args in (("info", path), ("predict", path, A10)):
        proc, seconds = lstm(*args)
        assert proc.returncode == 65, proc.stderr
        assert seconds < 10, f"lstm {args[0]} took {seconds:.1f} s to refuse a sparse file"
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "sparse file" in lines[0], proc.stderr
        assert proc.stdout == ""


def test_model_payload_large_file_with_a_hole_of_zeros_still_loads(tiny_model, tmp_path, monkeypatch):
    # a file system that stores runs of zeros as holes (compression) may leave one in a real file;
    # only the checksum decides then: here scaler.loc (all zeros) is a hole of a payload looked at
    monkeypatch.setattr(mf, "_HOLES_CHECKED_ABOVE", 2**20)
    header, _ = mf.load(tiny_model)
    header = json.loads(json.dumps(header))
    header["data"]["id_col"] = "id"
    n = 200_000  # scaler.loc: 1.6 MB of zeros, scaler.scale as much of ones
    header["series"] = {"ids": [f"s{i}" for i in range(n)], "last_time": [0] * n}
    header["arch"].update(hidden_size=256, dtype="float64")
    rng = np.random.default_rng(0)
    arrays = {name: (np.zeros(shape) if name == "scaler.loc" else
                     np.ones(shape) if name == "scaler.scale" else rng.normal(size=shape))
              for name, (_, shape) in mf.expected_arrays(header["arch"], n).items()}
    data = mf.dumps(header, arrays)
    written = header_of(data)
    payload_start = len(data) - mf.payload_bytes(mf.expected_arrays(header["arch"], n))
    assert len(data) - payload_start > mf._HOLES_CHECKED_ABOVE
    loc = next(e for e in written["arrays"] if e["name"] == "scaler.loc")
    lo, hi = payload_start + loc["offset"], payload_start + loc["offset"] + loc["nbytes"]
    path = tmp_path / "holed.lstm"
    with open(path, "wb") as f:
        f.write(data[:lo])
        f.seek(hi)  # never written: a hole (zeros) where the array is zeros
        f.write(data[hi:])
    assert os.stat(path).st_blocks * 512 < len(data)
    got, arrays_back = mf.load(path)
    assert got["payload_sha256"] == written["payload_sha256"] and not arrays_back["scaler.loc"].any()
    assert mf.load_header(path)["payload_sha256"] == written["payload_sha256"]
