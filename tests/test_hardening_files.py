"""Issue 15, the files lstm writes beside the user's and the train/evaluate write paths: side
files (.X.lock, .X.ckpt, temporaries) the tool did not create are never truncated, replaced,
followed or removed; `-` is refused where it cannot mean stdout; --wait gives up when
--time-limit runs out; --plot writes the format its suffix names; a rerun without --resume says
what it does with a stopped run's checkpoint; interrupt messages say whether a model was kept."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_cli import atomic, checkpoint, modelfile
from lstm_cli.cli import StopFlag, cli
from lstm_cli.errors import LockedError, OutputError
from tests.test_modelfile import deadline  # fails instead of hanging (an open that blocks on a FIFO)

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"
LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable))
ENTRY = [LSTM] if LSTM else [sys.executable, "-m", "lstm_cli"]
USER_DATA = b"my notes, not a lock\n" * 3


def write_csv(path: Path, rows: int = 60) -> Path:
    t = np.arange(rows)
    y = 10 + 3 * np.sin(2 * np.pi * t / 12) + 0.05 * t
    path.write_text("step,y\n" + "".join(f"{i},{v:.5f}\n" for i, v in zip(t, y, strict=True)))
    return path


def train_args(csv: Path, out, *extra) -> list[str]:
    return ["train", str(csv), "--target", "y", "--time-col", "step", "--horizon", "3", "--lookback", "12",
            "--hidden", "4", "--epochs", "2", "--threads", "1", "--out", str(out), *extra]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny trained model and its data."""
    d = tmp_path_factory.mktemp("model")
    csv = write_csv(d / "data.csv")
    result = invoke(*train_args(csv, d / "m.lstm", "-q"))
    assert result.exit_code == 0, result.output
    return d / "m.lstm", csv


# ------------------------------------------------------------------------------------------
# side_files: .X.lock


def test_side_files_foreign_lock_file_is_refused_by_every_output_command(model, tmp_path):
    model_path, csv = model
    outs = {"train": tmp_path / "t.lstm", "predict": tmp_path / "f.csv", "export": tmp_path / "e.json",
            "evaluate": tmp_path / "p.png"}
    commands = {"train": train_args(csv, outs["train"]),
                "predict": ["predict", model_path, csv, "--out", outs["predict"]],
                "export": ["export", model_path, "--format", "json", "--out", outs["export"]],
                "evaluate": ["evaluate", model_path, csv, "--plot", outs["evaluate"], "-q"]}
    for name, args in commands.items():
        lock = Path(atomic.lock_path_for(outs[name]))
        lock.write_bytes(USER_DATA)
        result = invoke(*args)
        assert result.exit_code == 73, (name, result.output)
        line = one_line(result)
        assert str(lock) in line and "was not written by lstm" in line and "move it away" in line, line
        assert lock.read_bytes() == USER_DATA, name  # never truncated
        assert not outs[name].exists(), name
    # a long user file that starts with digits is no old lock either
    lock = Path(atomic.lock_path_for(tmp_path / "d.lstm"))
    lock.write_bytes(b"1234567890" * 10)
    with pytest.raises(OutputError, match="was not written by lstm"):
        with atomic.output_lock(tmp_path / "d.lstm"):
            pass
    assert lock.read_bytes() == b"1234567890" * 10


def test_side_files_lock_keeps_its_marker_and_accepts_an_empty_lock(tmp_path):
    out = tmp_path / "m.lstm"
    lock = Path(atomic.lock_path_for(out))
    lock.write_bytes(b"")  # just created (a bare pid, lstm's old lock, is a user's digits: tests/test_hardening_trust.py)
    with atomic.output_lock(out):
        assert lock.read_bytes() == atomic.LOCK_MARKER + f"{os.getpid()}\n".encode()
    assert lock.read_bytes() == atomic.LOCK_MARKER  # never truncated below the marker
    with atomic.output_lock(out):
        pass
    assert lock.read_bytes() == atomic.LOCK_MARKER


def test_side_files_lock_that_is_a_symlink_fifo_directory_or_hard_link_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(USER_DATA)
    cases = {"link.lstm": lambda p: os.symlink(victim, p), "fifo.lstm": os.mkfifo, "dir.lstm": os.mkdir,
             "hard.lstm": lambda p: os.link(victim, p)}
    for name, make in cases.items():
        out = tmp_path / name
        make(atomic.lock_path_for(out))
        with deadline(20), pytest.raises(OutputError) as e:
            with atomic.output_lock(out):
                pass
        assert atomic.lock_path_for(out) in str(e.value), name
        assert victim.read_bytes() == USER_DATA, name
    empty = tmp_path / "empty.txt"  # an empty user file hard-linked there is not written either
    empty.write_bytes(b"")
    os.link(empty, atomic.lock_path_for(tmp_path / "e.lstm"))
    with pytest.raises(OutputError, match="hard links"):
        with atomic.output_lock(tmp_path / "e.lstm"):
            pass
    assert empty.read_bytes() == b""


def test_side_files_an_output_that_is_an_lstm_lock_file_is_refused(tmp_path):
    out = tmp_path / "m.lstm"
    with atomic.output_lock(out):
        pass
    lock = atomic.lock_path_for(out)
    with pytest.raises(OutputError, match="is a lock file"):  # e.g. predict --out .m.lstm.lock
        atomic.check_output_path(lock)
    assert Path(lock).read_bytes() == atomic.LOCK_MARKER


# ------------------------------------------------------------------------------------------
# side_files: .X.ckpt


def fake_checkpoint(path: Path, epoch: int) -> None:
    modelfile.save(path, {"format": checkpoint.FORMAT, "checkpoint_version": checkpoint.VERSION, "epoch": epoch},
                   {"params": np.zeros(3)}, schema=False)


def test_side_files_foreign_checkpoint_is_refused_before_training(model, tmp_path):
    model_path, _ = model
    csv = write_csv(tmp_path / "data.csv")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(USER_DATA)
    cases = {
        "notes.lstm": (lambda p: p.write_bytes(USER_DATA), "is not an lstm checkpoint"),
        "empty.lstm": (lambda p: p.write_bytes(b""), "is not an lstm checkpoint"),
        "model.lstm": (lambda p: shutil.copyfile(model_path, p), "not a checkpoint"),  # a backup of a model
        "link.lstm": (lambda p: os.symlink(victim, p), "symbolic link"),
        "fifo.lstm": (os.mkfifo, "not a regular file"),
        "dir.lstm": (os.mkdir, "not a regular file"),
        "hard.lstm": (lambda p: os.link(victim, p), "hard links"),
    }
    for name, (make, why) in cases.items():
        out = tmp_path / name
        ckpt = Path(checkpoint.checkpoint_path_for(out))
        make(ckpt)
        before = ckpt.read_bytes() if ckpt.is_file() else None
        with deadline(20):  # an open that blocked on the FIFO would hang here
            result = invoke(*train_args(csv, out, "-q"))
        assert result.exit_code == 73, (name, result.output)
        line = one_line(result)
        assert str(ckpt) in line and why in line and "lstm did not write it" in line, line
        assert not out.exists(), name  # refused at the start: no training, no model
        assert os.path.lexists(ckpt), name
        if before is not None:
            assert ckpt.read_bytes() == before, name
        assert victim.read_bytes() == USER_DATA, name
        assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_side_files_stale_temp_cleanup_removes_only_what_lstm_created(tmp_path):
    out = tmp_path / "m.lstm"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    victim = tmp_path / "victim.txt"
    victim.write_bytes(USER_DATA)
    try:
        orphan = tmp_path / f".m.lstm.tmp-{dead}-abcdefgh"
        orphan.write_bytes(b"x")
        kept = {
            f".m.lstm.tmp-{alive.pid}-abcdefgh": lambda p: p.write_bytes(b"x"),  # a live writer's
            f"..m.lstm.ckpt.tmp-{dead}-abcdefg1": lambda p: os.symlink(victim, p),
            f".m.lstm.tmp-{dead}-abcdefg2": os.mkdir,
            f".m.lstm.tmp-{dead}-abcdefg3": lambda p: os.link(victim, p),
            f".m.lstm.tmp-{dead}-abcdefg4x": lambda p: p.write_bytes(b"x"),  # not mkstemp's name
        }
        for name, make in kept.items():
            make(tmp_path / name)
        if os.geteuid() == 0:  # another user's file of the right name
            other = tmp_path / f".m.lstm.tmp-{dead}-abcdefg5"
            other.write_bytes(b"x")
            os.chown(other, 65534, 65534)
            kept[other.name] = None
        removed = checkpoint.remove_stale_temps(out)
        assert removed == [str(orphan)]
        assert all(os.path.lexists(tmp_path / name) for name in kept)
        assert victim.read_bytes() == USER_DATA
    finally:
        alive.kill()
        alive.wait()


# ------------------------------------------------------------------------------------------
# out_dash


def test_out_dash_train_out_is_refused_with_exit_2(tmp_path, monkeypatch):
    csv = write_csv(tmp_path / "data.csv")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = invoke(*train_args(csv, "-"))
    assert result.exit_code == 2, result.output
    line = one_line(result)
    assert line.startswith("lstm: --out -:") and "not stdout" in line
    assert os.listdir(cwd) == []  # no file named -, no lock beside it


def test_out_dash_other_path_options_are_refused_with_exit_2(model, tmp_path, monkeypatch):
    model_path, csv = model
    cases = {
        "--warm-start": train_args(csv, tmp_path / "w.lstm", "--warm-start", "-"),
        "--plot": ["evaluate", model_path, csv, "--plot", "-"],
        "MODEL": ["evaluate", "-", csv],
        "export MODEL": ["export", "-", "--format", "json", "--out", tmp_path / "e.json"],
        "predict MODEL": ["predict", "-", csv],
        "info MODEL": ["info", "-"],
        "validate MODEL": ["validate", csv, "--model", "-"],
    }
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    Path("-").write_bytes(model_path.read_bytes())  # even when a file named - exists
    for what, args in cases.items():
        result = invoke(*args)
        assert result.exit_code == 2, (what, result.output)
        assert one_line(result).startswith(f"lstm: {what.split()[-1]} -:"), result.output
    assert sorted(os.listdir(cwd)) == ["-"]
    assert not (tmp_path / "w.lstm").exists() and not (tmp_path / "e.json").exists()


# ------------------------------------------------------------------------------------------
# wait_time_limit

HOLDER = """
import sys
from lstm_cli.atomic import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


@contextlib.contextmanager
def holding(out):
    """Another process holding the lock of `out` until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == b"locked"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_wait_time_limit_output_lock_gives_up_at_the_deadline(tmp_path):
    out = tmp_path / "m.lstm"
    with holding(out) as holder:
        t0 = time.monotonic()
        with pytest.raises(LockedError) as e:
            with atomic.output_lock(out, wait=True, deadline=t0 + 0.5):
                pass
        waited = time.monotonic() - t0
    assert 0.45 <= waited < 2.0
    assert e.value.exit_code == 75
    assert f"pid {holder.pid}" in str(e.value) and re.search(r"waited 0\.[5-9] s", str(e.value))
    assert "the time limit ran out" in str(e.value)
    with atomic.output_lock(out, wait=True, deadline=time.monotonic() - 1):  # a free lock: taken at once
        pass


def _entry(args, **kw):
    env = dict(os.environ)
    env.pop("LSTM_DEBUG", None)
    return subprocess.Popen(ENTRY + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, stdin=subprocess.DEVNULL, **kw)


def test_wait_time_limit_train_exits_75_when_the_limit_runs_out_while_waiting(tmp_path):
    csv = write_csv(tmp_path / "data.csv")
    out = tmp_path / "m.lstm"
    with holding(out) as holder:
        t0 = time.monotonic()
        proc = _entry(train_args(csv, out, "--wait", "--time-limit", "2s"))
        _, err = proc.communicate(timeout=60)
        wall = time.monotonic() - t0
    assert proc.returncode == 75, err
    assert 2.0 <= wall < 2.0 + 8, wall  # gave up at the limit (plus the interpreter's start)
    assert re.fullmatch(rf"lstm: {re.escape(str(out))} is being written by another lstm run \(pid {holder.pid}\); "
                        r"waited [12]\.\d s for it and the time limit ran out; retry later or raise --time-limit\n",
                        err), err
    assert not out.exists()


def _catches(pid: int, sig: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (sig - 1) & 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the signal mask from /proc")
@pytest.mark.parametrize("sig, code, extra", [(signal.SIGTERM, 143, ("--time-limit", "60s")),
                                              (signal.SIGINT, 130, ())])
def test_wait_time_limit_a_signal_stops_the_wait(tmp_path, sig, code, extra):
    csv = write_csv(tmp_path / "data.csv")
    out = tmp_path / "m.lstm"
    with holding(out):
        proc = _entry(train_args(csv, out, "--wait", *extra))
        deadline = time.monotonic() + 30
        while proc.poll() is None and not _catches(proc.pid, sig) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.5)  # StopFlag is in place; the lock is taken right after: it is waiting now
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 3
    assert proc.returncode == code, err
    assert err.splitlines() == ["lstm: interrupted before training started; no model was written"]


# ------------------------------------------------------------------------------------------
# plot_suffix

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


def test_plot_suffix_picks_the_format_written(model, tmp_path):
    pytest.importorskip("matplotlib")
    from lstm_cli import plot
    from lstm_cli.evaluate import evaluate_from_csv

    model_path, csv = model
    out = tmp_path / "Plot.PDF"  # the suffix in any case
    result = invoke("evaluate", model_path, csv, "--plot", out, "-q")
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(MAGIC["pdf"])
    ev = evaluate_from_csv(str(model_path), str(csv), plot_panels=plot.PANEL_LIMIT)
    for suffix, fmt in plot.FORMATS.items():
        assert plot.plot_format(f"x{suffix}") == fmt
        data = plot.render(ev, "title", fmt)
        assert data.startswith(MAGIC[fmt]), fmt
        assert plot.render(ev, "title", fmt) == data, fmt  # no dates or random ids embedded
    assert b"<svg" in plot.render(ev, "title", "svg")[:400]


def test_plot_suffix_other_or_none_is_refused_before_any_work(model, tmp_path):
    model_path, _ = model
    missing = tmp_path / "missing.csv"  # reading it would be exit 66: the suffix is refused first
    for name in ("plot.jpg", "plot", "plot.png.gz", "plot."):
        result = invoke("evaluate", model_path, missing, "--plot", tmp_path / name)
        assert result.exit_code == 2, (name, result.output)
        line = one_line(result)
        assert ".png, .pdf or .svg" in line and name in line, line
        assert not (tmp_path / name).exists()


# ------------------------------------------------------------------------------------------
# checkpoint_rerun


def test_checkpoint_rerun_without_resume_says_so_and_keeps_it_until_replaced(tmp_path):
    csv = write_csv(tmp_path / "data.csv")
    out = tmp_path / "m.lstm"
    ckpt = Path(checkpoint.checkpoint_path_for(out))
    fake_checkpoint(ckpt, epoch=7)
    before = ckpt.read_bytes()
    # stopped before this run wrote a checkpoint of its own: the old one is still there for --resume
    result = invoke(*train_args(csv, out, "--time-limit", "0.001s"))
    assert result.exit_code == 2, result.output
    note = (f"lstm: note: found checkpoint {ckpt} of a stopped run after epoch 7; training from epoch 1 without "
            "it (pass --resume to continue from it); this run's first checkpoint replaces it")
    assert note in result.stderr.splitlines(), result.stderr
    assert ckpt.read_bytes() == before
    result = invoke(*train_args(csv, out))  # a finished run: its own checkpoint replaced it, then went
    assert result.exit_code == 0, result.output
    assert note in result.stderr.splitlines()
    assert not ckpt.exists() and out.exists()
    ckpt.write_bytes(modelfile.MAGIC + b"\x00garbage")  # a damaged checkpoint: lstm's, said so, replaced
    result = invoke(*train_args(csv, out))
    assert result.exit_code == 0, result.output
    assert f"lstm: note: found a damaged checkpoint {ckpt}; training from epoch 1" in result.stderr
    assert not ckpt.exists()
    result = invoke(*train_args(csv, out, "-q"))  # no checkpoint: no note
    assert result.exit_code == 0 and result.stderr == "", result.output


# ------------------------------------------------------------------------------------------
# interrupt_message


def test_interrupt_message_says_whether_a_previous_model_was_kept(tmp_path):
    out = tmp_path / "m.lstm"
    stop = StopFlag(None, epochs=50, out=str(out))
    assert stop.message() == "interrupted before training started; no model was written"
    stop.phase = "training"
    assert stop.message() == "interrupted at epoch 1/50; no model was written"  # no checkpoint yet
    stop.epoch = 16
    assert stop.message() == "interrupted at epoch 17/50; no model was written; resume with --resume"
    stop.phase = "saving"
    assert stop.message() == ("interrupted at epoch 16/50 while saving the model; no model was written; "
                              "resume with --resume")
    out.write_bytes(b"old model")
    assert stop.message() == ("interrupted at epoch 16/50 while saving the model; previous model kept; "
                              "resume with --resume")
    stop.phase = "start"
    assert stop.message() == "interrupted before training started; previous model kept"


def test_interrupt_message_time_limit_before_the_first_epoch(tmp_path):
    csv = write_csv(tmp_path / "data.csv")
    out = tmp_path / "m.lstm"
    result = invoke(*train_args(csv, out, "--time-limit", "0.001s", "-q"))
    assert result.exit_code == 2
    assert one_line(result) == (f"lstm: --time-limit ran out before the first epoch finished; no model was "
                                f"written ({out}); raise --time-limit")
    out.write_bytes(b"old model")
    result = invoke(*train_args(csv, out, "--time-limit", "0.001s", "-q"))
    assert one_line(result) == (f"lstm: --time-limit ran out before the first epoch finished; previous model "
                                f"kept ({out}); raise --time-limit")
    assert out.read_bytes() == b"old model"


def test_plot_ignores_a_matplotlibrc_in_the_working_directory(model, tmp_path):
    """matplotlib reads ./matplotlibrc first: in a shared folder anyone's file would restyle (or, through
    figure.hooks, run code for) the plot. The plot is drawn with matplotlib's own defaults."""
    model_path, csv = model
    clean = tmp_path / "clean"
    hostile = tmp_path / "hostile"
    for d in (clean, hostile):
        d.mkdir()
    (hostile / "matplotlibrc").write_text("lines.linewidth: 40\nfigure.facecolor: red\nsvg.fonttype: none\n"
                                          "figure.hooks: os:system\n")
    out = {}
    for d in (clean, hostile):  # a process of its own: matplotlib reads the file when it is imported
        proc = subprocess.run([sys.executable, "-m", "lstm_cli", "evaluate", str(model_path), str(csv), "--plot",
                               str(d / "p.svg"), "-q"], cwd=d, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out[d] = (d / "p.svg").read_bytes()
    assert out[clean] == out[hostile]


def test_log_forging_plot_titles_quote_bidi_ids_and_escape_dollars(tmp_path):
    """An id with U+202E reversed the MASE figures of its panel title; one with '$' pairs was parsed as
    math. Titles show ids as messages do (quoted when not printable) and '$' literally."""
    t = np.arange(40)
    rows = "".join(f"{sid},{i},{10 + np.sin(i / 2) + k:.4f}\n" for k, sid in enumerate(["\u202eevil", "$\\frac{1}$"])
                   for i in t)
    csv = tmp_path / "ids.csv"
    csv.write_text("sid,step,y\n" + rows)
    m = tmp_path / "m.lstm"
    assert invoke(*train_args(csv, m, "--id-col", "sid", "-q")).exit_code == 0
    result = invoke("evaluate", m, csv, "--plot", tmp_path / "p.svg", "-q")
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "p.svg").read_text()
    assert "\u202e" not in svg and "\\u202eevil" in svg
    assert "frac{1}" in svg  # drawn as text, not as a fraction
