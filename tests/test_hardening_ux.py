"""Issue 15, what a new user sees: the training progress (phases, batches, a labelled ETA), the
--id-col hint for a panel read as one series, answers on stdout, and evaluate on rows the model
was trained on."""

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
DATA = Path(__file__).resolve().parent / "data"
SAMPLES = ROOT / "sample_data"
A10 = SAMPLES / "a10_monthly.csv"
TINY = ["--epochs", "2", "--hidden", "4", "--threads", "1"]
LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable)) or shutil.which("lstm")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def a10_model(tmp_path_factory):
    """Trained on all of a10 but its last 12 months (so evaluate has unseen rows to score)."""
    d = tmp_path_factory.mktemp("ux")
    lines = A10.read_text().splitlines()
    (d / "head.csv").write_text("\n".join(lines[:-12]) + "\n")
    path = d / "a10.lstm"
    result = run("train", d / "head.csv", "--target", "cost_million_aud", "--horizon", "6", "--out", path, *TINY, "-q")
    assert result.exit_code == 0, result.output
    return path


# ------------------------------------------------------------------------------------------
# id_col_hint: a panel read without --id-col


@pytest.mark.parametrize("name, target, id_col, n", [
    ("departures_monthly_panel.csv", "departures_thousands", "series_id", 5),
    ("prison_quarterly_panel.csv", "prisoners", "series_id", 32),
])
@pytest.mark.parametrize("command", ["train", "validate"])
def test_id_col_hint_names_the_series_column_of_a_panel(command, name, target, id_col, n, tmp_path):
    extra = ["--horizon", "4", "--out", tmp_path / "m.lstm", *TINY] if command == "train" else []
    result = run(command, DATA / name, "--target", target, *extra)
    assert result.exit_code == 65, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("lstm: ") and "Traceback" not in result.output
    assert f"pass --id-col {id_col}" in line and f"{id_col!r} has {n} values" in line
    assert "--time-col" not in line  # the old advice pointed at the wrong option


def test_id_col_hint_for_an_unsorted_panel_with_another_column_name(tmp_path):
    rows = [f"2021-{m:02d}-01,{store},{m * (i + 1)},x{m}" for m in range(1, 9) for i, store in enumerate("cab")]
    path = tmp_path / "shops.csv"
    path.write_text("when,shop,sales,note\n" + "\n".join(rows) + "\n")
    result = run("validate", path, "--target", "sales", "--time-col", "when")
    assert result.exit_code == 65
    assert "pass --id-col shop" in result.stderr and "'shop' has 3 values" in result.stderr


def test_id_col_hint_not_given_for_a_real_duplicate(tmp_path):
    # the text column does not split the rows into series with one row per time
    path = tmp_path / "dup.csv"
    path.write_text("date,shop,sales\n2021-01-01,a,1\n2021-01-01,a,2\n2021-02-01,b,3\n2021-03-01,b,4\n")
    result = run("validate", path, "--target", "sales")
    assert result.exit_code == 65
    assert "--id-col" not in result.stderr and "keep one row per time" in result.stderr
    for good in (DATA / "bad" / "duplicate_time.csv",):
        assert "--id-col" not in run("validate", good, "--target", "sales").stderr


# ------------------------------------------------------------------------------------------
# answer_on_stdout: info, validate and evaluate --format table print their answer on stdout


def test_answer_on_stdout_info_table(a10_model):
    result = run("info", a10_model)
    assert result.exit_code == 0
    assert "lookback" in result.stdout and "sha256" in result.stdout
    assert result.stderr == ""
    assert "\x1b[" not in result.stdout  # plain text: stdout is not a terminal


def test_answer_on_stdout_validate_table_and_quiet():
    args = ["validate", DATA / "departures_monthly_panel.csv", "--target", "departures_thousands",
            "--id-col", "series_id"]
    ok = run(*args)
    assert ok.exit_code == 0 and ok.stderr == ""
    assert "is usable" in ok.stdout and "readable" in ok.stdout
    assert run(*args, "-q").output == ""
    bad = run(*args, "--lookback", "600")
    assert bad.exit_code == 65
    assert "NOT usable" in bad.stdout and "fail length" in bad.stdout
    assert bad.stderr.splitlines() == [
        f"lstm: {DATA / 'departures_monthly_panel.csv'}: 5 series shorter than 600 rows (lookback 600): "
        "permanent (498 rows), reslong (498 rows), resshort (498 rows), vislong (498 rows), visshort (498 rows)"]
    quiet = run(*args, "--lookback", "600", "-q")
    assert quiet.exit_code == 65 and quiet.stdout == "" and quiet.stderr == bad.stderr  # errors stay


def test_answer_on_stdout_evaluate_table(a10_model):
    table = run("evaluate", a10_model, A10)
    assert table.exit_code == 0, table.output
    assert "skill vs seasonal_naive" in table.stdout and "skill vs" not in table.stderr
    as_json = run("evaluate", a10_model, A10, "--format", "json")
    json.loads(as_json.stdout)  # only the data on stdout; the summary table for people on stderr
    assert "skill vs seasonal_naive" in as_json.stderr


@pytest.mark.skipif(LSTM is None, reason="the lstm entry point is not installed")
def test_answer_on_stdout_info_through_a_pipe(a10_model):
    proc = subprocess.run(f"{LSTM} info {a10_model} | grep lookback", shell=True, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "lookback" in proc.stdout, proc
    assert proc.stderr == ""
