"""Regression tests of a bad-input audit: each case gave a wrong exit code, a misleading message or
a wrong success (exit 0 with non-finite output) before its fix. CliRunner, small shapes, 1 thread."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstm_cli.cli import cli

FAST = ["--epochs", "2", "--hidden", "4", "--threads", "1", "--lookback", "6", "--horizon", "3", "-q"]


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def monthly_csv(path: Path, values) -> Path:
    rows = [f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{v!r}" for i, v in enumerate(values)]
    path.write_text("date,y\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit")


@pytest.fixture(scope="module")
def wavy(data_dir) -> Path:
    return monthly_csv(data_dir / "wavy.csv", [10.0 + (i % 12) + 0.1 * i for i in range(40)])


@pytest.fixture(scope="module")
def wavy_model(data_dir, wavy) -> Path:
    out = data_dir / "wavy.lstm"
    result = run("train", wavy, "--target", "y", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("option, value", [("--lr", "nan"), ("--momentum", "nan"), ("--weight-decay", "nan"),
                                           ("--dropout", "nan"), ("--val-frac", "nan"), ("--forget-bias", "nan"),
                                           ("--clip", "nan"), ("--clip", "inf")])
def test_non_finite_float_option_is_a_usage_error(data_dir, wavy, option, value):
    """click's FloatRange let nan (and inf without a maximum) through: training ran, then saving failed
    with exit 70 (or --forget-bias nan blamed --time-limit)."""
    out = data_dir / f"nan{option}.lstm"
    result = run("train", wavy, "--target", "y", *FAST, option, value, "--out", out)
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.stderr and "not a finite number" in result.stderr
    assert not out.exists()


def test_predict_on_too_few_rows_names_the_file(data_dir, wavy_model):
    short = monthly_csv(data_dir / "short.csv", [1.0, 2.0, 3.0])
    result = run("predict", wavy_model, short)
    assert result.exit_code == 65
    line = one_error_line(result)
    assert line.startswith(f"lstm: {short}: 3 rows, need at least 6")


def test_gate_with_undefined_mase_is_a_data_error_not_a_verdict(data_dir):
    """A constant history makes MASE nan for every method; the gate said 'MASE nan of the model is
    worse than nan of naive' and exited 3."""
    flat = monthly_csv(data_dir / "flat.csv", [5.0] * 40)
    model = data_dir / "flat.lstm"
    assert run("train", flat, "--target", "y", *FAST, "--out", model).exit_code == 0
    assert run("evaluate", model, flat, "-q").exit_code == 0  # without the gate: a table of nan MASE
    result = run("evaluate", model, flat, "--fail-if-worse-than", "naive", "-q")
    assert result.exit_code == 65
    assert "MASE is undefined" in one_error_line(result)


def test_forecast_that_overflows_is_refused(data_dir):
    """Values near the float64 limit train, but the forecast back in their units was -inf, written
    with exit 0."""
    huge = monthly_csv(data_dir / "huge.csv", [1.7e308 if i % 2 else -1.7e308 for i in range(40)])
    model = data_dir / "huge.lstm"
    # --scaling level: the default for 40 rows (series scaling) forecasts near the mean, which stays finite
    assert run("train", huge, "--target", "y", *FAST, "--scaling", "level", "--out", model).exit_code == 0
    result = run("predict", model, huge)
    assert result.exit_code == 65
    assert "overflows" in one_error_line(result)


def test_no_time_column_and_no_other_column(data_dir):
    only = data_dir / "only_target.csv"
    only.write_text("y\n" + "\n".join(str(i) for i in range(40)) + "\n", encoding="utf-8")
    result = run("train", only, "--target", "y", *FAST, "--out", data_dir / "only.lstm")
    assert result.exit_code == 65
    line = one_error_line(result)
    assert "no time column found" in line and "none of no other column" not in line


def test_first_row_off_the_grid_does_not_say_the_grid_starts_there(data_dir, wavy, wavy_model):
    """A monthly model and times with a +05:00 offset (converted to UTC: the evening before the 1st)
    said 'time 1999-12-31 19:00:00 is not on the MS grid that starts at 1999-12-31 19:00:00'."""
    lines = wavy.read_text(encoding="utf-8").splitlines()
    shifted = data_dir / "offset.csv"
    shifted.write_text("\n".join([lines[0]] + [f"{d}T00:00:00+05:00,{v}" for d, v in
                                               (r.split(",") for r in lines[1:])]) + "\n", encoding="utf-8")
    result = run("predict", wavy_model, shifted)
    assert result.exit_code == 65
    line = one_error_line(result)
    assert "line 2, column 'date': time 1999-12-31 19:00:00 is not on the MS grid;" in line


LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable)) or shutil.which("lstm")


@pytest.mark.skipif(LSTM is None or not os.path.exists("/dev/full"), reason="needs the entry point and /dev/full")
@pytest.mark.parametrize("command", [["info", "{model}", "--format", "json"], ["predict", "{model}", "{data}"],
                                     ["export", "{model}", "--format", "json", "--out", "-"]])
def test_stdout_on_a_full_disk_is_an_io_error(wavy, wavy_model, command):
    """Writing stdout to a full disk was 'internal error (OSError: [Errno 28] ...); this is a bug', exit 70."""
    args = [a.format(model=wavy_model, data=wavy) for a in command]
    env = {k: v for k, v in os.environ.items() if k != "LSTM_DEBUG"}
    with open("/dev/full", "w") as full:
        proc = subprocess.run([LSTM, *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, env=env)
    assert proc.returncode == 74, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm: I/O error: No space left on device"), proc.stderr


@pytest.mark.skipif(LSTM is None or not os.path.exists("/bin/sh"), reason="needs the entry point and a shell")
@pytest.mark.parametrize("command", [["info", "{model}", "--format", "json"], ["predict", "{model}", "{data}"]])
def test_closed_stdout_is_an_io_error(wavy, wavy_model, command):
    """With stdout closed by the shell (`>&-`), `info --format json` exited 0 having printed
    nothing and predict died with 'internal error' (70)."""
    args = " ".join(shlex.quote(a.format(model=wavy_model, data=wavy)) for a in command)
    env = {k: v for k, v in os.environ.items() if k != "LSTM_DEBUG"}
    proc = subprocess.run(["/bin/sh", "-c", f"{shlex.quote(LSTM)} {args} >&-"], stderr=subprocess.PIPE,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 74, proc.stderr
    assert proc.stderr.strip().splitlines() == ["lstm: stdout is closed; redirect it or give --out FILE"]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_integer_times_for_a_model_of_dates_is_a_data_error(data_dir, wavy_model, command):
    """The reader's message told the user to 'leave --freq out', an option they had not given: the
    frequency is the model's."""
    path = data_dir / "steps.csv"
    path.write_text("date,y\n" + "".join(f"{i},{10.0 + i % 12}\n" for i in range(40)), encoding="utf-8")
    result = run(command, wavy_model, path)
    assert result.exit_code == 65, result.output
    line = one_error_line(result)
    assert "holds integers, but the model was trained on dates (freq MS)" in line and "--freq" not in line
