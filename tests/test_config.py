"""Options from flags, LSTM_<OPTION> variables and a TOML file, in that order of precedence."""

from __future__ import annotations

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
A10 = ROOT / "sample_data" / "a10_monthly.csv"
LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable))


def show(args=(), env=None):
    result = CliRunner().invoke(cli, [*args, "config", "show", "--format", "json"], env=env or {})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["commands"]


def test_precedence_flag_env_file_default(tmp_path):
    cfg = tmp_path / "job.toml"
    cfg.write_text('[train]\nepochs = 7\nbatch-size = 64\nhidden = 16\ntarget = "sales"\n[predict]\nformat = "json"\n')
    resolved = show(["--config", str(cfg)], env={"LSTM_EPOCHS": "9"})
    assert resolved["train"]["epochs"] == {"value": "9", "source": "env LSTM_EPOCHS"}
    assert resolved["train"]["batch-size"] == {"value": 64, "source": f"file {cfg}"}
    assert resolved["train"]["target"]["value"] == ["sales"]
    assert resolved["train"]["lr"]["source"] == "default"
    assert resolved["predict"]["format"]["value"] == "json"
    # and a flag beats both: train with --epochs 1 from a file that says 7 and an env that says 9
    out = tmp_path / "m.lstm"
    result = CliRunner().invoke(cli, ["--config", str(cfg), "train", str(A10), "--target", "cost_million_aud",
                                      "--horizon", "3", "--out", str(out), "--epochs", "1"],
                                env={"LSTM_EPOCHS": "9"})
    assert result.exit_code == 0, result.output
    info = json.loads(CliRunner().invoke(cli, ["info", str(out), "--format", "json"]).stdout)
    assert info["training"]["params"]["epochs"] == 1
    assert info["training"]["params"]["batch_size"] == 64 and info["arch"]["hidden_size"] == 16


@pytest.mark.parametrize("text, phrase", [
    ("[trian]\nx = 1\n", "unknown section [trian]"),
    ("[train]\nepoch = 3\n", "has no option 'epoch'"),
    ("[train\n", "not valid TOML"),
])
def test_bad_config_files_are_usage_errors(tmp_path, text, phrase):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    result = CliRunner().invoke(cli, ["--config", str(cfg), "config", "show"])
    assert result.exit_code == 2 and phrase in result.output


def test_missing_config_file(tmp_path):
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "none.toml"), "config", "show"])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.skipif(LSTM is None, reason="the lstm entry point is not installed")
def test_entry_point_reads_config_from_lstm_config(tmp_path):
    cfg = tmp_path / "job.toml"
    cfg.write_text('[predict]\nformat = "json"\n[train]\nhorizon = 4\nepochs = 1\nhidden = 4\nquiet = true\n')
    env = {**os.environ, "LSTM_CONFIG": str(cfg), "LSTM_TARGET": "cost_million_aud"}
    model = tmp_path / "m.lstm"
    subprocess.run([LSTM, "train", str(A10), "--out", str(model)], env=env, check=True, capture_output=True,
                   timeout=300)
    out = subprocess.run([LSTM, "predict", str(model), str(A10)], env=env, check=True, capture_output=True,
                         text=True, timeout=120)
    assert len(json.loads(out.stdout)["forecast"]) == 4
