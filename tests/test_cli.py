"""The `lstm` command end to end: through click's CliRunner and through the installed entry point."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstm_cli.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data"
FAST = ["--epochs", "3", "--hidden", "8", "--quiet"]
LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable)) or shutil.which("lstm")

SAMPLE_JOBS = {
    "a10_monthly.csv": ["--target", "cost_million_aud", "--horizon", "12"],
    "departures_monthly_panel.csv": ["--target", "departures_thousands", "--horizon", "6", "--id-col", "series_id"],
    "us_macro_quarterly.csv": ["--target", "real_gdp", "--features", "real_investment,cpi,tbill_rate",
                               "--horizon", "4"],
}


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def read_csv_text(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def a10_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "a10.lstm"
    result = run("train", SAMPLES / "a10_monthly.csv", *SAMPLE_JOBS["a10_monthly.csv"], "--out", path, *FAST)
    assert result.exit_code == 0, result.output
    return path


GOLDEN_MODEL = Path(__file__).resolve().parent / "data" / "golden" / "tiny.lstm"


def test_every_command_has_help_with_an_example():
    top = run("--help")
    assert top.exit_code == 0
    assert "Exit codes" in top.output and "65" in top.output
    for name, command in cli.commands.items():
        result = run(name, "--help")
        assert result.exit_code == 0, name
        assert command.help and "Example:" in result.output, name


def test_help_imports_no_heavy_module():
    code = ("import sys; from click.testing import CliRunner; from lstm_cli.cli import cli; "
            "CliRunner().invoke(cli, ['train', '--help']); "
            "heavy = [m for m in ('numpy', 'pandas', 'numba', 'rich') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_info_does_not_load_the_kernels():
    """`lstm info` reads a header: it must not pay numba's import (the network and kernels)."""
    code = ("import sys; from click.testing import CliRunner; from lstm_cli.cli import cli; "
            f"r = CliRunner().invoke(cli, ['info', {str(GOLDEN_MODEL)!r}]); "
            "print(r.exit_code, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False"]


@pytest.mark.parametrize("name", sorted(SAMPLE_JOBS))
def test_train_then_predict_on_each_sample(tmp_path, name):
    model = tmp_path / "m.lstm"
    result = run("train", SAMPLES / name, *SAMPLE_JOBS[name], "--out", model, *FAST)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # train never writes data to stdout
    pred = run("predict", model, SAMPLES / name)
    assert pred.exit_code == 0, pred.output
    rows = read_csv_text(pred.stdout)
    horizon = int(SAMPLE_JOBS[name][SAMPLE_JOBS[name].index("--horizon") + 1])
    target = SAMPLE_JOBS[name][1]
    if "--id-col" in SAMPLE_JOBS[name]:
        ids = {r["series_id"] for r in rows}
        assert len(ids) == 5 and len(rows) == 5 * horizon
    else:
        assert len(rows) == horizon
    assert all(float(r[target]) == float(r[target]) for r in rows)  # numbers, not nan


def test_predict_dates_continue_the_series(a10_model):
    rows = read_csv_text(run("predict", a10_model, SAMPLES / "a10_monthly.csv").stdout)
    assert [r["date"] for r in rows[:3]] == ["2008-07-01", "2008-08-01", "2008-09-01"]
    assert rows[-1]["date"] == "2009-06-01"


def test_predict_json_and_out_file(a10_model, tmp_path):
    result = run("predict", a10_model, SAMPLES / "a10_monthly.csv", "--format", "json")
    doc = json.loads(result.stdout)
    assert doc["header"]["horizon"] == 12 and len(doc["forecast"]) == 12
    assert len(doc["header"]["model_sha256"]) == 64
    out = tmp_path / "f.csv"
    result = run("predict", a10_model, SAMPLES / "a10_monthly.csv", "--out", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert len(read_csv_text(out.read_text())) == 12


def test_longer_horizon_rolls_forward(a10_model):
    rows = read_csv_text(run("predict", a10_model, SAMPLES / "a10_monthly.csv", "--horizon", "30").stdout)
    assert len(rows) == 30 and rows[-1]["date"] == "2010-12-01"


def test_info_table_and_json(a10_model):
    result = run("info", a10_model, "--format", "json")
    header = json.loads(result.stdout)
    assert header["data"]["targets"] == ["cost_million_aud"]
    assert header["arch"]["hidden_size"] == 8
    assert run("info", a10_model).exit_code == 0


def test_same_seed_gives_byte_identical_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    paths = []
    for n in range(2):
        path = tmp_path / f"m{n}.lstm"
        assert run("train", SAMPLES / "a10_monthly.csv", *SAMPLE_JOBS["a10_monthly.csv"], "--out", path,
                   *FAST, "--threads", "2").exit_code == 0
        paths.append(path.read_bytes())
    assert paths[0] == paths[1]


def test_quantile_model_writes_one_column_per_quantile(tmp_path):
    model = tmp_path / "q.lstm"
    assert run("train", SAMPLES / "a10_monthly.csv", *SAMPLE_JOBS["a10_monthly.csv"], "--out", model, *FAST,
               "--quantiles", "0.1,0.5,0.9").exit_code == 0
    rows = read_csv_text(run("predict", model, SAMPLES / "a10_monthly.csv").stdout)
    for r in rows:
        lo, mid, hi = (float(r[f"cost_million_aud_q{q}"]) for q in ("0.1", "0.5", "0.9"))
        assert lo <= mid <= hi


@pytest.mark.parametrize("args, code, phrase", [
    (["--horizon", "0"], 2, "horizon"),
    (["--horizon", "-3"], 2, "horizon"),
    (["--horizon", "abc"], 2, "horizon"),
    (["--horizon", "12", "--epochs", "1000000000"], 2, "epochs"),
    (["--horizon", "12", "--lookback", "0"], 2, "lookback"),
    (["--horizon", "12", "--target", "nope"], 65, "nope"),
    (["--horizon", "150"], 65, "need at least"),
])
def test_train_usage_and_data_errors(tmp_path, args, code, phrase):
    base = ["train", SAMPLES / "a10_monthly.csv", "--out", tmp_path / "m.lstm"]
    if "--target" not in args:
        base += ["--target", "cost_million_aud"]
    result = run(*base, *args)
    assert result.exit_code == code, result.output
    assert phrase in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.lstm").exists()


def test_missing_model_and_data_exit_66(a10_model, tmp_path):
    assert run("predict", tmp_path / "none.lstm", SAMPLES / "a10_monthly.csv").exit_code == 66
    assert run("predict", a10_model, tmp_path / "none.csv").exit_code == 66


def test_predict_refuses_data_without_model_columns(a10_model):
    result = run("predict", a10_model, SAMPLES / "us_macro_quarterly.csv")
    assert result.exit_code == 65 and "cost_million_aud" in result.output


@pytest.mark.skipif(LSTM is None, reason="the lstm entry point is not installed")
def test_entry_point_pipes_stdin_to_stdout(a10_model):
    data = (SAMPLES / "a10_monthly.csv").read_bytes()
    proc = subprocess.run([LSTM, "predict", str(a10_model), "-"], input=data, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(read_csv_text(proc.stdout.decode())) == 12


@pytest.mark.skipif(LSTM is None, reason="the lstm entry point is not installed")
def test_entry_point_train_from_stdin_is_quiet_when_piped(tmp_path):
    data = (SAMPLES / "a10_monthly.csv").read_bytes()
    model = tmp_path / "m.lstm"
    proc = subprocess.run([LSTM, "train", "-", "--target", "cost_million_aud", "--horizon", "12", "--out", str(model),
                           "--epochs", "2", "--hidden", "8"], input=data, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    err = proc.stderr.decode()
    assert "\x1b[" not in err  # no colour codes when stderr is not a terminal
    assert "epoch 1/2" in err
    assert model.exists()


@pytest.mark.skipif(LSTM is None, reason="the lstm entry point is not installed")
def test_entry_point_version_and_bad_option():
    ok = subprocess.run([LSTM, "--version"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("lstm ")
    bad = subprocess.run([LSTM, "train", "--nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2


def test_predict_out_is_checked_before_any_work(a10_model, tmp_path):
    data = SAMPLES / "a10_monthly.csv"
    before = a10_model.read_bytes()
    for out in (tmp_path, a10_model, data, tmp_path / "missing" / "f.csv"):
        result = run("predict", a10_model, data, "--out", out)
        assert result.exit_code == 73, (out, result.output)
        assert result.output.startswith("lstm: ")
    assert a10_model.read_bytes() == before
