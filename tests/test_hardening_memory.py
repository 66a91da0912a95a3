"""Issue 15, memory and the model file: sizes are estimated and refused (with the figure and a
remedy) before anything large is allocated, and the training settings a model file records are
validated like any header field, with the ranges of the train options (lstm_cli.limits)."""

from __future__ import annotations

import copy
import gzip
import io
import math
import os
import threading
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_cli import limits, memory
from lstm_cli import modelfile as mf
from lstm_cli.cli import cli
from lstm_cli.errors import DataError, ModelFileError, UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A10 = os.path.join(ROOT, "sample_data", "a10_monthly.csv")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("lstm: ") and "reading" not in line]
    assert lines, result.output
    assert "Traceback" not in result.output
    return lines[-1]


@pytest.fixture
def little_memory(monkeypatch):
    """Pretend `available` bytes are free, and check every size (no SMALL floor)."""

    def set_available(available: int):
        monkeypatch.setattr(memory, "available_bytes", lambda: available)
        monkeypatch.setattr(memory, "SMALL", 0)

    return set_available


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("m") / "a10.lstm"
    result = run("train", A10, "--target", "cost_million_aud", "--horizon", 3, "--lookback", 12, "--hidden", 2,
                 "--epochs", 1, "--out", path, "-q")
    assert result.exit_code == 0, result.output
    return str(path)


# ---------------------------------------------------------------------------------------------
# memory_estimate


def test_memory_estimate_available_bytes_is_a_positive_figure():
    available = memory.available_bytes()
    assert available is None or available > 0
    assert memory.fmt(38e9) == "38 GB" and memory.fmt(1.2e9) == "1.2 GB"


def test_memory_estimate_refuses_a_huge_network_before_reading(little_memory, tmp_path):
    little_memory(int(1.2e9))
    result = run("train", A10, "--target", "cost_million_aud", "--horizon", 3, "--hidden", 4096, "--layers", 16,
                 "--out", tmp_path / "m.lstm")
    assert result.exit_code == 2, result.output
    msg = one_line(result)
    assert "--hidden 4096 --layers 16" in msg and "GB of memory (1.2 GB available)" in msg
    assert "smaller --hidden or --layers" in msg
    assert not (tmp_path / "m.lstm").exists()


def test_memory_estimate_counts_the_training_windows(little_memory):
    from lstm_cli.pipeline import TrainRequest, check_training_memory

    req = TrainRequest(data="x.csv", out="m.lstm", targets=("y",), horizon=12)
    little_memory(10**9)
    check_training_memory(req, 1, 12, 48, 2, n_windows=1000)  # fits
    with pytest.raises(DataError) as e:
        check_training_memory(req, 1, 12, 48, 2, n_windows=10**8)
    assert e.value.exit_code == 65 and "100,000,000 windows" in str(e.value) and "--sample-series" in str(e.value)
    assert isinstance(e.value, memory.NotEnoughMemory)


def test_memory_estimate_is_close_to_the_parameter_layout():
    from lstm_cli.network import Architecture, ParamLayout

    for cell, gates in (("lstm", 4), ("gru", 3)):
        arch = Architecture(3, 7, 3, 5, cell=cell)
        assert memory.parameter_count(3, 7, 3, 5, gates) == ParamLayout(arch).size


def test_memory_estimate_refuses_a_long_predict_horizon(little_memory, model_path):
    little_memory(10**5)
    result = run("predict", model_path, A10, "--horizon", 2000)  # monthly: 2000 steps stay before 2262
    assert result.exit_code == 2, result.output
    msg = one_line(result)
    assert "2,000 steps" in msg and "available" in msg and "--horizon" in msg


def test_memory_estimate_refuses_many_backtest_origins(little_memory, model_path):
    little_memory(50_000)
    result = run("evaluate", model_path, A10, "--backtest", 20, "--step", 1)
    assert result.exit_code == 2, result.output
    assert "20 origins" in one_line(result) and "--backtest" in one_line(result)


# ---------------------------------------------------------------------------------------------
# the reader: a bomb that inflates below --max-input-bytes but whose parse would blow memory


def test_memory_estimate_refuses_a_gzip_line_without_end(tmp_path):
    path = tmp_path / "bomb.csv.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"date,y\n2020-01-01,")
        for _ in range(72):
            f.write(b"1" * (1 << 20))
    result = run("train", path, "--target", "y", "--horizon", 2, "--out", tmp_path / "m.lstm")
    assert result.exit_code == 65, result.output
    assert "line 2: a line longer than" in one_line(result)


def test_memory_estimate_refuses_a_huge_quoted_field(tmp_path):
    path = tmp_path / "field.csv.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b'date,y,note\n2020-01-01,1,"')
        for _ in range(72):
            f.write(b"x" * 1000 + b"\n")  # short physical lines, one endless field
    result = run("train", path, "--target", "y", "--horizon", 2, "--out", tmp_path / "m.lstm")
    assert result.exit_code == 65, result.output
    assert "line 2: a field longer than" in one_line(result) or "quote" in one_line(result)


def test_memory_estimate_refuses_a_header_of_a_million_columns(tmp_path):
    path = tmp_path / "wide.csv.gz"
    with gzip.open(path, "wb") as f:
        f.write(",".join(f"c{i}" for i in range(1_000_000)).encode() + b",date,y\n2020-01-01,1\n")
    result = run("train", path, "--target", "y", "--horizon", 2, "--out", tmp_path / "m.lstm")
    assert result.exit_code == 65, result.output
    assert "more than 100,000 columns" in one_line(result)


# ---------------------------------------------------------------------------------------------
# model_payload


def sparse_model(tmp_path, model_path, hidden=2048, layers=2) -> str:
    """A model file whose header promises a large payload of the right shapes (hidden x layers)
    that is a hole: a sparse file with a wrong payload checksum."""
    header = copy.deepcopy(mf.load_header(model_path))
    header["arch"].update(hidden_size=hidden, num_layers=layers)
    expected = mf.expected_arrays(header["arch"], len(header["series"]["ids"]))
    entries, offset = [], 0
    for name, (dtype, shape) in expected.items():
        offset = mf._align(offset)
        nbytes = mf.DTYPES[dtype].itemsize * math.prod(shape)
        entries.append({"name": name, "dtype": dtype, "shape": list(shape), "offset": offset, "nbytes": nbytes})
        offset += nbytes
    header["arrays"] = entries
    return write_hole(tmp_path / "sparse.lstm", header, offset)


def write_hole(path, header: dict, payload_len: int) -> str:
    """A container with `header` (checksummed) and a payload of payload_len bytes that is a hole
    (a sparse file) with a wrong payload checksum."""
    header["payload_sha256"] = "0" * 64
    header["header_sha256"] = mf._header_digest(header)
    raw = mf._canonical(header)
    head = mf.PREFIX.pack(mf.MAGIC, mf.FORMAT_VERSION, len(raw)) + raw
    head += bytes(mf._align(len(head)) - len(head))
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + payload_len)
    return str(path)


def test_model_payload_larger_than_memory_is_refused_before_allocating(tmp_path, model_path, little_memory):
    path = sparse_model(tmp_path, model_path)
    little_memory(100 * 10**6)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as e:
            mf.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "needs about" in str(e.value) and path in str(e.value) and e.value.exit_code == 65
    assert peak < 20 * 10**6
    result = run("predict", path, A10)
    assert result.exit_code == 65 and "needs about" in one_line(result)


def test_model_payload_is_checksummed_before_it_is_allocated(tmp_path, model_path):
    path = sparse_model(tmp_path, model_path)
    assert os.path.getsize(path) > mf._VERIFY_FIRST
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="payload checksum mismatch"):
            mf.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 10**6, peak  # the 400 MB payload was never held


def test_model_payload_info_reads_no_payload_into_memory(tmp_path, model_path):
    path = sparse_model(tmp_path, model_path)
    tracemalloc.start()
    try:
        result = run("info", path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 65 and "payload checksum mismatch" in one_line(result)
    assert peak < 64 * 10**6, peak
    good = run("info", model_path, "--format", "json")
    assert good.exit_code == 0 and '"hidden_size": 2' in good.output


def test_model_payload_info_checks_values_as_they_stream(tmp_path, model_path):
    header, arrays = mf.load(model_path)
    arrays = {k: np.array(v) for k, v in arrays.items()}
    arrays["scaler.scale"][0, 0] = 0.0
    bad = tmp_path / "zero_scale.lstm"
    mf.save(bad, dict(header), arrays)
    result = run("info", bad)
    assert result.exit_code == 65 and "scaler.scale" in one_line(result)


def test_model_payload_header_length_of_2gb_is_refused(tmp_path, model_path):
    data = bytearray(open(model_path, "rb").read())
    data[12:20] = (2 * 10**9).to_bytes(8, "little")
    path = tmp_path / "bighead.lstm"
    path.write_bytes(bytes(data))
    result = run("info", path)
    assert result.exit_code == 65 and "header length" in one_line(result)


# ---------------------------------------------------------------------------------------------
# refit_params


def with_params(tmp_path, model_path, **changes) -> str:
    header, arrays = mf.load(model_path)
    header = copy.deepcopy(dict(header))
    header["training"]["params"].update(changes)
    path = tmp_path / "params.lstm"
    mf.save(path, header, arrays, schema=False)  # written as a hostile tool would: unchecked
    return str(path)


@pytest.mark.parametrize("field, value", [
    ("epochs", 1e15), ("epochs", 10**15), ("epochs", 0), ("lr", "0.01"), ("lr", 0.0), ("lr", 1e6),
    ("batch_size", 0), ("batch_size", True), ("head_init", "xavier"), ("optimizer", "lbfgs"), ("patience", -1),
    ("dropout", 1.0), ("momentum", 1.5), ("val_frac", 0.95), ("clip", -1.0), ("seed", 2**40),
    ("sample_series", 0), ("calibrate", "always"), ("forget_bias", 1e9), ("lr_patience", 0),
    ("output_scale", 2.0), ("warm_start_sha256", "x"), ("dtype", "float16"), ("cell", "rnn"),
])
def test_refit_params_out_of_range_are_model_file_errors(tmp_path, model_path, field, value):
    path = with_params(tmp_path, model_path, **{field: value})
    result = run("evaluate", path, A10, "--refit")
    assert result.exit_code == 65, result.output
    msg = one_line(result)
    assert path in msg and f"training.params.{field}" in msg


def test_refit_params_threads_in_the_header_use_the_option_range(tmp_path, model_path):
    header, arrays = mf.load(model_path)
    header = copy.deepcopy(dict(header))
    header["training"]["threads"] = 4096
    path = tmp_path / "threads.lstm"
    mf.save(path, header, arrays, schema=False)
    result = run("evaluate", path, A10, "--refit")
    assert result.exit_code == 65 and "training.threads" in one_line(result)


def test_refit_params_share_the_train_option_ranges():
    options = {p.name: p for p in cli.commands["train"].params}
    for name, (lo, hi) in limits.INTEGERS.items():
        if name in options:
            assert (options[name].type.min, options[name].type.max) == (lo, hi), name
    for name, (lo, hi, lo_open, hi_open) in limits.FLOATS.items():
        if name in options:
            t = options[name].type
            assert (t.min, t.max, t.min_open, t.max_open) == (lo, hi, lo_open, hi_open), name


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False,
                 allow_infinity=False), st.text(max_size=8), st.sampled_from(["adam", "sgd", "torch", "zero", "val",
                                                                               "none", "lstm", "gru", "float32"]))
FIELDS = sorted(set(limits.INTEGERS) | set(limits.FLOATS) | set(limits.CHOICES) | {"warm_start_sha256", "other"})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.dictionaries(st.sampled_from(FIELDS), JUNK, min_size=1, max_size=4))
def test_refit_params_fuzz_loads_or_refuses(model_path, mutations):
    """Every mutation of training.params loads or is a ModelFileError; what loads gives a refit
    request within the ranges of the train options."""
    from lstm_cli.evaluate import refit_request
    from lstm_cli.model import Forecaster

    header, arrays = mf.load(model_path)
    header = copy.deepcopy(dict(header))
    header["training"]["params"].update(mutations)
    data = mf.dumps(header, arrays, schema=False)
    try:
        loaded, got = mf.loads(data, "fuzz.lstm")
    except ModelFileError as e:
        assert "fuzz.lstm" in str(e) and "training.params." in str(e)
        return
    req, _ = refit_request(Forecaster.from_file_parts(loaded, got), "x.csv", None)
    config = req.train
    for name, (lo, hi) in limits.INTEGERS.items():
        value = getattr(config, name, getattr(req, name, None))
        assert value is None or lo <= value <= hi, (name, value)
    for name in ("lr", "momentum", "weight_decay", "clip", "dropout"):
        assert limits.float_problem(name, getattr(config, name)) is None, name
    assert config.optimizer in limits.CHOICES["optimizer"] and req.head_init in limits.CHOICES["head_init"]


def test_refit_params_unset_fields_still_refit(tmp_path, model_path):
    path = with_params(tmp_path, model_path, epochs=1, batch_size=None, amsgrad=True)
    result = run("evaluate", path, A10, "--refit", "-q")
    assert result.exit_code == 0, result.output


def test_memory_errors_are_typed_for_their_cause():
    with pytest.raises(UsageError):
        memory.require(10**30, "x", "y", UsageError)
    with pytest.raises(ModelFileError):
        memory.require(10**30, "x", "y", ModelFileError)


# ---------------------------------------------------------------------------------------------
# memory_estimate: the reader's fast path (its row arrays, the distinct texts) and the stdin tape


def tiny_rows_gzip(path, members: int, rows_per_member: int = 1_000_000) -> str:
    """A gzip bomb of `2020-01-01,1` rows: one compressed member repeated (13 MB of text each, a
    few kB compressed); gzip readers join the members."""
    member = gzip.compress(b"2020-01-01,1\n" * rows_per_member, compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(b"date,y\n"))
        for _ in range(members):
            f.write(member)
    return str(path)


def test_memory_estimate_refuses_a_gzip_bomb_of_tiny_rows(tmp_path, monkeypatch):
    path = tiny_rows_gzip(tmp_path / "bomb.csv.gz", members=12)  # 156 MB of text in 300 kB
    monkeypatch.setattr(memory, "available_bytes", lambda: 40 * 10**6)
    from lstm_cli import frame

    stored = []
    real_take = frame._Rows.take
    monkeypatch.setattr(frame._Rows, "take", lambda self, k, expect: stored.append(k) or real_take(self, k, expect))
    result = run("train", path, "--target", "y", "--horizon", 2, "--out", tmp_path / "m.lstm")
    assert result.exit_code == 65, result.output
    msg = one_line(result)
    assert msg.startswith(f"lstm: {path}: loading the first ") and "rows needs about" in msg
    assert "(40 MB available)" in msg
    assert "split the file" in msg and "--engine dask" in msg and "--max-input-bytes" in msg
    assert sum(stored) < 1_000_000  # stopped within the first member, not after 12 million rows
    assert not (tmp_path / "m.lstm").exists()
    ok = run("train", A10, "--target", "cost_million_aud", "--horizon", 3, "--lookback", 12, "--hidden", 2,
             "--epochs", 1, "--out", tmp_path / "a10.lstm", "-q")  # a normal file still reads in 40 MB
    assert ok.exit_code == 0, ok.output


def test_memory_estimate_refuses_a_large_plain_file_on_its_first_block(tmp_path, monkeypatch):
    """With the size known, the rows still to come are projected from the first block."""
    from lstm_cli import frame

    path = tmp_path / "tiny.csv"
    path.write_text("time,y\n" + "".join(f"{i},1\n" for i in range(1, 700_001)))  # 6 MB, two blocks
    monkeypatch.setattr(frame, "PARSE_CHECK_BYTES", 0)  # no floor: the file is small
    monkeypatch.setattr(memory, "available_bytes", lambda: 50 * 10**6)
    stored = []
    real_take = frame._Rows.take
    monkeypatch.setattr(frame._Rows, "take", lambda self, k, expect: stored.append(k) or real_take(self, k, expect))
    with pytest.raises(DataError) as e:
        frame.read_series(path, targets=["y"])
    assert isinstance(e.value, memory.NotEnoughMemory) and stored == []
    assert f"{path}: loading about 7" in str(e.value) and "(50 MB available)" in str(e.value)
    monkeypatch.setattr(memory, "available_bytes", lambda: 400 * 10**6)  # fits: read
    assert len(frame.read_series(path, targets=["y"]).times) == 700_000 and len(stored) == 2


def test_memory_estimate_is_close_to_the_measured_peak(tmp_path, monkeypatch):
    """The estimate is an upper bound of what the fast path holds, and not far above it: all
    distinct times (the costliest rows) and repeated ones in a panel, measured with tracemalloc
    (numpy's arrays are traced)."""
    from lstm_cli import frame

    distinct = tmp_path / "distinct.csv"
    distinct.write_text("time,y\n" + "".join(f"{i},1\n" for i in range(1, 300_001)))
    panel = tmp_path / "panel.csv"
    days = [f"2000-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)]
    panel.write_text("id,date,y\n" + "".join(f"s{k:03d},{day},1\n" for k in range(900) for day in reversed(days)))
    for path, id_col in ((distinct, None), (panel, "id")):
        estimates = []
        real_check = frame._FastMemory.check

        def spy(self, k, expect, block_bytes, more, real_check=real_check, estimates=estimates):
            self.budget = 0
            try:
                real_check(self, k, expect, block_bytes, more)
            except DataError as e:
                estimates.append(str(e))
                self.budget = None

        monkeypatch.setattr(frame, "PARSE_CHECK_BYTES", 0)
        monkeypatch.setattr(frame._FastMemory, "check", spy)
        tracemalloc.start()
        try:
            frame.read_series(path, targets=["y"], id_col=id_col)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        monkeypatch.undo()
        figure = estimates[0].split("needs about ")[1].split(" of memory")[0]
        value, unit = figure.split()
        estimate = float(value) * {"MB": 1e6, "kB": 1e3, "GB": 1e9}[unit]
        assert peak < estimate < 3 * peak, (path.name, peak, estimate)


def piped(data: bytes):
    """The read end of a real pipe (it cannot seek) that a thread fills with `data`."""
    r, w = os.pipe()

    def feed():
        try:
            with open(w, "wb") as f:
                f.write(data)
        except BrokenPipeError:  # the reader stopped early
            pass

    threading.Thread(target=feed, daemon=True).start()
    return open(r, "rb", buffering=0)


def test_memory_estimate_stdin_beyond_memory_is_kept_in_a_temporary_file(tmp_path, monkeypatch):
    from lstm_cli import frame

    rows = "".join(f"s{k % 7},{2000 + k // 7},{k},x\n" for k in range(7 * 200))
    data = ("id,year,y,note\n" + rows + 's0,2300,1,"a, b"\n').encode()  # the quoted comma: a careful replay
    path = tmp_path / "panel.csv"
    path.write_bytes(data)
    expected = frame.read_series(path, targets=["y"], id_col="id")
    made = []
    real_file = frame._anonymous_file
    monkeypatch.setattr(frame, "_anonymous_file", lambda: made.append(real_file()) or made[-1])
    monkeypatch.setattr(frame, "TAPE_MEMORY_BYTES", 4096)
    got = frame.read_series("-", targets=["y"], id_col="id", stdin=piped(data))
    assert len(made) == 1 and made[0].closed  # spilled once, closed when the read ended
    assert got.ids == expected.ids and np.array_equal(got.values, expected.values)
    assert np.array_equal(got.times, expected.times) and np.array_equal(got.starts, expected.starts)
    made.clear()
    monkeypatch.setattr(frame, "TAPE_MEMORY_BYTES", 1 << 26)
    got = frame.read_series("-", targets=["y"], id_col="id", stdin=piped(data))
    assert made == [] and np.array_equal(got.values, expected.values)  # small stdin: kept in memory


def test_memory_estimate_stdin_tape_is_bounded_in_memory(monkeypatch):
    from lstm_cli import frame

    monkeypatch.setattr(frame, "TAPE_MEMORY_BYTES", 1 << 20)
    data = b"date,y\n" + b"".join(b"%d,1\n" % i for i in range(1, 1_000_001))  # 8.9 MB
    tape = frame._Tape(piped(data))
    tracemalloc.start()
    try:
        while tape.read(1 << 16):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20 and tape.memory_bytes == 0 and tape.size == len(data)
    back = io.BufferedReader(tape.rewind(), 1 << 16).read()
    tape.close()
    assert back == data


def test_memory_estimate_stdin_spill_failure_is_one_line(monkeypatch):
    import errno

    from lstm_cli import frame
    from lstm_cli.errors import WriteError

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frame, "_anonymous_file", full)
    monkeypatch.setattr(frame, "TAPE_MEMORY_BYTES", 1024)
    data = b"date,y\n" + b"".join(b"2020-01-%02d,1\n" % d for d in range(1, 29)) * 10
    with pytest.raises(WriteError) as e:
        frame.read_series("-", targets=["y"], stdin=piped(data))
    assert e.value.exit_code == 74 and "\n" not in str(e.value)
    assert "No space left on device" in str(e.value) and "TMPDIR" in str(e.value)


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/status"), reason="Linux rlimits")
def test_memory_estimate_gzip_bomb_under_an_address_space_limit(tmp_path):
    """The real thing: `ulimit -v`. Without the check the row arrays' growth died in a
    MemoryError (exit 74, after 20 s); now the figure is one line, exit 65, in a few seconds."""
    import resource
    import subprocess
    import sys

    path = tiny_rows_gzip(tmp_path / "bomb.csv.gz", members=150)  # 1.95 GB of text in 3.8 MB
    with open("/proc/self/status") as f:
        vm_size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = max(vm_size, 10**9) + 600 * 10**6  # this process has imported all lstm imports: room above them

    def run_limited(*args):
        def limit_address_space():
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        return subprocess.run([sys.executable, "-m", "lstm_cli", *map(str, args)], capture_output=True, text=True,
                              preexec_fn=limit_address_space, timeout=300)

    result = run_limited("train", path, "--target", "y", "--horizon", 2, "--out", tmp_path / "m.lstm")
    assert result.returncode == 65, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"lstm: {path}: loading the first ") and "available); split the file" in lines[0]
    ok = run_limited("train", A10, "--target", "cost_million_aud", "--horizon", 3, "--lookback", 12, "--hidden", 2,
                     "--epochs", 1, "--out", tmp_path / "a10.lstm", "-q")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="rlimits")
def test_memory_estimate_address_space_too_small_to_load_is_one_line(tmp_path):
    """Under `ulimit -v` below what numba, LLVM and OpenBLAS need to load, predict hung (OpenBLAS
    spinning in blas_thread_init), aborted (LLVM) or exited 70 (an import failed half-way): now one
    line and 74 before the imports. --help and the commands that load no libraries still run."""
    import resource
    import subprocess
    import sys

    def run_limited(limit, *args):
        def limit_address_space():
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        return subprocess.run([sys.executable, "-m", "lstm_cli", *map(str, args)], capture_output=True, text=True,
                              preexec_fn=limit_address_space, timeout=60)

    model = tmp_path / "m.lstm"
    assert run("train", A10, "--target", "cost_million_aud", "--horizon", 3, "--lookback", 12, "--hidden", 2,
               "--epochs", 1, "--out", model, "-q").exit_code == 0
    for command, args in (("predict", (model, A10)), ("version", ()), ("info", (model,))):
        result = run_limited(300 * 2**20, command, *args)
        assert result.returncode == 74, result.stderr
        assert result.stderr.splitlines() == [result.stderr.strip()]
        assert f"lstm {command} needs about" in result.stderr and "ulimit -v" in result.stderr
        assert result.stdout == ""
    for args in (("predict", "--help"), ("--help",), ("config", "show")):
        assert run_limited(300 * 2**20, *args).returncode == 0
    assert memory.address_space_problem("config") is None


# ---------------------------------------------------------------------------------------------
# model_payload: checkpoints and validate --model decide from the header


def checkpoint_state():
    from lstm_cli.train import TrainState

    n = 1000
    rng = np.random.default_rng(0)
    arrays = {k: rng.normal(size=n).astype(np.float32) for k in ("params", "best_params", "m", "v")}
    return TrainState(epoch=2, params=arrays["params"], best_params=arrays["best_params"], best_loss=0.5,
                      best_epoch=1, optimizer="adam", optimizer_step=20, lr=0.01,
                      optimizer_arrays={"optim.m": arrays["m"], "optim.v": arrays["v"]}, plateau_best=0.5,
                      plateau_bad_epochs=0, rng_state=np.random.default_rng(1).bit_generator.state,
                      train_loss=[1.0, 0.7], val_loss=[0.9, None])


def refuse_payload_reads(monkeypatch, streamed: bool = True) -> None:
    """Make a read of a model file's payload into memory (and, with `streamed`, one that only
    streams it through its checks) fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the payload was read")

    monkeypatch.setattr(mf, "_read_payload", refuse)
    if streamed:
        monkeypatch.setattr(mf, "_stream_payload", refuse)


def test_model_payload_checkpoint_of_another_run_is_refused_before_its_payload(tmp_path, monkeypatch):
    from lstm_cli import checkpoint

    path = str(tmp_path / ".m.lstm.ckpt")
    settings = {"hidden": 8}
    assert checkpoint.save(path, checkpoint_state(), settings=settings, data_sha256="a" * 64)
    loaded = checkpoint.load(path, settings=settings, data_sha256="a" * 64)
    assert loaded.epoch == 2 and loaded.params.shape == (1000,) and loaded.val_loss == [0.9, None]
    assert np.array_equal(loaded.optimizer_arrays["optim.v"], checkpoint_state().optimizer_arrays["optim.v"])

    refuse_payload_reads(monkeypatch)
    with pytest.raises(DataError, match="hidden 8 there, 16 here"):
        checkpoint.load(path, settings={"hidden": 16}, data_sha256="a" * 64)
    with pytest.raises(DataError, match="the data changed"):
        checkpoint.resume_state(path, settings=settings, data_sha256="b" * 64)
    # this run's fingerprint, but arrays of another network (planted, or a bug): unusable, unread
    for params, dtype, why in ((999, None, "this run's network has 999"), (None, "float64", "network is float64")):
        state, problem = checkpoint.resume_state(path, settings=settings, data_sha256="a" * 64, params=params,
                                                 dtype=dtype)
        assert state is None and "unusable" in problem and why in problem, problem


def test_model_payload_huge_foreign_checkpoint_is_refused_without_reading_it(tmp_path):
    """A planted checkpoint whose header promises 1.6 GB of arrays (a sparse file): refused on
    its fingerprint at once, with no memory spent on the payload."""
    from lstm_cli import checkpoint

    path = tmp_path / ".m.lstm.ckpt"
    header = {"format": checkpoint.FORMAT, "checkpoint_version": checkpoint.VERSION, "fingerprint": "f" * 64,
              "settings": {"hidden": 4096}, "data_sha256": "0" * 64}
    n = 100_000_000
    entries = [{"name": name, "dtype": "<f4", "shape": [n], "offset": k * 4 * n, "nbytes": 4 * n}
               for k, name in enumerate(("params", "best_params", "optim.m", "optim.v"))]
    header["arrays"] = entries
    write_hole(path, header, 16 * n)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="belongs to another training run"):
            checkpoint.load(str(path), settings={"hidden": 8}, data_sha256="a" * 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 10**6, peak


def test_model_payload_checkpoint_claim_keeps_no_payload(tmp_path, monkeypatch):
    from lstm_cli import checkpoint

    path = str(tmp_path / ".m.lstm.ckpt")
    assert checkpoint.save(path, checkpoint_state(), settings={"x": 1}, data_sha256="a" * 64)

    refuse_payload_reads(monkeypatch, streamed=False)
    assert checkpoint.claim(path) == 2


def test_model_payload_validate_model_reads_only_the_contract(tmp_path, model_path, monkeypatch):
    refuse_payload_reads(monkeypatch, streamed=False)
    result = run("validate", A10, "--model", model_path)
    assert result.exit_code == 0, result.output
    monkeypatch.undo()
    path = sparse_model(tmp_path, model_path)  # 400 MB of arrays promised, a hole with a wrong checksum
    tracemalloc.start()
    try:
        result = run("validate", A10, "--model", path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 65 and "payload checksum mismatch" in one_line(result)
    assert peak < 64 * 10**6, peak
