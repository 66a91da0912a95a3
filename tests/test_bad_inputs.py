"""Bad inputs through the real `lstm` entry point: every one gives its exit code and one line
`lstm: ...` (no traceback, nothing on stdout); inputs that look odd but are valid train and
forecast finite numbers. The table is tests/data/bad_cli/cases.json."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "data" / "bad_cli"
CASES = json.loads((CASES_DIR / "cases.json").read_text(encoding="utf-8"))
TRAIN_ARGS = CASES["train_args"]
LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable)) or shutil.which("lstm")

pytestmark = pytest.mark.skipif(LSTM is None, reason="the lstm entry point is not installed")


def lstm(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    env.pop("LSTM_DEBUG", None)
    return subprocess.run([LSTM, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env, stdin=subprocess.DEVNULL)


def forecast(text: str) -> list[float]:
    return [float(r["value"]) for r in csv.DictReader(io.StringIO(text))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A model trained on good.csv (and its forecast on good.csv)."""
    path = tmp_path_factory.mktemp("good") / "good.lstm"
    proc = lstm("train", CASES_DIR / "good.csv", *TRAIN_ARGS, "-q", "--out", path)
    assert proc.returncode == 0, proc.stderr
    return path


def _make(kind: str, tmp: Path, input_path: Path, trained: Path) -> Path:
    if kind == "directory":
        (tmp / "dir.lstm").mkdir()
        return tmp / "dir.lstm"
    if kind == "fifo":
        os.mkfifo(tmp / "fifo.lstm")
        return tmp / "fifo.lstm"
    if kind == "dangling_symlink":
        os.symlink(tmp / "gone.lstm", tmp / "link.lstm")
        return tmp / "link.lstm"
    if kind == "missing":
        return tmp / "missing.lstm"
    if kind == "missing_parent":
        return tmp / "no" / "such" / "dir" / "m.lstm"
    if kind == "parent_is_file":
        (tmp / "afile").write_text("x")
        return tmp / "afile" / "m.lstm"
    if kind == "same_as_input":
        return input_path
    if kind == "trained":
        return trained
    raise ValueError(kind)


def _snapshot(path: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("case", CASES["refused"], ids=[c["name"] for c in CASES["refused"]])
def test_refused(case, tmp_path, trained):
    work = tmp_path / "work"
    work.mkdir()
    input_path = work / case["input"]
    if (CASES_DIR / case["input"]).exists():
        shutil.copyfile(CASES_DIR / case["input"], input_path)
    command = case.get("command", "train")
    extra = case.get("extra", [])
    if command == "train":
        out = case.get("out")
        out = _make(out["make"], work, input_path, trained) if isinstance(out, dict) else work / "m.lstm"
        args = ["train", input_path, *TRAIN_ARGS, *extra, "--out", out]
    else:
        model = case["model"]
        model = _make(model["make"], work, input_path, trained) if isinstance(model, dict) else CASES_DIR / model
        args = ["predict", model, input_path, *extra]
    before = _snapshot(work)
    t0 = time.perf_counter()
    proc = lstm(*args, cwd=work, timeout=30)
    seconds = time.perf_counter() - t0
    assert proc.returncode == case["exit"], proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # one line, no traceback, no progress
    assert lines[0].startswith("lstm: ") and "Traceback" not in proc.stderr
    assert case["phrase"] in lines[0]
    if "max_seconds" in case:
        assert seconds < case["max_seconds"], f"took {seconds:.2f} s"
    after = _snapshot(work)
    after.pop(".m.lstm.lock", None)  # an empty lock file may be left (atomic.py: never deleted)
    assert after == before  # nothing written, nothing replaced


def test_every_fixture_file_is_in_the_table():
    named = {c["input"] for c in CASES["refused"] + CASES["accepted"]}
    named |= {c["model"] for c in CASES["refused"] if isinstance(c.get("model"), str)}
    files = {p.name for p in CASES_DIR.iterdir() if p.suffix != ".py" and p.name != "cases.json"}
    assert files - named == set()  # no orphan fixture
    assert named - files == {"no_such_file.csv"}  # and no case without its file


def _train_and_predict(case: dict, tmp: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess | None, bytes]:
    model = tmp / f"{case['input']}.lstm"
    data = CASES_DIR / case["input"]
    extra = case.get("extra", [])
    train = lstm("train", data, *TRAIN_ARGS, *extra, "--out", model)
    if train.returncode != 0:
        return train, None, b""
    return train, lstm("predict", model, data, *extra), model.read_bytes()


@pytest.fixture(scope="module")
def accepted_runs(tmp_path_factory) -> dict:
    """Every accepted input, and good.csv as the reference, trained and forecast through the entry point."""
    tmp = tmp_path_factory.mktemp("accepted")
    cases = [{"name": "reference", "input": "good.csv"}] + CASES["accepted"]
    return {c["name"]: _train_and_predict(c, tmp) for c in cases}


@pytest.mark.parametrize("case", CASES["accepted"], ids=[c["name"] for c in CASES["accepted"]])
def test_accepted(case, accepted_runs):
    train, pred, model_bytes = accepted_runs[case["name"]]
    assert train.returncode == 0, train.stderr
    assert train.stdout == "" and "Traceback" not in train.stderr and "Warning" not in train.stderr
    assert pred.returncode == 0, pred.stderr
    values = forecast(pred.stdout)
    assert len(values) == 3 and all(math.isfinite(v) for v in values), values
    if case["input"] == "tiny_magnitude.csv":
        assert all(v != 0.0 for v in values)  # not flushed to zero on the way
    if case.get("same_as_good"):
        _, ref_pred, ref_bytes = accepted_runs["reference"]
        assert model_bytes == ref_bytes
        assert values == forecast(ref_pred.stdout)


def test_constant_series_forecasts_the_constant(tmp_path):
    model = tmp_path / "c.lstm"
    args = list(TRAIN_ARGS)
    args[args.index("--epochs") + 1] = "40"  # enough to learn "no change"
    assert lstm("train", CASES_DIR / "constant.csv", *args, "-q", "--out", model).returncode == 0
    values = forecast(lstm("predict", model, CASES_DIR / "constant.csv").stdout)
    assert all(abs(v - 42.0) < 2.0 for v in values), values
