"""Reliable in cron: checkpoints and --resume, kills at random moments, SIGINT/SIGTERM, the output
lock, --time-limit, and a run in cron's environment.

The first part tests the pieces in process (fit's resume, the checkpoint file, StopFlag,
_prepare_runtime); the second runs the installed `lstm` entry point as cron would.
"""

from __future__ import annotations

import copy
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from lstm_cli import checkpoint, cli, modelfile
from lstm_cli.errors import DataError, Interrupted
from lstm_cli.network import Architecture, Network
from lstm_cli.train import TrainConfig, TrainState, fit

LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable)) or shutil.which("lstm")
VENV_BIN = os.path.dirname(LSTM) if LSTM else ""
needs_entry_point = pytest.mark.skipif(LSTM is None, reason="the lstm entry point is not installed")
INTERRUPTED = re.compile(r"lstm: interrupted at epoch (\d+)/(\d+); previous model kept; resume with --resume")


# ------------------------------------------------------------------------------------------
# In process: fit(resume=...) continues bit for bit


def _problem(seed=0, n=70, T=7, D=2, n_out=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, D))  # (N, T, D)
    y = rng.normal(size=(n, n_out))  # (N, O)
    return x[:56], y[:56], x[56:], y[56:]


def _snapshot(state: TrainState) -> TrainState:
    return copy.deepcopy(state)  # on_state hands out the live buffers


CONFIGS = {
    "adam": dict(arch=(2, 5, 1, 3, "float32"),
                 config=TrainConfig(epochs=7, batch_size=16, lr=0.02, lr_patience=0, seed=3)),
    "adam-early-stop": dict(arch=(2, 5, 1, 3, "float32"),
                            config=TrainConfig(epochs=9, batch_size=16, lr=0.02, patience=3, lr_patience=0, seed=3)),
    "sgd-momentum": dict(arch=(2, 5, 1, 3, "float64"),
                         config=TrainConfig(epochs=7, batch_size=16, optimizer="sgd", lr=0.05, momentum=0.9,
                                            lr_patience=1, seed=4)),
    "dropout-2-layers-quantiles": dict(arch=(2, 4, 2, 3, "float32"),
                                       config=TrainConfig(epochs=7, batch_size=8, lr=0.02, dropout=0.3,
                                                          weight_decay=0.01, lr_patience=0, seed=5),
                                       quantiles=np.array([0.1, 0.5, 0.9])),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resume_from_any_epoch_reaches_the_same_weights(name, tmp_path):
    spec = CONFIGS[name]
    x, y, xv, yv = _problem()
    q = spec.get("quantiles")

    def net():
        return Network(Architecture(*spec["arch"]), seed=11, forget_bias=1.0, threads=2)

    full, states = net(), []
    ref = fit(full, x, y, xv, yv, spec["config"], quantiles=q, on_state=lambda s: states.append(_snapshot(s)))
    assert len(states) == ref.epochs_run - 1  # none for the epoch that ends training
    assert ref.stopped_by == ("early_stop" if "early" in name else None)
    assert ref.best_epoch < ref.epochs_run  # the best weights are not the last: their copy matters
    assert len({s.lr for s in states}) > 1  # the schedule changed the lr on the way: its state matters
    settings, digest = {"case": name}, "0" * 64
    for state in states:
        path = tmp_path / f".e{state.epoch}.ckpt"  # through the file, as a killed run would
        assert checkpoint.save(str(path), state, settings=settings, data_sha256=digest)
        loaded = checkpoint.load(str(path), settings=settings, data_sha256=digest)
        resumed = net()
        result = fit(resumed, x, y, xv, yv, spec["config"], quantiles=q, resume=loaded)
        assert resumed.params.tobytes() == full.params.tobytes(), f"resumed after epoch {state.epoch}"
        assert (result.train_loss, result.val_loss, result.best_epoch, result.epochs_run) == \
               (ref.train_loss, ref.val_loss, ref.best_epoch, ref.epochs_run)
        assert result.resumed_from == state.epoch


def test_resume_survives_a_stop_mid_epoch():
    """A signal mid-epoch: the partial epoch is dropped, the last state is the previous epoch's."""
    spec = CONFIGS["adam"]
    x, y, xv, yv = _problem()
    full = Network(Architecture(*spec["arch"]), seed=11, threads=2)
    fit(full, x, y, xv, yv, spec["config"])
    calls, states, reports = {"n": 0}, [], []

    def stop_in_epoch_4():
        calls["n"] += 1
        return "signal" if calls["n"] == 3 * 4 + 2 else None  # 56 windows / 16 = 4 batches an epoch

    part = Network(Architecture(*spec["arch"]), seed=11, threads=2)
    result = fit(part, x, y, xv, yv, spec["config"], should_stop=stop_in_epoch_4,
                 on_state=lambda s: states.append(_snapshot(s)), on_epoch=reports.append)
    assert result.stopped_by == "signal" and result.epochs_run == 3 and states[-1].epoch == 3
    assert [r.epoch for r in reports] == [1, 2, 3]  # no report for the partial epoch
    resumed = Network(Architecture(*spec["arch"]), seed=11, threads=2)
    fit(resumed, x, y, xv, yv, spec["config"], resume=states[-1])
    assert resumed.params.tobytes() == full.params.tobytes()


def test_resume_refuses_a_state_of_another_shape():
    spec = CONFIGS["adam"]
    x, y, xv, yv = _problem()
    states = []
    fit(Network(Architecture(*spec["arch"]), seed=1), x, y, xv, yv, spec["config"],
        on_state=lambda s: states.append(_snapshot(s)))
    bigger = Network(Architecture(2, 6, 1, 3, "float32"), seed=1)
    with pytest.raises(ValueError, match="parameters"):
        fit(bigger, x, y, xv, yv, spec["config"], resume=states[0])


# ------------------------------------------------------------------------------------------
# The checkpoint file


def _state(epochs=3) -> TrainState:
    spec = CONFIGS["adam"]
    x, y, xv, yv = _problem()
    states = []
    fit(Network(Architecture(*spec["arch"]), seed=1), x, y, xv, yv, spec["config"],
        on_state=lambda s: states.append(_snapshot(s)))
    return states[epochs - 1]


def test_checkpoint_of_other_settings_or_data_is_refused_saying_what_differs(tmp_path):
    path = str(tmp_path / ".m.lstm.ckpt")
    settings = {"hidden": 8, "train.lr": 0.003, "threads": 2}
    checkpoint.save(path, _state(), settings=settings, data_sha256="a" * 64)
    with pytest.raises(DataError, match=r'hidden 8 there, 16 here') as e:
        checkpoint.load(path, settings=dict(settings, hidden=16), data_sha256="a" * 64)
    assert e.value.exit_code == 65 and "without --resume" in str(e.value)
    with pytest.raises(DataError, match="the data changed"):
        checkpoint.load(path, settings=settings, data_sha256="b" * 64)
    assert checkpoint.load(path, settings=settings, data_sha256="a" * 64).epoch == 3


def test_damaged_checkpoint_costs_time_not_the_run(tmp_path):
    path = tmp_path / ".m.lstm.ckpt"
    settings = {"x": 1}
    assert checkpoint.resume_state(str(path), settings=settings, data_sha256="a" * 64) == (None, None)
    checkpoint.save(str(path), _state(), settings=settings, data_sha256="a" * 64)
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    state, problem = checkpoint.resume_state(str(path), settings=settings, data_sha256="a" * 64)
    assert state is None and "unusable" in problem and "checksum" in problem
    path.write_bytes(bytes(data[:100]))
    assert checkpoint.resume_state(str(path), settings=settings, data_sha256="a" * 64)[0] is None


def test_checkpoint_holds_no_pickle_and_names_its_format(tmp_path):
    path = tmp_path / ".m.lstm.ckpt"
    state = _state()
    checkpoint.save(str(path), state, settings={"x": 1}, data_sha256="a" * 64)
    header, arrays = modelfile.load(path, schema=False)
    assert header["format"] == "lstm-checkpoint" and header["epoch"] == 3
    assert header["rng_state"] == state.rng_state  # 128-bit ints survive the JSON header
    assert sorted(arrays) == ["best_params", "optim.m", "optim.v", "params"]
    with pytest.raises(Exception, match="invalid model header"):
        modelfile.load(path)  # never mistaken for a model


def test_writer_skips_epochs_only_while_checkpoints_would_cost_too_much(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(checkpoint, "save", lambda path, state, **kw: saved.append(state.epoch) or True)
    now = {"t": 0.0}

    def clock():
        return now["t"]

    def run(writer, epoch_seconds, write_seconds, epochs=12):
        for epoch in range(1, epochs + 1):
            now["t"] += epoch_seconds
            real = checkpoint.save

            def timed(path, state, real=real, **kw):
                now["t"] += write_seconds
                return real(path, state, **kw)

            monkeypatch.setattr(checkpoint, "save", timed)
            writer(TrainState(epoch, None, None, 0.0, 0, "adam", 0, 1.0, {}, 0.0, 0, {}))
            monkeypatch.setattr(checkpoint, "save", real)

    run(checkpoint.Writer("p", settings={}, data_sha256="", clock=clock), epoch_seconds=1.0, write_seconds=0.01)
    assert saved == list(range(1, 13))  # slow epochs: every one
    saved.clear()
    run(checkpoint.Writer("p", settings={}, data_sha256="", clock=clock), epoch_seconds=0.002, write_seconds=0.01,
        epochs=120)
    assert saved == [1, 51, 101]  # fast epochs: a write costs 5 of them: one every 50 (10 ms per 100 ms)
    saved.clear()
    run(checkpoint.Writer("p", settings={}, data_sha256="", clock=clock, max_overhead=None),
        epoch_seconds=0.002, write_seconds=0.01)
    assert saved == list(range(1, 13))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_stale_temp_files_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path / "m.lstm"
    dead = [pid for pid in range(4_000_000, 4_100_000) if not _alive(pid)][:2]  # no such process here
    names = [f".m.lstm.tmp-{dead[0]}-abcdefgh", f"..m.lstm.ckpt.tmp-{dead[1]}-abc_1234",  # orphans: removed
             ".m.lstm.tmp-x", ".other.lstm.tmp-1-abcdefgh", "m.lstm", ".m.lstm.lock", ".m.lstm.ckpt",
             f".m.lstm.tmp-{os.getpid()}-abcdefgh"]  # ours (in progress): kept
    for n in names:
        (tmp_path / n).write_text("x")
    removed = checkpoint.remove_stale_temps(out)
    assert sorted(os.path.basename(p) for p in removed) == sorted(names[:2])
    assert sorted(os.listdir(tmp_path)) == sorted(names[2:])


def test_checkpoint_path_is_beside_the_resolved_output(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real" / "m.lstm", tmp_path / "link.lstm")
    assert checkpoint.checkpoint_path_for(tmp_path / "link.lstm") == str(tmp_path / "real" / ".m.lstm.ckpt")


# ------------------------------------------------------------------------------------------
# StopFlag and _prepare_runtime


def test_stop_flag_phases():
    stop = cli.StopFlag(None, epochs=50)
    with pytest.raises(Interrupted, match="before training started") as e:
        stop._handle(signal.SIGTERM, None)  # nothing written yet: stop at once
    assert e.value.exit_code == 143
    stop = cli.StopFlag(None, epochs=50)
    stop.phase, stop.epoch = "training", 16
    stop._handle(signal.SIGINT, None)  # first: finish the batch
    assert stop() == "signal"
    with pytest.raises(Interrupted) as e:
        stop._handle(signal.SIGINT, None)  # second: at once
    assert INTERRUPTED.fullmatch(f"lstm: {e.value}").groups() == ("17", "50") and e.value.exit_code == 130
    stop = cli.StopFlag(None, epochs=50)
    stop.phase = "done"
    stop._handle(signal.SIGTERM, None)  # the model is saved: nothing to undo
    assert stop() == "signal"


def test_time_limit_flag():
    stop = cli.StopFlag(0.05)
    assert stop() is None
    time.sleep(0.06)
    assert stop() == "time_limit"


@pytest.fixture
def read_only_install(monkeypatch, tmp_path):
    """No NUMBA_CACHE_DIR, no HOME, a package directory os.access calls unwritable."""
    package_dir = os.path.dirname(os.path.abspath(cli.__file__))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.path.abspath(p) == package_dir
                        else real_access(p, mode))
    for var in ("NUMBA_CACHE_DIR", "HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return tmp_path


def test_prepare_runtime_finds_a_writable_cache_for_a_read_only_install(read_only_install):
    cli._prepare_runtime()
    chosen = os.environ["NUMBA_CACHE_DIR"]
    assert chosen == str(read_only_install / "tmp" / f"lstm-cli-numba-{os.getuid()}")
    assert os.path.isdir(chosen) and os.access(chosen, os.W_OK)
    assert os.environ["OPENBLAS_NUM_THREADS"]


def test_prepare_runtime_prefers_xdg_then_home(read_only_install, monkeypatch):
    monkeypatch.setenv("HOME", str(read_only_install / "home"))
    cli._prepare_runtime()
    assert os.environ["NUMBA_CACHE_DIR"] == str(read_only_install / "home" / ".cache" / "lstm-cli" / "numba")
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    (read_only_install / "file").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(read_only_install / "file"))  # cannot be created: skipped
    cli._prepare_runtime()
    assert os.environ["NUMBA_CACHE_DIR"] == str(read_only_install / "home" / ".cache" / "lstm-cli" / "numba")
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(read_only_install / "xdg"))
    cli._prepare_runtime()
    assert os.environ["NUMBA_CACHE_DIR"] == str(read_only_install / "xdg" / "lstm-cli" / "numba")


def test_prepare_runtime_keeps_a_given_cache_and_a_writable_install(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    cli._prepare_runtime()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path)
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setattr(os, "access", lambda p, mode: True)
    cli._prepare_runtime()
    assert "NUMBA_CACHE_DIR" not in os.environ  # numba's default: __pycache__ beside the sources


# ------------------------------------------------------------------------------------------
# Through the entry point


SOURCE_DATE_EPOCH = "1700000000"


def _env(**extra) -> dict:
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, **extra)
    env.pop("LSTM_DEBUG", None)
    return env


def write_job_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(rows)
    y = 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.01 * t + rng.normal(0, 0.5, rows)
    path.write_text("step,y\n" + "".join(f"{i},{v:.6f}\n" for i, v in zip(t, y, strict=True)))


class Job:
    """A training job of a few seconds with one fixed result."""

    def __init__(self, directory: Path, epochs: int = 20):
        directory.mkdir(exist_ok=True)
        self.dir = directory
        self.csv = directory / "job.csv"
        write_job_csv(self.csv, 9600)  # epochs long enough that a signal lands inside training
        self.out = directory / "m.lstm"
        self.epochs = epochs
        self.ckpt = Path(checkpoint.checkpoint_path_for(self.out))

    def args(self, *extra, out=None, epochs=None) -> list[str]:
        return [LSTM, "train", str(self.csv), "--target", "y", "--time-col", "step", "--horizon", "6",
                "--lookback", "48", "--hidden", "8", "--epochs", str(epochs or self.epochs), "--patience", "1000",
                "--threads", "2", "--out", str(out or self.out), *extra]

    def run(self, *extra, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(*extra, **kw), capture_output=True, text=True, env=_env(), timeout=300,
                              stdin=subprocess.DEVNULL)

    def start(self, *extra, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.args(*extra, **kw), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_env(), stdin=subprocess.DEVNULL)

    def leftovers(self) -> list[str]:
        return sorted(n for n in os.listdir(self.dir) if n not in ("job.csv", "m.lstm", ".m.lstm.lock"))


def wait_for_line(proc: subprocess.Popen, pattern: str, lines: list[str]) -> bool:
    """Read proc's stderr until a line matches (True) or it ends (False)."""
    for line in proc.stderr:
        lines.append(line)
        if re.search(pattern, line):
            return True
    return False


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The job, its uninterrupted model (bytes) and wall time, and an older model to protect."""
    job = Job(tmp_path_factory.mktemp("job"))
    old = job.run("-q", "--seed", "1", epochs=1)  # first: it also fills the JIT cache, so the timing below
    assert old.returncode == 0, old.stderr       # is a run's, not a compile's
    job.old = job.out.read_bytes()
    t0 = time.monotonic()
    proc = job.start()
    lines = []
    assert wait_for_line(proc, r"^epoch 1/", lines), "".join(lines)
    job.first_epoch_at = time.monotonic() - t0
    assert wait_for_line(proc, rf"^epoch {job.epochs}/", lines), "".join(lines)
    job.training_seconds = time.monotonic() - t0 - job.first_epoch_at  # epochs 2.. and their checkpoints
    _, err = proc.communicate(timeout=300)
    job.seconds = time.monotonic() - t0
    assert proc.returncode == 0, err
    job.ref = job.out.read_bytes()
    job.out.write_bytes(job.old)
    assert job.old != job.ref and job.leftovers() == []
    return job


@needs_entry_point
def test_sigkill_at_random_moments_then_resume(job):
    """A dozen seeded kills anywhere in a run (start-up, an epoch, a checkpoint write, the final
    save): --out is the old model or the complete new one, and --resume then ends with the
    uninterrupted run's exact bytes, leaving no checkpoint and no temporary file.

    A quarter of the kills fall in start-up, a quarter near the end of training, the others
    anywhere in it (measured from the run's own first progress line, so a loaded machine does not
    push them all into start-up). Every fourth trial kills the --resume run as well."""
    rng = random.Random(20260131)
    seen = {"old": 0, "new": 0, "resumed_after": [], "killed_resumes": 0}
    for trial in range(12):
        job.out.write_bytes(job.old)
        runs = [()] if trial % 4 != 1 else [(), ("--resume",)]
        for extra in runs:
            proc = job.start(*extra)
            if trial % 4 == 0:  # start-up: imports, reading the data, the first epoch
                time.sleep(rng.uniform(0.0, job.first_epoch_at))
            else:  # the epochs and their checkpoints; every fourth trial near the end (the final save)
                wait_for_line(proc, r"^(epoch \d+/|lstm: resuming|lstm: no checkpoint)", [])
                lo, hi = (0.8, 1.3) if trial % 4 == 3 else (0.0, 0.8)
                time.sleep(rng.uniform(lo, hi) * job.training_seconds)
            proc.kill()
            proc.communicate()
            data = job.out.read_bytes()
            if data == job.old:
                seen["old"] += 1
            else:
                modelfile.load(job.out)  # complete and valid
                assert data == job.ref, f"trial {trial}: a model that is neither the old nor the new one"
                seen["new"] += 1
            seen["killed_resumes"] += extra == ("--resume",)
        had = None
        if job.ckpt.exists():
            had = modelfile.load(job.ckpt, schema=False)[0]["epoch"]
        done = job.run("--resume")
        assert done.returncode == 0, done.stderr
        if had is None:
            assert "no checkpoint" in done.stderr, done.stderr
        else:
            assert f"resuming after epoch {had}/{job.epochs}" in done.stderr, done.stderr
            seen["resumed_after"].append(had)
        assert job.out.read_bytes() == job.ref, f"trial {trial}: resumed after epoch {had}"
        assert job.leftovers() == [], job.leftovers()
    summary = (f"SIGKILL trials: 12, {seen}; job {job.seconds:.1f} s: epoch 1 done at {job.first_epoch_at:.1f} s, "
               f"the other epochs in {job.training_seconds:.1f} s")
    print("\n" + summary)
    assert len(seen["resumed_after"]) >= 3, summary  # kills did land inside training (6 of 12 aim there)


@needs_entry_point
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_within_a_batch_keeps_the_old_model_and_resumes(job, sig, code):
    job.out.write_bytes(job.old)
    proc = job.start()
    lines = []
    assert wait_for_line(proc, r"^epoch 1/", lines), "".join(lines)
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=30)
    stop_seconds = time.monotonic() - t0
    assert proc.returncode == code, rest
    err = "".join(lines) + rest
    assert stop_seconds < 3.0
    ends = [line for line in err.splitlines() if "interrupted" in line]
    assert len(ends) == 1 and INTERRUPTED.fullmatch(ends[0]), err
    assert err.splitlines()[-1] == ends[0] and "Traceback" not in err
    assert job.out.read_bytes() == job.old
    epoch = int(INTERRUPTED.fullmatch(ends[0]).group(1))
    assert modelfile.load(job.ckpt, schema=False)[0]["epoch"] <= epoch - 1
    other = job.run("--resume", "--lr", "0.0123")  # a checkpoint of another run is refused
    assert other.returncode == 65
    assert other.stderr.splitlines()[-1].startswith("lstm: checkpoint ")
    assert re.search(r"belongs to another training run \(train\.lr \S+ there, 0\.0123 here\)", other.stderr)
    assert job.out.read_bytes() == job.old and job.ckpt.exists()
    done = job.run("--resume")
    assert done.returncode == 0, done.stderr
    assert "resuming after epoch" in done.stderr
    assert job.out.read_bytes() == job.ref and job.leftovers() == []


def _catches(pid: int, sig: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (sig - 1) & 1)


@needs_entry_point
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the signal mask from /proc")
def test_signal_before_training_exits_at_once(job):
    job.out.write_bytes(job.old)
    proc = job.start()
    while proc.poll() is None and not _catches(proc.pid, signal.SIGTERM):
        time.sleep(0.005)  # until StopFlag holds SIGTERM: then it is importing or reading the data
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert time.monotonic() - t0 < 3.0
    assert err.splitlines() == ["lstm: interrupted before training started; previous model kept"]
    assert job.out.read_bytes() == job.old


@needs_entry_point
def test_second_run_on_the_same_output_exits_75_or_waits(job):
    job.out.write_bytes(job.old)
    first = job.start(epochs=1000)  # holds the lock until it is stopped
    lines = []
    assert wait_for_line(first, r"^epoch 1/", lines), "".join(lines)
    t0 = time.monotonic()
    second = job.run()
    assert second.returncode == 75, second.stderr
    assert time.monotonic() - t0 < 5
    assert second.stderr.splitlines() == [
        f"lstm: {job.out} is being written by another lstm run (pid {first.pid}); retry later or pass --wait"]
    waiter = job.start("--wait", "-q")
    time.sleep(1.0)  # the waiter blocks on the lock (without --wait it would have exited 75 by now)
    assert waiter.poll() is None and first.poll() is None
    first.send_signal(signal.SIGTERM)  # an interrupted holder releases the lock too
    _, err = first.communicate(timeout=60)
    assert first.returncode == 143, err
    assert job.out.read_bytes() == job.old
    _, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert job.out.read_bytes() == job.ref and job.leftovers() == []


@needs_entry_point
def test_time_limit_stops_cleanly_and_saves_the_best_model(job, tmp_path):
    out = tmp_path / "t.lstm"
    out.write_bytes(job.old)
    limit = math.ceil(2 * job.first_epoch_at + 1)  # room for start-up and a few epochs on a loaded machine
    t0 = time.monotonic()
    proc = subprocess.run(job.args("--time-limit", f"{limit}s", out=out, epochs=100_000), capture_output=True,
                          text=True, env=_env(), timeout=120, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert wall < limit + 5, wall  # the limit, plus interpreter start and the final save
    assert "stopped by time limit" in proc.stderr
    header, _ = modelfile.load(out)
    t = header["training"]
    val = t["history"]["val_loss"]
    assert 0 < t["best_epoch"] <= t["epochs_run"] < 100_000
    assert val[t["best_epoch"] - 1] == min(val)  # the best epoch's weights were kept
    assert sorted(os.listdir(tmp_path)) == [".t.lstm.lock", "t.lstm"]  # no checkpoint left


ALLOWED_STDERR = re.compile(r"lstm: \d+ series, .*|epoch \d+/\d+  train .*|lstm: trained .*|  \S.*"
                            r"|lstm: (reading |scaling and cutting windows: |loading the kernels ).*")  # the phases


def _cron_run(args, cwd, user=None) -> subprocess.CompletedProcess:
    """As cron runs a job: an empty environment but PATH and LANG=C, no HOME, no terminal
    (a new session), stdin from /dev/null, in a directory it cannot write."""
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user is not None else []
    return subprocess.run(["env", "-i", f"PATH={VENV_BIN}:/usr/bin:/bin", "LANG=C", *prefix, *args],
                          capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL, timeout=600,
                          start_new_session=True)


def _check_quiet_success(train: subprocess.CompletedProcess, predict: subprocess.CompletedProcess | None) -> None:
    assert train.returncode == 0, train.stderr
    assert train.stdout == ""
    if predict is not None:
        assert predict.returncode == 0, predict.stderr
        assert predict.stdout == "" and predict.stderr == ""
    bad = [line for line in train.stderr.splitlines() if not ALLOWED_STDERR.fullmatch(line)]
    assert bad == [], train.stderr  # no warnings (Python, NumPy, Numba), no colour, no bars
    assert "\x1b" not in train.stderr and "\r" not in train.stderr


def _cron_job(tmp: Path, user=None, predict=True):
    data = Path(__file__).resolve().parents[1] / "sample_data" / "a10_monthly.csv"
    shutil.copyfile(data, tmp / "a10.csv")
    out_dir, cwd = tmp / "out", tmp / "cwd"
    out_dir.mkdir()
    cwd.mkdir()
    if user is not None:
        os.chown(out_dir, user, user)
    cwd.chmod(0o555)
    train = _cron_run([LSTM, "train", str(tmp / "a10.csv"), "--target", "cost_million_aud", "--horizon", "12",
                       "--epochs", "3", "--hidden", "8", "--out", str(out_dir / "a10.lstm")], cwd, user)
    if predict:
        predicted = _cron_run([LSTM, "predict", str(out_dir / "a10.lstm"), str(tmp / "a10.csv"), "--out",
                               str(out_dir / "forecast.csv")], cwd, user)
        _check_quiet_success(train, predicted)
        assert len((out_dir / "forecast.csv").read_text().splitlines()) == 13
    else:
        _check_quiet_success(train, None)
        # a valid model; read as bytes: load refuses it to us (root), it is another user's file
        modelfile.loads((out_dir / "a10.lstm").read_bytes(), "a10.lstm")
    assert os.listdir(cwd) == []  # nothing written to the working directory


@needs_entry_point
def test_cron_environment(tmp_path):
    _cron_job(tmp_path)


@needs_entry_point
@pytest.mark.skipif(not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv")),
                    reason="needs root and setpriv to run as an unprivileged user")
def test_cron_as_a_user_who_cannot_write_the_install():
    """As nobody: the package directory is really read-only and there is no HOME, so the JIT
    cache must go elsewhere (_prepare_runtime) without a warning. The first run on a machine (or
    after kernels.py changes) compiles the training kernels (18 s measured on 2 cores); later
    ones load them from that cache."""
    nobody = 65534
    tmp = Path(tempfile.mkdtemp(prefix="lstm-cron-"))
    try:
        tmp.chmod(0o755)
        pkg = os.path.dirname(os.path.abspath(cli.__file__))
        probe = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                                "test", "-w", pkg])
        assert probe.returncode != 0  # the install is read-only for this user
        _cron_job(tmp, user=nobody, predict=False)  # (predict's kernels would double a cold compile)
        assert os.path.isdir(f"/tmp/lstm-cli-numba-{nobody}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_interrupted_message_is_the_documented_line():
    stop = cli.StopFlag(None, epochs=500)
    stop.phase, stop.epoch = "training", 16
    assert stop.message() == "interrupted at epoch 17/500; previous model kept; resume with --resume"
