"""modelfile.py: round trips, the documented layout, and hostile or damaged files.

Files are crafted here with an independent little assembler (`assemble`) written from the layout
in modelfile's docstring, so that the validators behind the checksums can be reached: a mutation
is "re-signed" (checksums recomputed) and must still be refused by the checks after them.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import hashlib
import json
import os
import random
import signal
import stat
import struct
import sys
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_cli import limits
from lstm_cli import modelfile as mf
from lstm_cli.errors import EXIT_DATA, EXIT_NO_INPUT, InputMissingError, ModelFileError

PREFIX_SIZE = 20
# training.params keys with ranges (tests/test_hardening_memory.py checks them)
SETTINGS = {*limits.INTEGERS, *limits.FLOATS, *limits.CHOICES, "warm_start_sha256"}


# ---------------------------------------------------------------------------------------------
# Building valid models with plain numpy


def make_model(*, seed=0, targets=("y",), features=("a", "b"), hidden=5, layers=2, horizon=4,
               quantiles=(), ids=("s1", "s2"), dtype="float32", id_col="id"):
    rng = np.random.default_rng(seed)
    D, H, L = len(targets) + len(features), hidden, layers
    O = horizon * len(targets) * max(1, len(quantiles))  # noqa: E741
    if id_col is None:
        ids = ids[:1]
    header = {
        "format": "lstm-model", "format_version": 1, "created": "2026-03-01T12:30:00Z",
        "lstm_version": "0.1.0", "numpy_version": np.__version__, "numba_version": "0.61.0",
        "arch": {"cell": "lstm", "input_size": D, "hidden_size": H, "num_layers": L,
                 "output_size": O, "dtype": dtype},
        "data": {"time_col": "date", "id_col": id_col, "targets": list(targets),
                 "features": list(features), "time_kind": "datetime", "step": 86400 * 10**9,
                 "freq": "D", "lookback": 8, "horizon": horizon, "quantiles": list(quantiles),
                 "strategy": "direct", "scaling": "series"},
        "series": {"ids": list(ids), "last_time": [1_700_000_000 * 10**9 + i for i in range(len(ids))]},
        "training": {"seed": seed, "epochs_run": 3, "best_epoch": 2, "threads": 2,
                     "params": {"lr": 0.003, "batch_size": 32, "optimizer": "adam", "amsgrad": False,
                                "clip": None},
                     "history": {"train_loss": [1.0, 0.5, 0.25], "val_loss": [None, 0.75, 0.5]},
                     "data_sha256": "ab" * 32},
    }
    dt = np.float32 if dtype == "float32" else np.float64
    arrays = {}
    for k in range(L):
        arrays[f"weight_ih_l{k}"] = rng.normal(size=(4 * H, D if k == 0 else H)).astype(dt)
        arrays[f"weight_hh_l{k}"] = rng.normal(size=(4 * H, H)).astype(dt)
        arrays[f"bias_ih_l{k}"] = rng.normal(size=4 * H).astype(dt)
        arrays[f"bias_hh_l{k}"] = rng.normal(size=4 * H).astype(dt)
    arrays["head.weight"] = rng.normal(size=(O, H)).astype(dt)
    arrays["head.bias"] = rng.normal(size=O).astype(dt)
    arrays["scaler.loc"] = rng.normal(size=(len(ids), D))
    arrays["scaler.scale"] = rng.uniform(0.1, 10.0, size=(len(ids), D))
    return header, arrays


def strip(header: dict) -> dict:
    return {k: v for k, v in header.items() if k not in ("arrays", "payload_sha256", "header_sha256")}


def assert_same_arrays(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, a in want.items():
        b = got[name]
        assert b.dtype == np.asarray(a).dtype.newbyteorder("<"), name
        assert b.shape == np.shape(a) and np.array_equal(b, a), name
        assert not b.flags.writeable, name


# ---------------------------------------------------------------------------------------------
# An independent assembler for crafted files


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def split(data: bytes) -> tuple[dict, bytes]:
    (hl,) = struct.unpack_from("<Q", data, 12)
    header = json.loads(data[PREFIX_SIZE : PREFIX_SIZE + hl])
    start = -(-(PREFIX_SIZE + hl) // 64) * 64
    return header, data[start:]


def assemble(header: dict, payload: bytes, *, version=1, sign_payload=False, sign_header=True,
             raw_header: bytes | None = None) -> bytes:
    header = dict(header)
    if sign_payload:
        header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    if sign_header:
        header.pop("header_sha256", None)
        header["header_sha256"] = hashlib.sha256(canonical(header)).hexdigest()
    raw = canonical(header) if raw_header is None else raw_header
    head = b"LSTMCLI\x00" + struct.pack("<IQ", version, len(raw)) + raw
    head += bytes(-len(head) % 64)
    return head + payload


def resign(data: bytes, mutate, *, sign_payload=False) -> bytes:
    header, payload = split(data)
    result = mutate(header, bytearray(payload))
    if isinstance(result, (bytes, bytearray)):
        payload = bytes(result)
    return assemble(header, payload, sign_payload=sign_payload)


def expect_corrupt(data: bytes, *pieces: str, source="crafted.lstm", **kwargs) -> str:
    with pytest.raises(ModelFileError) as ei:
        mf.loads(data, source, **kwargs)
    msg = str(ei.value)
    assert ei.value.exit_code == EXIT_DATA
    assert "\n" not in msg and source in msg, msg
    for piece in pieces:
        assert piece in msg, msg
    return msg


@pytest.fixture(scope="module")
def valid() -> bytes:
    return mf.dumps(*make_model())


# ---------------------------------------------------------------------------------------------
# Layout and round trips


def test_layout_matches_the_documented_format(valid):
    header_in, arrays = make_model()
    data = valid
    assert data[:8] == mf.MAGIC == b"LSTMCLI\x00"
    version, hl = struct.unpack_from("<IQ", data, 8)
    assert version == mf.FORMAT_VERSION == 1
    raw = data[PREFIX_SIZE : PREFIX_SIZE + hl]
    header = json.loads(raw)
    assert raw == canonical(header)  # compact, sorted keys
    start = -(-(PREFIX_SIZE + hl) // 64) * 64
    assert data[PREFIX_SIZE + hl : start] == bytes(start - PREFIX_SIZE - hl)
    payload = data[start:]
    assert strip(header) == header_in
    assert [e["name"] for e in header["arrays"]] == list(arrays)
    for entry in header["arrays"]:
        a = arrays[entry["name"]]
        assert entry["offset"] % 64 == 0 and (start + entry["offset"]) % 64 == 0
        assert entry["dtype"] == a.dtype.str and entry["shape"] == list(a.shape)
        assert entry["nbytes"] == a.nbytes
        assert payload[entry["offset"] : entry["offset"] + a.nbytes] == a.tobytes()
    last = header["arrays"][-1]
    assert len(payload) == last["offset"] + last["nbytes"]
    assert header["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    unsigned = {k: v for k, v in header.items() if k != "header_sha256"}
    assert header["header_sha256"] == hashlib.sha256(canonical(unsigned)).hexdigest()
    assert assemble(header, payload) == data  # the test assembler is faithful


def test_dumps_is_deterministic_and_idempotent(valid):
    header, arrays = make_model()
    assert mf.dumps(header, arrays) == valid
    loaded_header, loaded_arrays = mf.loads(valid, "m")
    assert mf.dumps(loaded_header, loaded_arrays) == valid  # reserved keys are recomputed


def test_save_load_round_trip_on_disk(tmp_path):
    header, arrays = make_model(quantiles=(0.1, 0.5, 0.9), dtype="float64", layers=3)
    path = tmp_path / "m.lstm"
    mf.save(path, header, arrays)
    got_header, got = mf.load(path)
    assert strip(got_header) == header
    assert_same_arrays(got, arrays)
    with pytest.raises(ValueError):
        got["head.weight"][0, 0] = 1.0
    with pytest.raises(ValueError):
        got["head.weight"].flags.writeable = True  # backed by immutable bytes
    data = path.read_bytes()
    assert mf.file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert mf.loads(data, str(path))[0] == got_header
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~mf_umask()


def mf_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_single_series_and_zero_size_arrays_round_trip():
    header, arrays = make_model(id_col=None, features=())
    got_header, got = mf.loads(mf.dumps(header, arrays), "m")
    assert strip(got_header) == header
    assert_same_arrays(got, arrays)
    # the container itself (schema=False) also takes empty and int64 arrays
    extra = {"empty": np.zeros((0, 3), np.float32), "ints": np.arange(-3, 3, dtype=np.int64),
             "big_endian": np.arange(4, dtype=">f8"), "scalar": np.float64(2.5)}
    h, got = mf.loads(mf.dumps({"note": "\udc80 lone surrogate"}, extra, schema=False), "c", schema=False)
    assert h["note"] == "\udc80 lone surrogate"
    assert got["empty"].shape == (0, 3) and got["scalar"].shape == () and got["scalar"] == 2.5
    assert got["big_endian"].dtype.str == "<f8" and np.array_equal(got["big_endian"], np.arange(4))
    assert np.array_equal(got["ints"], np.arange(-3, 3))


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def models(draw):
    n_targets, n_features = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    cols = draw(st.lists(names, min_size=n_targets + n_features + 2, max_size=n_targets + n_features + 2,
                         unique=True))
    time_col, id_col = cols[0], cols[1] if draw(st.booleans()) else None
    targets, features = cols[2 : 2 + n_targets], cols[2 + n_targets :]
    n_series = draw(st.integers(1, 4)) if id_col is not None else 1
    ids = draw(st.lists(st.text(max_size=6), min_size=n_series, max_size=n_series, unique=True))
    H, L, horizon = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    quantiles = sorted(set(draw(st.lists(st.floats(0, 1, exclude_min=True, exclude_max=True), max_size=3))))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    epochs = draw(st.integers(0, 5))
    created = draw(st.datetimes(min_value=__import__("datetime").datetime(1970, 1, 1),
                                max_value=__import__("datetime").datetime(2200, 1, 1)))
    stamp = created.strftime("%Y-%m-%dT%H:%M:%S") + draw(st.sampled_from(["", f".{created.microsecond:06d}"])) \
        + draw(st.sampled_from(["Z", "+00:00"]))
    strategy = draw(st.sampled_from(["direct", "recursive"]))  # a recursive network forecasts one step
    header, arrays = make_model(seed=draw(st.integers(0, 2**32 - 1)), targets=tuple(targets),
                                features=tuple(features), hidden=H, layers=L,
                                horizon=1 if strategy == "recursive" else horizon,
                                quantiles=tuple(quantiles), ids=tuple(ids), dtype=dtype, id_col=id_col)
    header["created"] = stamp
    time_kind = draw(st.sampled_from(["datetime", "integer"]))  # a freq: a valid calendar alias of dates
    freq = draw(st.none() | st.sampled_from(["MS", "W-MON", "QS-DEC", "YS"])) if time_kind == "datetime" else None
    header["data"].update(time_col=time_col, time_kind=time_kind,
                          step=draw(st.integers(1, 2**63 - 1)), freq=freq,
                          lookback=draw(st.integers(1, 100_000)), horizon=horizon, strategy=strategy)
    header["series"]["last_time"] = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n_series,
                                                  max_size=n_series))
    header["training"].update(
        seed=draw(st.integers(0, 2**64 - 1)), epochs_run=epochs, best_epoch=draw(st.integers(0, epochs)),
        params=draw(st.dictionaries(names.filter(lambda k: k not in SETTINGS), st.none()  # free-form ones | st.booleans() | st.integers(-(2**70), 2**70)
                                    | finite | st.text(max_size=5), max_size=4)),
        history={"train_loss": draw(st.lists(finite, max_size=5)),
                 "val_loss": draw(st.lists(st.none() | finite, max_size=5))})
    # extreme but finite weights: subnormals, the largest values, negative zero
    name = draw(st.sampled_from(sorted(arrays)))
    special = draw(st.sampled_from(["max", "tiny", "negzero", "none"]))
    a = arrays[name]
    if special != "none" and a.size and name != "scaler.scale":
        info = np.finfo(a.dtype)
        a.flat[0] = {"max": info.max, "tiny": info.smallest_subnormal, "negzero": -0.0}[special]
    return header, arrays


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_round_trip_property(model):
    header, arrays = model
    data = mf.dumps(header, arrays)
    got_header, got = mf.loads(data, "prop")
    assert strip(got_header) == header
    assert_same_arrays(got, arrays)
    for a, b in zip(arrays.values(), got.values(), strict=True):  # bit-exact, -0.0 included
        assert a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------------------------
# Paths: quick InputMissingError, nothing modified, nothing else touched


@contextlib.contextmanager
def deadline(seconds: int):
    def on_alarm(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_bad_paths_are_quick_input_missing_errors(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "file").write_bytes(b"x")
    cases = {tmp_path: "directory", tmp_path / "fifo": "not a regular file",
             tmp_path / "dangling": "dangling symlink", tmp_path / "loop_a": "",
             tmp_path / "missing.lstm": "does not exist", tmp_path / "file" / "x.lstm": "",
             "/dev/null": "not a regular file", "/dev/zero": "not a regular file"}
    for path, words in cases.items():
        for fn in (mf.load, mf.file_sha256):
            start = time.monotonic()
            with deadline(5), pytest.raises(InputMissingError) as ei:
                fn(path)
            assert time.monotonic() - start < 1.0
            msg = str(ei.value)
            assert ei.value.exit_code == EXIT_NO_INPUT and str(path) in msg and words in msg, msg
            assert "\n" not in msg


def test_load_does_not_modify_the_file(tmp_path):
    path = tmp_path / "m.lstm"
    mf.save(path, *make_model())
    os.chmod(path, 0o444)
    before = path.stat()
    data = path.read_bytes()
    time.sleep(0.01)
    mf.load(path)
    mf.file_sha256(path)
    after = path.stat()
    assert path.read_bytes() == data
    assert (after.st_mtime_ns, after.st_ctime_ns, after.st_mode, after.st_ino, after.st_size) == \
        (before.st_mtime_ns, before.st_ctime_ns, before.st_mode, before.st_ino, before.st_size)
    assert sorted(os.listdir(tmp_path)) == ["m.lstm"]


def test_load_opens_only_the_given_path_read_only(tmp_path, monkeypatch):
    path = tmp_path / "m.lstm"
    mf.save(path, *make_model())
    mf.load(path)  # warm up lazy imports
    opened = []
    real_os_open, real_open = os.open, builtins.open

    def spy_os_open(p, flags, *args, **kwargs):
        opened.append((os.fspath(p), flags))
        return real_os_open(p, flags, *args, **kwargs)

    def spy_open(p, *args, **kwargs):
        opened.append((p if isinstance(p, int) else os.fspath(p), args[0] if args else kwargs.get("mode", "r")))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(builtins, "open", spy_open)
    modules = set(sys.modules)
    mf.load(path)
    monkeypatch.undo()
    assert set(sys.modules) == modules  # nothing imported because of the file
    assert [p for p, _ in opened if not isinstance(p, int)] == [str(path)]
    for _, flags in opened:
        if isinstance(flags, int):
            assert flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND) == 0


# ---------------------------------------------------------------------------------------------
# Prefix-level refusals


def test_empty_file(tmp_path):
    path = tmp_path / "empty.lstm"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="not an lstm model file") as ei:
        mf.load(path)
    assert str(path) in str(ei.value) and ei.value.exit_code == EXIT_DATA
    expect_corrupt(b"", "not an lstm model file")


def test_wrong_magic():
    for data in (b"PK\x03\x04" + bytes(100), b"\x93NUMPY" + bytes(100), b"LSTMCLI", b"LSTMCLI\x01" + bytes(40),
                 b"{}", b"\x80\x04\x95" + bytes(30)):  # zip, .npy, truncated, wrong byte, JSON, pickle
        expect_corrupt(data, "not an lstm model file")


def test_future_version_names_both_versions(valid, tmp_path):
    for version in (2, 7, 2**32 - 1):
        data = valid[:8] + struct.pack("<I", version) + valid[12:]
        msg = expect_corrupt(data, f"format version {version} is newer than this lstm reads (1)",
                             "upgrade lstm")
        assert "corrupt" not in msg
    path = tmp_path / "future.lstm"
    path.write_bytes(valid[:8] + struct.pack("<I", 2) + valid[12:])
    with pytest.raises(ModelFileError, match=r"version 2 is newer than this lstm reads \(1\); upgrade lstm"):
        mf.load(path)


def test_version_zero_and_truncated_prefix(valid):
    expect_corrupt(valid[:8] + struct.pack("<I", 0) + valid[12:], "corrupt model file", "version 0")
    for n in range(8, PREFIX_SIZE):
        expect_corrupt(valid[:n], "corrupt model file", "truncated")


def test_header_length_field(valid):
    (hl,) = struct.unpack_from("<Q", valid, 12)

    def with_hl(n):
        return valid[:12] + struct.pack("<Q", n) + valid[20:]

    expect_corrupt(with_hl(mf.MAX_HEADER_BYTES + 1), "exceeds")
    expect_corrupt(with_hl(2**64 - 1), "exceeds")
    expect_corrupt(with_hl(len(valid)), "runs past the end")
    for n in (0, 1, hl - 1, hl + 1, hl + 64, hl // 2):
        expect_corrupt(with_hl(n), "corrupt model file")


# ---------------------------------------------------------------------------------------------
# Header-level refusals (re-signed so that they get past the checksum)


def test_checksums_detect_damage(valid):
    header, payload = split(valid)
    raw = canonical(header).replace(b'"horizon":4', b'"horizon":5')
    expect_corrupt(assemble(header, payload, sign_header=False, raw_header=raw), "header checksum mismatch")
    flipped = bytearray(valid)
    flipped[-1] ^= 0x01
    expect_corrupt(bytes(flipped), "payload checksum mismatch")
    unsigned = {k: v for k, v in header.items() if k != "header_sha256"}
    expect_corrupt(assemble(unsigned, payload, sign_header=False), "header_sha256")
    expect_corrupt(resign(valid, lambda h, p: h.update(payload_sha256="AB" * 32)), "payload_sha256")


def raw_header_file(raw: bytes, payload: bytes = b"") -> bytes:
    return assemble({}, payload, sign_header=False, raw_header=raw)


def test_strict_json():
    cases = {
        b"[1,2]": "not a JSON object",
        b'{"a":NaN}': "non-finite",
        b'{"a":-Infinity}': "non-finite",
        b'{"a":1e999}': "non-finite",
        b'{"a":1,"a":2}': "duplicate key",
        b'{"a":{"b":1,"b":1}}': "duplicate key",
        b"\xff\xfe{}": "not UTF-8",
        b'{"a":' + b"1" * 5000 + b"}": "not valid JSON",  # int too long for int()
        b"[" * 100_000 + b"]" * 100_000: "nested",
        b'{"a":' + b"[" * 40 + b"]" * 40 + b"}": "nested deeper",
        b'{"a":1} trailing': "not valid JSON",
        b"": "not valid JSON",
    }
    for raw, words in cases.items():
        expect_corrupt(raw_header_file(raw), "corrupt model file", words)


def test_too_many_header_items(monkeypatch):
    monkeypatch.setattr(mf, "MAX_HEADER_ITEMS", 1000)
    expect_corrupt(raw_header_file(b"[" + b"0," * 1000 + b"0]"), "more than 1000 JSON values")


def test_non_zero_header_padding(valid):
    (hl,) = struct.unpack_from("<Q", valid, 12)
    assert (PREFIX_SIZE + hl) % 64, "the fixture must have padding"
    bad = bytearray(valid)
    bad[PREFIX_SIZE + hl] = 1
    expect_corrupt(bytes(bad), "padding")


def entry_mutation(i, **changes):
    def mutate(h, p):
        h["arrays"][i].update(changes)
    return mutate


ARRAY_TABLE_ATTACKS = {
    "object dtype": (entry_mutation(0, dtype="|O"), "dtype"),
    "unicode dtype": (entry_mutation(0, dtype="<U8"), "dtype"),
    "big-endian dtype": (entry_mutation(0, dtype=">f4"), "dtype"),
    "native dtype": (entry_mutation(0, dtype="float32"), "dtype"),
    "5 dims": (entry_mutation(0, shape=[1, 1, 1, 1, 20]), "shape"),
    "negative dim": (entry_mutation(0, shape=[-20, 3]), "shape"),
    "bool dim": (entry_mutation(0, shape=[True, 3]), "shape"),
    "float dim": (entry_mutation(0, shape=[20.0, 3]), "shape"),
    "dim over 2**31": (entry_mutation(0, shape=[2**31 + 1]), "shape"),
    "huge shape": (entry_mutation(0, shape=[2**31] * 4, nbytes=4 * 2**124), "limit"),
    "16 GiB + 4": (entry_mutation(0, shape=[2**32 + 1], nbytes=4 * (2**32 + 1)), "shape"),
    "payload limit": (entry_mutation(0, shape=[2**31, 3], nbytes=3 * 2**33), "limit"),
    "nbytes lies": (entry_mutation(0, nbytes=4), "nbytes"),
    "nbytes negative": (entry_mutation(0, shape=[0], nbytes=-4), "nbytes"),
    "unaligned offset": (entry_mutation(1, offset=1), "offset"),
    "negative offset": (entry_mutation(1, offset=-64), "offset"),
    "offset as string": (entry_mutation(1, offset="0"), "offset"),
    "offset past end": (entry_mutation(1, offset=2**40), "ends at byte"),
    "overlap": (entry_mutation(1, offset=0), "overlaps"),
    "path name": (entry_mutation(0, name="../../etc/passwd"), "name"),
    "empty name": (entry_mutation(0, name=""), "name"),
    "name not str": (entry_mutation(0, name=["weight_ih_l0"]), "name"),
    "duplicate name": (entry_mutation(1, name="weight_ih_l0"), "duplicate array name"),
    "extra entry key": (entry_mutation(0, loader="numpy.load"), "exactly the keys"),
    "missing entry key": (lambda h, p: h["arrays"][0].pop("nbytes"), "exactly the keys"),
    "entry not object": (lambda h, p: h["arrays"].__setitem__(0, "weight_ih_l0"), "exactly the keys"),
    "arrays not list": (lambda h, p: h.update(arrays={"weight_ih_l0": {}}), "not a list"),
    "arrays missing": (lambda h, p: h.pop("arrays"), "not a list"),
    "payload extended": (lambda h, p: p + bytes(64), "payload is"),
    "payload truncated": (lambda h, p: p[:-1], "ends at byte"),
}


@pytest.mark.parametrize("attack", sorted(ARRAY_TABLE_ATTACKS))
def test_array_table_attacks(valid, attack):
    mutate, words = ARRAY_TABLE_ATTACKS[attack]
    data = resign(valid, mutate, sign_payload=True)
    for schema in (True, False):
        expect_corrupt(data, "corrupt model file", words, schema=schema)


def test_too_many_arrays():
    entries = [{"name": f"a{i}", "dtype": "<f8", "shape": [0], "offset": 0, "nbytes": 0}
               for i in range(mf.MAX_ARRAYS + 1)]
    data = assemble({"arrays": entries}, b"", sign_payload=True)
    expect_corrupt(data, f"more than {mf.MAX_ARRAYS} arrays", schema=False)


def test_non_finite_weights_are_refused(valid):
    header, payload = split(valid)
    entry = next(e for e in header["arrays"] if e["name"] == "weight_hh_l1")
    for value in (np.nan, np.inf, -np.inf):
        def poison(h, p, value=value):
            p[entry["offset"] + 8 : entry["offset"] + 12] = np.float32(value).tobytes()
            return p
        expect_corrupt(resign(valid, poison, sign_payload=True), "weight_hh_l1", "NaN or infinite")
    with pytest.raises(ValueError, match="NaN or infinite"):
        h, a = make_model()
        a["head.bias"][3] = np.nan
        mf.dumps(h, a)


def test_non_positive_scale_is_refused(valid):
    header, _ = split(valid)
    entry = next(e for e in header["arrays"] if e["name"] == "scaler.scale")
    for value in (0.0, -1.0):
        def zero(h, p, value=value):
            p[entry["offset"] : entry["offset"] + 8] = np.float64(value).tobytes()
            return p
        expect_corrupt(resign(valid, zero, sign_payload=True), "scaler.scale")


# ---------------------------------------------------------------------------------------------
# The model schema, field by field


def set_path(path: str, value):
    def mutate(h):
        node, keys = h, path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


DELETE = object()

SCHEMA_CASES = [
    ("format", "pickle", "format"),
    ("format", DELETE, "lacks"),
    ("format_version", 2, "format_version"),
    ("format_version", True, "format_version"),
    ("created", "yesterday", "created"),
    ("created", "2026-13-01T00:00:00Z", "created"),
    ("created", "2026-01-01T00:00:00+02:00", "created"),
    ("created", 1700000000, "created"),
    ("lstm_version", 1, "lstm_version"),
    ("numba_version", None, "numba_version"),
    ("surprise", 1, "unknown keys"),
    ("arch", [], "arch"),
    ("arch.cell", "rnn", "arch.cell"),
    ("arch.input_size", 0, "arch.input_size"),
    ("arch.input_size", 4097, "arch.input_size"),
    ("arch.input_size", 3.0, "arch.input_size"),
    ("arch.hidden_size", 4097, "arch.hidden_size"),
    ("arch.hidden_size", "5", "arch.hidden_size"),
    ("arch.num_layers", 17, "arch.num_layers"),
    ("arch.num_layers", False, "arch.num_layers"),
    ("arch.output_size", 100_001, "arch.output_size"),
    ("arch.output_size", 5, "arch.output_size"),
    ("arch.dtype", "float16", "arch.dtype"),
    ("arch.module", "os", "unknown keys"),
    ("data.time_col", "", "data.time_col"),
    ("data.time_col", "y", "data.time_col"),
    ("data.id_col", 3, "data.id_col"),
    ("data.id_col", "date", "data.id_col"),
    ("data.id_col", "a", "data.id_col"),
    ("data.id_col", None, "series.ids"),
    ("data.targets", [], "data.targets"),
    ("data.targets", ["y", "y"], "data.targets"),
    ("data.targets", [f"t{i}" for i in range(257)], "data.targets"),
    ("data.targets", "y", "data.targets"),
    ("data.targets", [1], "data.targets"),
    ("data.features", ["a", "a"], "data.features"),
    ("data.features", ["a", "y"], "overlap"),
    ("data.time_kind", "period", "data.time_kind"),
    ("data.step", 0, "data.step"),
    ("data.step", -1, "data.step"),
    ("data.freq", 7, "data.freq"),
    ("data.lookback", 0, "data.lookback"),
    ("data.lookback", 100_001, "data.lookback"),
    ("data.horizon", 0, "data.horizon"),
    ("data.horizon", 5, "arch.output_size"),
    ("data.quantiles", [0.25, 0.5], "arch.output_size"),
    ("data.quantiles", [0.5, 0.25], "strictly increasing"),
    ("data.quantiles", [0.5, 0.5], "strictly increasing"),
    ("data.quantiles", [0.0], "data.quantiles"),
    ("data.quantiles", [1.0], "data.quantiles"),
    ("data.quantiles", ["0.5"], "data.quantiles"),
    ("data.quantiles", 0.5, "data.quantiles"),
    ("data.strategy", "dirrect", "data.strategy"),
    ("data.scaling", "global", "data.scaling"),
    ("data.extra", 1, "unknown keys"),
    ("data.lookback", DELETE, "lacks"),
    ("series.ids", [], "series.ids"),
    ("series.ids", ["s1", "s1"], "series.ids"),
    ("series.ids", ["s1", 2], "series.ids"),
    ("series.last_time", [1], "series.last_time"),
    ("series.last_time", [1, 2.5], "series.last_time"),
    ("series.last_time", [1, 2**63], "series.last_time"),
    ("training.seed", -1, "training.seed"),
    ("training.epochs_run", -1, "training.epochs_run"),
    ("training.best_epoch", 4, "training.best_epoch"),
    ("training.threads", 0, "training.threads"),
    ("training.params", [], "training.params"),
    ("training.params", {"x": [1]}, "training.params.x"),
    ("training.params", {"x": {"y": 1}}, "training.params.x"),
    ("training.history", {"train_loss": []}, "training.history"),
    ("training.history.train_loss", [None], "training.history.train_loss"),
    ("training.history.val_loss", ["0.5"], "training.history.val_loss"),
    ("training.data_sha256", "abc", "training.data_sha256"),
    ("training.data_sha256", DELETE, "lacks"),
]


@pytest.mark.parametrize("path,value,words", SCHEMA_CASES, ids=[f"{p}={v!r}"[:40] for p, v, _ in SCHEMA_CASES])
def test_validate_header_field_by_field(path, value, words):
    header, arrays = make_model()
    full, _ = split(mf.dumps(header, arrays))
    mf.validate_header(full)  # the unmodified header passes
    broken = copy.deepcopy(full)
    set_path(path, value)(broken)
    with pytest.raises(ModelFileError, match="invalid model header") as ei:
        mf.validate_header(broken)
    assert words in str(ei.value)
    # load runs the same check behind valid checksums; dumps refuses to write it
    data = assemble(broken, split(mf.dumps(header, arrays))[1])
    expect_corrupt(data, "corrupt model file", "invalid model header", words)
    with pytest.raises(ValueError, match="refusing to write an invalid model"):
        mf.dumps(strip(broken) if "arrays" not in path else broken, arrays)


def array_case(name=None, drop=None, add=None, dtype=None, shape=None):
    def mutate(entries):
        if drop:
            entries[:] = [e for e in entries if e["name"] != drop]
        if add:
            entries.append({"name": add, "dtype": "<f4", "shape": [1], "offset": 0, "nbytes": 4})
        for e in entries:
            if e["name"] == name:
                if dtype:
                    e["dtype"] = dtype
                if shape is not None:
                    e["shape"] = shape
    return mutate


@pytest.mark.parametrize("mutate,words", [
    (array_case(drop="weight_hh_l1"), "lack ['weight_hh_l1']"),
    (array_case(drop="scaler.scale"), "scaler.scale"),
    (array_case(add="weight_ih_l2"), "unknown arrays ['weight_ih_l2']"),
    (array_case(add="os.system"), "unknown arrays"),
    (array_case(name="weight_ih_l0", shape=[20, 4]), "weight_ih_l0"),
    (array_case(name="weight_ih_l1", shape=[20, 3]), "weight_ih_l1"),
    (array_case(name="head.weight", shape=[5, 4]), "head.weight"),
    (array_case(name="head.bias", dtype="<f8"), "head.bias"),
    (array_case(name="scaler.loc", dtype="<f4"), "scaler.loc"),
    (array_case(name="scaler.scale", shape=[1, 3]), "scaler.scale"),
])
def test_validate_header_array_consistency(mutate, words):
    full, _ = split(mf.dumps(*make_model()))
    mutate(full["arrays"])
    with pytest.raises(ModelFileError, match="invalid model header") as ei:
        mf.validate_header(full)
    assert words in str(ei.value)


def test_validate_header_rejects_non_objects():
    for value in (None, [], "header", 1):
        with pytest.raises(ModelFileError):
            mf.validate_header(value)


def test_dumps_refuses_what_load_would_refuse():
    header, arrays = make_model()
    for bad_arrays, words in (
        ({**arrays, "head.bias": arrays["head.bias"].astype(np.float16)}, "dtype"),
        ({**arrays, "head.bias": arrays["head.bias"].astype(np.int32)}, "dtype"),
        ({**arrays, "head.bias": np.array(["x"], dtype=object)}, "dtype"),
        ({**arrays, "head bias": arrays["head.bias"]}, "name"),
        ({**arrays, "head.bias": arrays["head.bias"][:-1]}, "head.bias"),
    ):
        with pytest.raises(ValueError, match=words):
            mf.dumps(header, bad_arrays)
    for key, value, words in (("params", {"x": np.float64(1.0)}, "float64"), ("params", {"x": float("inf")}, "non-finite"),
                              ("params", {1: 2}, "not a str"), ("params", {"x": (1, 2)}, "tuple")):
        bad = copy.deepcopy(header)
        bad["training"][key] = value
        with pytest.raises(ValueError, match=words):
            mf.dumps(bad, arrays)
    with pytest.raises(ValueError, match="nested"):
        deep = []
        for _ in range(40):
            deep = [deep]
        mf.dumps({"deep": deep}, {}, schema=False)


# ---------------------------------------------------------------------------------------------
# Fuzzing: only ModelFileError escapes, and memory stays near the file size


def base_files() -> list[bytes]:
    return [
        mf.dumps(*make_model()),
        mf.dumps(*make_model(seed=1, quantiles=(0.1, 0.5, 0.9), dtype="float64", layers=1, hidden=3)),
        mf.dumps(*make_model(seed=2, id_col=None, features=(), layers=3, hidden=2, horizon=1)),
    ]


JUNK_VALUES = [None, True, False, 0, -1, 1, 63, 64, 2**31, 2**31 + 1, 2**63, -(2**63), 2**64, 10**30, 0.5,
               -0.0, 1e308, "", "x", "<f4", "<f8", "<i8", "|O", "<U4", "lstm", [], [0], [2**31] * 4,
               [-1], [1, 2, 3, 4, 5], {}, {"name": "x"}, "\u0000", "../x", "a" * 300]


def all_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from all_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from all_paths(v, prefix + (i,))


def semantic_mutation(rng: random.Random, data: bytes) -> bytes:
    """Change, delete or add one value anywhere in the header, then recompute the checksums."""
    header, payload = split(data)
    paths = [p for p in all_paths(header) if p and p[-1] != "header_sha256"]
    path = rng.choice(paths)
    node = header
    for k in path[:-1]:
        node = node[k]
    action = rng.random()
    if action < 0.15 and isinstance(node, dict):
        del node[path[-1]]
    elif action < 0.25 and isinstance(node, dict):
        node[rng.choice(["x", "arrays", "data", "offset", "__class__"])] = rng.choice(JUNK_VALUES)
    else:
        old = node[path[-1]]
        if type(old) is int and rng.random() < 0.5:
            node[path[-1]] = old + rng.choice([-64, -1, 1, 64, 2**32, -(2**40)])
        else:
            node[path[-1]] = copy.deepcopy(rng.choice(JUNK_VALUES))
    return assemble(header, payload, sign_payload=rng.random() < 0.5)


def byte_mutation(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    b = bytearray(data)
    (hl,) = struct.unpack_from("<Q", data, 12)
    header, _ = split(data)
    start = -(-(PREFIX_SIZE + hl) // 64) * 64
    kind = rng.randrange(9)
    if kind == 0:  # truncate at an interesting offset
        cuts = list(range(0, PREFIX_SIZE + 2)) + [PREFIX_SIZE + hl + d for d in (-2, -1, 0, 1, 2)]
        cuts += [start + e["offset"] + d for e in header["arrays"] for d in (-1, 0, 1)]
        cuts += [start + e["offset"] + e["nbytes"] + d for e in header["arrays"] for d in (-1, 0, 1)]
        cut = rng.choice(cuts + [rng.randrange(len(b))])
        return bytes(b[: max(cut, 0)])
    if kind == 1:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 2:  # overwrite a run with random bytes
        i = rng.randrange(len(b))
        n = rng.randint(1, 64)
        b[i : i + n] = rng.randbytes(n)
        return bytes(b)
    if kind == 3:  # splice with another file
        other = rng.choice(others)
        return bytes(b[: rng.randrange(len(b))] + other[rng.randrange(len(other)) :])
    if kind == 4:  # header length field grows or shrinks
        n = rng.choice([0, 1, hl - 1, hl + 1, hl - 64, hl + 64, len(b), len(b) - PREFIX_SIZE, 2**32, 2**63,
                        2**64 - 1, mf.MAX_HEADER_BYTES, mf.MAX_HEADER_BYTES + 1, rng.randrange(2**64)])
        b[12:20] = struct.pack("<Q", max(0, min(n, 2**64 - 1)))
        return bytes(b)
    if kind == 5:  # version field
        b[8:12] = struct.pack("<I", rng.choice([0, 1, 2, 255, 2**31, rng.randrange(2**32)]))
        return bytes(b)
    if kind == 6:  # insert or delete bytes
        i = rng.randrange(len(b))
        if rng.random() < 0.5:
            del b[i : i + rng.randint(1, 100)]
        else:
            b[i:i] = rng.randbytes(rng.randint(1, 100))
        return bytes(b)
    if kind == 7:  # flip payload bits and re-sign both checksums: finiteness and scale checks
        _, payload = split(data)
        p = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        return assemble(header, bytes(p), sign_payload=True)
    # random bytes, sometimes behind a valid prefix
    junk = rng.randbytes(rng.randint(0, 2000))
    if rng.random() < 0.5:
        junk = data[:PREFIX_SIZE] + junk
    return junk


def check_outcome(data: bytes, source: str, fn) -> str:
    try:
        header, arrays = fn()
    except ModelFileError as e:
        msg = str(e)
        assert "\n" not in msg and source in msg, msg
        assert "not an lstm model file" in msg or "corrupt model file" in msg or "is newer than" in msg, msg
        return "refused"
    # accepted: then it really is a valid model
    mf.validate_header(header)
    for a in arrays.values():
        assert not a.flags.writeable
        assert a.dtype.kind != "f" or np.isfinite(a).all()
    return "accepted"


def test_fuzz_loads_only_raises_model_file_error():
    rng = random.Random(20260301)
    bases = base_files()
    outcomes = {"refused": 0, "accepted": 0}
    worst = 0
    start = time.perf_counter()
    tracemalloc.start()
    try:
        for case in range(3000):
            base = bases[case % len(bases)]
            data = semantic_mutation(rng, base) if case % 3 == 0 else byte_mutation(rng, base, bases)
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            outcome = check_outcome(data, "fuzz.lstm", lambda data=data: mf.loads(data, "fuzz.lstm"))
            peak = tracemalloc.get_traced_memory()[1] - before
            # loads holds the file once (arrays are views); the rest is header objects and scratch
            assert peak <= 4 * len(data) + 96 * 1024, (case, len(data), peak)
            worst = max(worst, peak - len(data))
            outcomes[outcome] += 1
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    print(f"fuzz: 3000 cases in {elapsed:.1f} s, {outcomes}, peak at most input + {worst / 1024:.0f} KiB")
    assert outcomes["refused"] > 2000 and outcomes["accepted"] > 0  # both paths exercised
    assert elapsed < 20


def test_fuzz_load_from_disk(tmp_path):
    rng = random.Random(7)
    bases = base_files()
    path = tmp_path / "fuzz.lstm"
    for case in range(300):
        base = bases[case % len(bases)]
        data = semantic_mutation(rng, base) if case % 3 == 0 else byte_mutation(rng, base, bases)
        path.write_bytes(data)
        check_outcome(data, str(path), lambda: mf.load(path))


def test_load_memory_is_one_copy_of_the_file(tmp_path):
    header, arrays = make_model(hidden=256, layers=2, dtype="float64", ids=tuple(f"s{i}" for i in range(50)))
    path = tmp_path / "big.lstm"
    mf.save(path, header, arrays)
    size = path.stat().st_size
    assert size > 2_000_000
    mf.load(path)  # warm-up
    tracemalloc.start()
    try:
        got_header, got = mf.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * size + 512 * 1024, (peak, size)
    assert_same_arrays(got, arrays)


def test_huge_declared_payload_is_refused_before_reading(tmp_path, monkeypatch):
    """A header that declares 15 GiB of arrays in a small file: refused from the header alone."""
    valid = mf.dumps(*make_model())
    header, payload = split(valid)
    header["arrays"][0].update(shape=[2**31, 2], nbytes=2**31 * 2 * 4)  # 16 GiB: within the limit
    data = assemble(header, payload)
    path = tmp_path / "liar.lstm"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="ends at byte"):
            mf.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(data) + 96 * 1024
