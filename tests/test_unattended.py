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
