"""Issue 15, memory and the model file: sizes are estimated and refused (with the figure and a
remedy) before anything large is allocated, and the training settings a model file records are
validated like any header field, with the ranges of the train options (lstm_cli.limits)."""

from __future__ import annotations

import copy
import gzip
import math
import os
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
    header["payload_sha256"] = "0" * 64
    header["header_sha256"] = mf._header_digest(header)
    raw = mf._canonical(header)
    head = mf.PREFIX.pack(mf.MAGIC, mf.FORMAT_VERSION, len(raw)) + raw
    head += bytes(mf._align(len(head)) - len(head))
    path = tmp_path / "sparse.lstm"
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + offset)
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
