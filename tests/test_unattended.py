"""What a nightly job leans on: validate, the stale-input guard, provenance, version."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstm_cli.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PANEL = ROOT / "sample_data" / "departures_monthly_panel.csv"
BAD = ROOT / "tests" / "data" / "bad"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def panel_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("unattended") / "dep.lstm"
    result = run("train", PANEL, "--id-col", "series_id", "--target", "departures_thousands", "--horizon", "3",
                 "--out", path, "--epochs", "2", "--hidden", "8", "-q")
    assert result.exit_code == 0, result.output
    return path


def test_validate_usable_panel_json():
    result = run("validate", PANEL, "--target", "departures_thousands", "--id-col", "series_id", "--lookback", "24",
                 "--horizon", "12", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["usable"] and doc["summary"]["series"] == 5 and doc["summary"]["freq"] == "MS"
    assert doc["summary"]["first"] == "1976-01-01" and doc["summary"]["last"] == "2017-06-01"


def test_validate_too_short_and_unreadable_exit_65():
    short = run("validate", PANEL, "--target", "departures_thousands", "--id-col", "series_id", "--lookback", "600")
    assert short.exit_code == 65 and "5 series shorter than 600 rows" in short.output
    dup = run("validate", BAD / "duplicate_time.csv", "--target", "sales", "--format", "json")
    assert dup.exit_code == 65
    doc = json.loads(dup.stdout)
    assert not doc["usable"] and doc["checks"][0]["status"] == "fail"


def test_validate_against_a_model_contract(panel_model, tmp_path):
    assert run("validate", PANEL, "--model", panel_model).exit_code == 0
    other = tmp_path / "other.csv"
    other.write_text("date,series_id,visitors\n2020-01-01,a,1\n2020-02-01,a,2\n")
    result = run("validate", other, "--model", panel_model)
    assert result.exit_code == 65 and "departures_thousands" in result.output


def test_validate_needs_columns():
    assert run("validate", PANEL).exit_code == 2


def test_max_age_refuses_a_stalled_feed(panel_model):
    fresh = run("predict", panel_model, PANEL, "--max-age", "45d", "--now", "2017-07-01T00:00:00Z", "-q")
    assert fresh.exit_code == 0, fresh.output
    stale = run("predict", panel_model, PANEL, "--max-age", "20d", "--now", "2017-07-01T00:00:00Z")
    assert stale.exit_code == 4
    assert "2017-06-01" in stale.output and "stalled" in stale.output
    assert run("predict", panel_model, PANEL, "--max-age", "20d", "--now", "yesterday").exit_code == 2
    assert run("predict", panel_model, PANEL, "--max-age", "soon").exit_code == 2


def test_predict_notes_data_that_ends_before_training_did(panel_model, tmp_path):
    lines = PANEL.read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:300]) + "\n")  # only 'permanent', cut in 2000
    result = run("predict", panel_model, short)
    assert result.exit_code == 0
    assert "ended before the model's training data did" in result.output


def test_provenance_columns(panel_model):
    result = run("predict", panel_model, PANEL, "--provenance")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 15
    header = json.loads(run("info", panel_model, "--format", "json").stdout)
    assert {r["model_sha256"] for r in rows} == {header["sha256"]}
    assert {r["model_created"] for r in rows} == {header["created"]}
    assert [r["step"] for r in rows[:3]] == ["1", "2", "3"] and rows[0]["origin"] == "2017-06-01"


def test_version_json_reports_the_jit_cache():
    doc = json.loads(run("version", "--format", "json").stdout)
    for key in ("lstm", "numba", "llvmlite", "numpy", "pandas", "cpu"):
        assert doc[key]
    assert set(doc["jit_cache"]) >= {"dir", "warm", "writable", "builds"}


def test_warm_start_continues_a_model_with_newer_data(tmp_path):
    a10 = ROOT / "sample_data" / "a10_monthly.csv"
    lines = a10.read_text().splitlines()
    older = tmp_path / "older.csv"
    older.write_text("\n".join(lines[:181]) + "\n")  # up to 2006-06
    old = tmp_path / "old.lstm"
    assert run("train", older, "--target", "cost_million_aud", "--horizon", "6", "--out", old, "--epochs", "2",
               "--hidden", "8", "-q").exit_code == 0
    new = tmp_path / "new.lstm"
    result = run("train", a10, "--target", "cost_million_aud", "--horizon", "6", "--out", new, "--epochs", "2",
                 "--warm-start", old, "--hidden", "32", "-q")
    assert result.exit_code == 0, result.output
    old_h = json.loads(run("info", old, "--format", "json").stdout)
    new_h = json.loads(run("info", new, "--format", "json").stdout)
    assert new_h["arch"] == old_h["arch"]  # the old architecture is kept, --hidden is not applied
    assert new_h["training"]["params"]["warm_start_sha256"] == old_h["sha256"]
    assert new_h["series"]["last_time"] > old_h["series"]["last_time"]
    # the scaler of a known series is the old one: fine-tuning keeps the units the weights learned
    from lstm_cli import modelfile

    np_old, np_new = modelfile.load(old)[1], modelfile.load(new)[1]
    assert (np_old["scaler.loc"] == np_new["scaler.loc"]).all()


@pytest.mark.parametrize("extra, phrase", [
    (["--horizon", "3"], "horizon 6 in the old model, 3 here"),
    (["--horizon", "6", "--features", "cost_million_aud2"], "features"),
])
def test_warm_start_refuses_another_contract(tmp_path, extra, phrase):
    a10 = ROOT / "sample_data" / "a10_monthly.csv"
    old = tmp_path / "old.lstm"
    assert run("train", a10, "--target", "cost_million_aud", "--horizon", "6", "--out", old, "--epochs", "1",
               "--hidden", "4", "-q").exit_code == 0
    data = a10
    if "--features" in extra:
        data = tmp_path / "with_feature.csv"
        rows = a10.read_text().splitlines()
        data.write_text("\n".join([rows[0] + ",cost_million_aud2"] + [r + "," + r.split(",")[1] for r in rows[1:]]) + "\n")
    result = run("train", data, "--target", "cost_million_aud", "--out", tmp_path / "n.lstm", "--warm-start", old,
                 *extra)
    assert result.exit_code == 65 and phrase in result.output


def test_warm_start_refuses_older_data(tmp_path):
    a10 = ROOT / "sample_data" / "a10_monthly.csv"
    old = tmp_path / "old.lstm"
    assert run("train", a10, "--target", "cost_million_aud", "--horizon", "6", "--out", old, "--epochs", "1",
               "--hidden", "4", "-q").exit_code == 0
    older = tmp_path / "older.csv"
    older.write_text("\n".join(a10.read_text().splitlines()[:150]) + "\n")
    result = run("train", older, "--target", "cost_million_aud", "--horizon", "6", "--out", tmp_path / "n.lstm",
                 "--warm-start", old)
    assert result.exit_code == 65 and "before the old model's training data did" in result.output


def test_entry_point_validate_stale_and_provenance(panel_model, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    lstm = shutil.which("lstm", path=os.path.dirname(sys.executable))
    if lstm is None:
        pytest.skip("the lstm entry point is not installed")
    ok = subprocess.run([lstm, "validate", str(PANEL), "--target", "departures_thousands", "--id-col", "series_id",
                         "--format", "json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["usable"]
    stale = subprocess.run([lstm, "predict", str(panel_model), str(PANEL), "--max-age", "1d", "--now",
                            "2017-07-01T00:00:00Z"], capture_output=True, text=True, timeout=120)
    assert stale.returncode == 4 and stale.stdout == "" and stale.stderr.startswith("lstm: ")
    out = tmp_path / "f.csv"
    fresh = subprocess.run([lstm, "predict", str(panel_model), str(PANEL), "--max-age", "40d", "--now",
                            "2017-07-01T00:00:00Z", "--provenance", "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert out.read_text().splitlines()[0] == "date,series_id,origin,step,model_sha256,model_created,departures_thousands"
