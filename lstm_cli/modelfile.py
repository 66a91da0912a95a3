"""The model file: one self-describing file of plain data that nobody can abuse.

Layout (all integers little-endian):

    offset 0   MAGIC            8 bytes  b"LSTMCLI\\x00"
    offset 8   format version   u32      FORMAT_VERSION
    offset 12  header length    u64      n
    offset 20  header           n bytes  compact JSON, sorted keys, ASCII (so also UTF-8)
               zero padding     up to the next multiple of 64
    payload    raw arrays, each at a 64-byte-aligned offset from the payload start, zero-filled
               gaps; the payload ends with the last array's last byte

The header is the caller's metadata plus three keys added here: "arrays" (a list of
{"name", "dtype", "shape", "offset", "nbytes"}, offsets relative to the payload start),
"payload_sha256" (hex SHA-256 of the payload bytes) and "header_sha256" (hex SHA-256 of the
canonical JSON of the header without this key: so a flipped bit in, say, the horizon or the
last timestamps is detected, not silently used). dtypes are '<f4', '<f8' and '<i8' only.

Loading validates everything before allocating anything large or trusting anything: the path is a
regular file (never blocks on a FIFO), prefix, version, header size and item limits, strict JSON
(no NaN/Infinity, no duplicate keys, bounded nesting), header checksum, array table (names,
dtypes, shapes, overflow-safe sizes, alignment, overlap, bounds, exact payload length), the
model schema (`validate_header`), payload checksum, finite float arrays and positive scales. It
reads only the given path, read-only, with bounded reads (prefix, header, payload; sizes known
from fstat and the validated header), never imports or executes anything named in the file and
never uses pickle. Arrays come back as read-only NumPy arrays viewing one immutable buffer.

Every problem with the file's content is a ModelFileError (exit 65); a path that is missing, not
a regular file or unreadable is an InputMissingError (exit 66).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
from collections.abc import Callable, Mapping
from datetime import datetime

import numpy as np

from lstm_cli import limits, memory
from lstm_cli.atomic import atomic_output
from lstm_cli.cells import GATES
from lstm_cli.errors import InputMissingError, ModelFileError, UsageError
from lstm_cli.errors import shown as quoted

MAGIC = b"LSTMCLI\x00"
FORMAT_VERSION = 1
PREFIX = struct.Struct("<8sIQ")  # magic, format version, header length: 20 bytes
ALIGN = 64

MAX_HEADER_BYTES = 64 * 2**20  # 64 MiB of JSON
MAX_HEADER_ITEMS = 2**24  # JSON values; the memory they take is checked too (_BYTES_PER_VALUE)
MAX_SERIES = 4_000_000  # series.ids: a panel this large (2 JSON values a series) still fits the values
MAX_HEADER_DEPTH = 32  # nesting of objects/lists
MAX_PAYLOAD_BYTES = 16 * 2**30  # 16 GiB of arrays in total
MAX_ARRAYS = 4096
MAX_NDIM = 4
MAX_DIM = 2**31
MAX_NAME = 255

DTYPES = {"<f4": np.dtype("<f4"), "<f8": np.dtype("<f8"), "<i8": np.dtype("<i8")}
RESERVED_KEYS = ("arrays", "payload_sha256", "header_sha256")
ARRAY_KEYS = frozenset({"name", "dtype", "shape", "offset", "nbytes"})
_NAME_RE = re.compile(r"[A-Za-z0-9_.]+")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_FINITE_CHUNK = 1 << 20  # elements per np.isfinite call: bounds the temporary bool array
_PAYLOAD_CHUNK = 1 << 24  # bytes per read of a model file's payload
_VERIFY_FIRST = 1 << 26  # a payload larger than this is checksummed before it is allocated
_HEADER_PARSE_FACTOR = 6  # the header bytes, their text and the JSON objects built from them
_BYTES_PER_VALUE = 160  # a parsed JSON value at most (an empty dict in a list: ~140 measured)
_HOLES_CHECKED_ABOVE = 1 << 28  # a payload larger than this is looked at for holes (smaller: ~1 s to checksum)
_MOSTLY_HOLES = 0.5  # a payload more than this fraction holes (never written) is not lstm's

ModelArrays = dict  # dict[str, np.ndarray]


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _corrupt(source: str, problem: str) -> ModelFileError:
    return ModelFileError(f"corrupt model file {source}: {problem}; re-create it with lstm train "
                          "or restore a good copy")


# --------------------------------------------------------------------------------------------
# Header JSON: canonical encoding, strict decoding


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _header_digest(header: dict) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in header.items() if k != "header_sha256"})).hexdigest()


class _Reject(ValueError):
    pass


def _pairs_hook(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _Reject(f"duplicate key {_short(key)}")
            seen.add(key)
    return obj


def _reject_constant(name):
    raise _Reject(f"non-finite number {name}")


def _parse_float(text):
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf without going through parse_constant
        raise _Reject(f"non-finite number {_short(text)}")
    return value


def _too_deep(obj, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _parse_header(raw: bytes, source: str) -> dict:
    """Strict JSON object from the header bytes (limits checked before json.loads)."""
    items = raw.count(b",") + raw.count(b"[") + raw.count(b"{")  # >= values - 1; cheap upper bound
    if items > MAX_HEADER_ITEMS:
        raise _corrupt(source, f"header holds more than {MAX_HEADER_ITEMS} JSON values")
    memory.require(items * _BYTES_PER_VALUE, f"the {items:,} JSON values of the header of {source}",
                   "free memory, or check that the file is a model lstm wrote", ModelFileError)
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant,
                            parse_float=_parse_float)
    except UnicodeDecodeError:
        raise _corrupt(source, "header is not UTF-8") from None
    except RecursionError:
        raise _corrupt(source, "header JSON is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, _Reject, int too long
        raise _corrupt(source, f"header is not valid JSON ({str(e).splitlines()[0][:100]})") from None
    if not isinstance(header, dict):
        raise _corrupt(source, "header is not a JSON object")
    if _too_deep(header, MAX_HEADER_DEPTH):
        raise _corrupt(source, f"header JSON is nested deeper than {MAX_HEADER_DEPTH} levels")
    return header


# --------------------------------------------------------------------------------------------
# The array table


def _is_int(value) -> bool:
    return type(value) is int  # bool is not an int here


def _check_array_table(header: dict, payload_len: int, source: str) -> list[tuple]:
    """Validate header["arrays"] against the payload; return (name, dtype, shape, offset, nbytes)."""
    entries = header.get("arrays")
    if not isinstance(entries, list):
        raise _corrupt(source, '"arrays" is missing or not a list')
    if len(entries) > MAX_ARRAYS:
        raise _corrupt(source, f"more than {MAX_ARRAYS} arrays")
    table, names, total = [], set(), 0
    for i, entry in enumerate(entries):
        where = f"arrays[{i}]"
        if not isinstance(entry, dict) or set(entry) != ARRAY_KEYS:
            raise _corrupt(source, f"{where} must be an object with exactly the keys "
                                   f"{sorted(ARRAY_KEYS)}")
        name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
        offset, nbytes = entry["offset"], entry["nbytes"]
        if not (isinstance(name, str) and len(name) <= MAX_NAME and _NAME_RE.fullmatch(name)):
            raise _corrupt(source, f"{where}: bad array name {_short(name)}")
        if name in names:
            raise _corrupt(source, f"duplicate array name {name!r}")
        names.add(name)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _corrupt(source, f"array {name}: dtype {_short(dtype)} is not one of {sorted(DTYPES)}")
        if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
                and all(_is_int(d) and 0 <= d <= MAX_DIM for d in shape)):
            raise _corrupt(source, f"array {name}: bad shape {_short(shape)} (at most {MAX_NDIM} "
                                   f"dimensions, each 0..{MAX_DIM})")
        expected = DTYPES[dtype].itemsize
        for d in shape:  # Python ints: no overflow, and each dim <= 2**31 keeps this small
            expected *= d
        if not _is_int(nbytes) or nbytes != expected:
            raise _corrupt(source, f"array {name}: nbytes {_short(nbytes)} does not match shape "
                                   f"{shape} of {dtype} ({expected})")
        total += nbytes
        if total > MAX_PAYLOAD_BYTES:
            raise _corrupt(source, f"arrays total more than the {MAX_PAYLOAD_BYTES}-byte limit")
        if not _is_int(offset) or offset < 0 or offset % ALIGN:
            raise _corrupt(source, f"array {name}: offset {_short(offset)} is not a non-negative "
                                   f"multiple of {ALIGN}")
        if offset + nbytes > payload_len:
            raise _corrupt(source, f"array {name} ends at byte {offset + nbytes} of a "
                                   f"{payload_len}-byte payload (file truncated?)")
        table.append((name, dtype, tuple(shape), offset, nbytes))
    end = 0
    for name, _, _, offset, nbytes in sorted(table, key=lambda t: (t[3], t[4])):
        if offset < end:
            raise _corrupt(source, f"array {name} overlaps the previous array")
        end = offset + nbytes
    if payload_len != end:
        raise _corrupt(source, f"payload is {payload_len} bytes but the arrays end at byte {end} "
                               "(file truncated or extended?)")
    return table


def _check_digest(header: dict, key: str, source: str) -> str:
    value = header.get(key)
    if not (isinstance(value, str) and _SHA_RE.fullmatch(value)):
        raise _corrupt(source, f'"{key}" is missing or not a lowercase hex SHA-256')
    return value


# --------------------------------------------------------------------------------------------
# Loading


HeaderCheck = Callable[[dict], None]
ArraysCheck = Callable[[dict, Mapping[str, np.ndarray]], None]


def _load_from(read: Callable[[int], bytes], total: int, source: str,
               header_check: HeaderCheck | None, arrays_check: ArraysCheck | None,
               file: ReadableFile | None = None, payload: bool = True):
    """Parse a model file of `total` bytes whose bytes come from read(n) in order.

    file (a file, not bytes in memory): the payload is read in bounded chunks straight into one
    buffer, and one above _VERIFY_FIRST bytes is checksummed in a first streaming pass, so a
    file whose header promises a huge (e.g. sparse) payload is refused before it is allocated.
    payload=False: stream the payload through the checksum and value checks without keeping
    it (returns the header and no arrays)."""
    if total == 0:
        raise ModelFileError(f"not an lstm model file: {source} is empty (0 bytes)")
    prefix = bytes(read(min(total, PREFIX.size)))
    if len(prefix) < len(MAGIC) or prefix[: len(MAGIC)] != MAGIC:
        raise ModelFileError(f"not an lstm model file: {source} (it does not start with the "
                             "lstm magic bytes); pass a file written by lstm train")
    if total < PREFIX.size:
        raise _corrupt(source, f"truncated to {total} bytes, inside the {PREFIX.size}-byte prefix")
    _, version, header_len = PREFIX.unpack(prefix)
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{source}: model file format version {version} is newer than this "
                             f"lstm reads ({FORMAT_VERSION}); upgrade lstm")
    if version == 0:
        raise _corrupt(source, "format version 0 is not a valid version")
    if header_len > MAX_HEADER_BYTES:
        raise _corrupt(source, f"header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit")
    payload_start = _align(PREFIX.size + header_len)
    if payload_start > total:
        raise _corrupt(source, f"header of {header_len} bytes (and its padding) runs past the end "
                               f"of the {total}-byte file (truncated?)")
    memory.require(_HEADER_PARSE_FACTOR * header_len, f"reading the {memory.fmt(header_len)} header of "
                   f"model file {source}", "free memory, or check that the file is a model lstm wrote",
                   ModelFileError)
    raw_header = bytes(read(header_len))
    padding = bytes(read(payload_start - PREFIX.size - header_len))
    if padding.count(0) != len(padding):
        raise _corrupt(source, "non-zero bytes in the padding after the header")
    header = _parse_header(raw_header, source)
    del raw_header, padding
    stored = _check_digest(header, "header_sha256", source)
    if _header_digest(header) != stored:
        raise _corrupt(source, "header checksum mismatch (the header was altered or damaged)")
    payload_len = total - payload_start
    table = _check_array_table(header, payload_len, source)
    payload_sha = _check_digest(header, "payload_sha256", source)
    if header_check is not None:
        try:
            header_check(header)
        except ModelFileError as e:
            raise _corrupt(source, str(e)) from None
    if file is not None and payload_len > _HOLES_CHECKED_ABOVE:
        _refuse_holes(file, payload_start, payload_len, table, source,
                      positive=("scaler.scale",) if arrays_check is not None else ())
    if not payload:
        _stream_payload(read, payload_len, table, payload_sha, source, positive=("scaler.scale",)
                        if arrays_check is not None else ())
        return header, {}
    memory.require(payload_len, f"model file {source} ({len(table)} arrays)",
                   "free memory, or use a machine with more memory for this model", ModelFileError)
    if file is not None and payload_len > _VERIFY_FIRST:
        _stream_payload(read, payload_len, (), payload_sha, source)
        file.seek(payload_start)
    payload = _read_payload(read, payload_len, payload_sha, source, file)
    arrays = {}
    for name, dtype, shape, offset, nbytes in table:
        count = nbytes // DTYPES[dtype].itemsize
        arr = np.frombuffer(payload, dtype=DTYPES[dtype], count=count, offset=offset).reshape(shape)
        arr.flags.writeable = False
        if arr.dtype.kind == "f":
            flat = arr.reshape(-1)
            for start in range(0, flat.size, _FINITE_CHUNK):
                if not np.isfinite(flat[start : start + _FINITE_CHUNK]).all():
                    raise _corrupt(source, f"array {name} holds NaN or infinite values")
        arrays[name] = arr
    if arrays_check is not None:
        try:
            arrays_check(header, arrays)
        except ModelFileError as e:
            raise _corrupt(source, str(e)) from None
    return header, arrays


class ReadableFile:
    """A model file open for reading: exact reads (a short one means the file shrank), I/O
    errors as InputMissingError."""

    def __init__(self, fd: int, shown: str):
        self._f = open(fd, "rb", closefd=False)  # noqa: SIM115 - the caller closes fd
        self._shown = shown

    def _io(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            raise InputMissingError(f"cannot read model file {self._shown}: {e.strerror or e}") from None

    def read(self, n: int) -> bytes:
        data = self._io(self._f.read, n)
        if len(data) != n:
            raise _corrupt(self._shown, "the file shrank while it was being read")
        return data

    def readinto(self, view: memoryview) -> None:
        if self._io(self._f.readinto, view) != len(view):
            raise _corrupt(self._shown, "the file shrank while it was being read")

    def seek(self, pos: int) -> None:
        self._io(self._f.seek, pos)

    def holes(self, start: int, end: int):
        """(first, last + 1) of each hole (a range never written, read as zeros) between start and
        end, by SEEK_HOLE/SEEK_DATA; none where the file system cannot tell. The file offset the
        reads use is restored before each span is yielded."""
        fd = self._f.fileno()
        pos = start
        while pos < end:
            saved = os.lseek(fd, 0, os.SEEK_CUR)
            try:
                hole = os.lseek(fd, pos, os.SEEK_HOLE)
                try:
                    data = end if hole >= end else os.lseek(fd, hole, os.SEEK_DATA)
                except OSError:  # ENXIO: the hole runs to the end of the file
                    data = end
            except OSError:  # SEEK_HOLE not supported here: no hole is known
                return
            finally:
                os.lseek(fd, saved, os.SEEK_SET)
            if hole >= end:
                return
            yield hole, min(data, end)
            pos = data


def _refuse_holes(file: ReadableFile, payload_start: int, payload_len: int, table, source: str,
                  positive: tuple[str, ...]) -> None:
    """Refuse at once a payload with a hole (bytes never written, read as zeros) inside an array
    that must be positive, or one that is mostly holes: a sparse file whose header promises
    gigabytes, which the checksum would take a minute to stream through. lstm writes every byte
    of a model in order, so its files have no holes; a file system that stores runs of zeros as
    holes (compression) can make some in other arrays, which the checksum then proves."""
    must_be_positive = [(name, payload_start + offset, payload_start + offset + nbytes)
                        for name, _, _, offset, nbytes in table if name in positive]
    in_holes = 0
    for first, end in file.holes(payload_start, payload_start + payload_len):
        for name, lo, hi in must_be_positive:
            if first < hi and lo < end:
                raise _corrupt(source, f"array {name}, which must be positive, lies in a hole of the file "
                                       "(bytes never written: a sparse file)")
        in_holes += end - first
        if in_holes > _MOSTLY_HOLES * payload_len:
            raise _corrupt(source, f"most of its {payload_len}-byte payload is holes (bytes never written: "
                                   "a sparse file)")


def _read_payload(read: Callable[[int], bytes], n: int, digest: str, source: str, file: ReadableFile | None):
    """The payload as one read-only buffer, checked against its SHA-256. From a file: read
    _PAYLOAD_CHUNK bytes at a time straight into one buffer (the peak is the payload)."""
    sha = hashlib.sha256()
    if file is not None:
        buffer = bytearray(n)
        view = memoryview(buffer)
        for start in range(0, n, _PAYLOAD_CHUNK):
            chunk = view[start : start + _PAYLOAD_CHUNK]
            file.readinto(chunk)
            sha.update(chunk)
        payload = view.toreadonly()  # nothing else holds `buffer`: the arrays' one immutable copy
    else:
        payload = read(n)
        sha.update(payload)
    if sha.hexdigest() != digest:
        raise _corrupt(source, "payload checksum mismatch (the arrays were altered or damaged)")
    return payload


def _stream_payload(read: Callable[[int], bytes], n: int, table, digest: str, source: str,
                    positive: tuple[str, ...] = ()) -> None:
    """Check the payload's SHA-256 (and, for the arrays in `table`, finite values; > 0 for those
    named in `positive`) reading it _PAYLOAD_CHUNK bytes at a time and keeping none of it."""
    sha = hashlib.sha256()
    spans = sorted(table, key=lambda t: t[3])
    problem = None
    pos = 0
    for name, dtype, _, offset, nbytes in spans:
        while pos < offset + nbytes:
            end = min(pos + _PAYLOAD_CHUNK, offset + nbytes) if pos >= offset else offset
            chunk = read(end - pos)
            sha.update(chunk)
            if pos >= offset and DTYPES[dtype].kind == "f" and problem is None:
                values = np.frombuffer(chunk, dtype=DTYPES[dtype])
                if not np.isfinite(values).all():
                    problem = f"array {name} holds NaN or infinite values"
                elif name in positive and not (values > 0).all():
                    problem = "invalid model arrays: scaler.scale holds zero or negative values"
            pos = end
    for start in range(pos, n, _PAYLOAD_CHUNK):
        sha.update(read(min(_PAYLOAD_CHUNK, n - start)))
    if sha.hexdigest() != digest:
        raise _corrupt(source, "payload checksum mismatch (the arrays were altered or damaged)")
    if problem:
        raise _corrupt(source, problem)


def loads(data: bytes, source: str = "<bytes>", *, header_check: HeaderCheck | None = None,
          arrays_check: ArraysCheck | None = None, schema: bool = True):
    """Parse and validate a model file held in memory; returns (header, arrays).

    With `schema` (the default) the model schema is enforced (`validate_header`,
    `validate_arrays`); extra caller checks run after them. schema=False reads any well-formed
    container. Arrays are read-only views of one immutable copy of `data`.
    """
    if not isinstance(data, bytes):
        data = bytes(data)  # arrays must not alias a buffer the caller may change
    view = memoryview(data)
    pos = 0

    def read(n: int):
        nonlocal pos
        chunk = view[pos : pos + n]
        pos += n
        return chunk

    hcheck, acheck = _combine(schema, header_check, arrays_check)
    return _load_from(read, len(data), source, hcheck, acheck)


def _combine(schema, header_check, arrays_check):
    checks_h = ([validate_header] if schema else []) + ([header_check] if header_check else [])
    checks_a = ([validate_arrays] if schema else []) + ([arrays_check] if arrays_check else [])

    def hcheck(header):
        for check in checks_h:
            check(header)

    def acheck(header, arrays):
        for check in checks_a:
            check(header, arrays)

    return (hcheck if checks_h else None), (acheck if checks_a else None)


def _open_model(path) -> tuple[int, str]:
    """Open `path` read-only after making sure it is a regular file (InputMissingError if not) that
    no other user could have written (ModelFileError: the rule of the config and the JIT cache;
    root's files are fine)."""
    shown = quoted(path)  # the path as every message shows it
    if os.fspath(path) == "-":  # '-' is stdout/stdin elsewhere: never a model file named '-'
        raise UsageError("MODEL -: a model is read from a file, not stdin; give its path "
                         "(./- for a file named -)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        link = " is a dangling symlink" if os.path.islink(path) else " does not exist"
        raise InputMissingError(f"model file {shown}{link}; check the path") from None
    except OSError as e:
        raise InputMissingError(f"cannot read model file {shown}: {e.strerror or e}; check the "
                                "path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputMissingError(f"model file {shown} is a directory; give the path of a model file "
                                "written by lstm train")
    if not stat.S_ISREG(st.st_mode):
        raise InputMissingError(f"model file {shown} is not a regular file (FIFO, device or "
                                "socket); give the path of a model file written by lstm train")
    try:  # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open does not block
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise InputMissingError(f"cannot read model file {shown}: {e.strerror or e}; check the "
                                "path and its permissions") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputMissingError(f"model file {shown} is not a regular file")
    from lstm_cli.runtime import file_problem

    problem = file_problem(os.fspath(path), st)  # of the opened file: nothing to swap after the check
    if problem:
        os.close(fd)
        raise ModelFileError(f"model file {shown} {problem}: another user could change its forecasts; copy it "
                             f"into a folder of yours (cp {shown} ~/models/) or fix its permissions (chmod go-w)")
    return fd, shown


def load(path, *, header_check: HeaderCheck | None = None,
         arrays_check: ArraysCheck | None = None, schema: bool = True, payload: bool = True):
    """Read and validate the model file at `path`; returns (header, read-only arrays).

    Opens read-only and never writes, locks or touches any other path. Reads are bounded: the
    20-byte prefix, then the header (<= MAX_HEADER_BYTES), then, once the header has been
    validated against the file size, exactly the payload.
    """
    fd, shown = _open_model(path)
    try:
        total = os.fstat(fd).st_size
        file = ReadableFile(fd, shown)
        hcheck, acheck = _combine(schema, header_check, arrays_check)
        return _load_from(file.read, total, shown, hcheck, acheck, file=file, payload=payload)
    finally:
        os.close(fd)


def load_header(path, *, schema: bool = True) -> dict:
    """The validated header of the model file at `path`, for `lstm info`: the payload is
    checked (checksum, finite values, positive scales) as it streams by, never held in memory."""
    return load(path, schema=schema, payload=False)[0]


def file_sha256(path) -> str:
    """Hex SHA-256 of the file at `path` (streamed; same path checks as load)."""
    fd, shown = _open_model(path)
    digest = hashlib.sha256()
    try:
        with open(fd, "rb", closefd=False) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise InputMissingError(f"cannot read {shown}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Writing


def _check_jsonable(value, where: str = "header", depth: int = 0) -> None:
    """Only what JSON round-trips exactly: dict with str keys, list, str, int, finite float, bool, None."""
    if depth > MAX_HEADER_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_HEADER_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)) or type(value) is int:
        return
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite float {value!r} cannot be stored")
        return
    if type(value) is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a str")
            _check_jsonable(item, f"{where}.{key}", depth + 1)
        return
    if type(value) is list:
        for i, item in enumerate(value):
            _check_jsonable(item, f"{where}[{i}]", depth + 1)
        return
    raise ValueError(f"{where}: {type(value).__name__} {_short(value)} is not a JSON value "
                     "(use int, float, str, bool, None, list or dict; convert numpy scalars)")


def _dtype_code(dtype: np.dtype) -> str | None:
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return f"<f{dtype.itemsize}"
    if dtype.kind == "i" and dtype.itemsize == 8:
        return "<i8"
    return None


def _prepare(header: dict, arrays: Mapping[str, np.ndarray], check: bool):
    """(head bytes, [(zero padding before, contiguous little-endian array), ...]) for a file."""
    if not isinstance(header, dict):
        raise TypeError(f"header must be a dict, got {type(header).__name__}")
    meta = {k: v for k, v in header.items() if k not in RESERVED_KEYS}
    _check_jsonable(meta)
    if len(arrays) > MAX_ARRAYS:
        raise ValueError(f"more than {MAX_ARRAYS} arrays")
    entries, parts, sha, offset = [], [], hashlib.sha256(), 0
    for name, value in arrays.items():
        if not (isinstance(name, str) and len(name) <= MAX_NAME and _NAME_RE.fullmatch(name)):
            raise ValueError(f"array name {name!r} must match [A-Za-z0-9_.]+")
        a = np.asarray(value)
        code = _dtype_code(a.dtype)
        if code is None:
            raise ValueError(f"array {name}: dtype {a.dtype} cannot be stored; use float32, "
                             "float64 or int64")
        a = np.asarray(a, dtype=DTYPES[code], order="C")  # (ascontiguousarray makes 0-d into 1-d)
        if a.ndim > MAX_NDIM or any(d > MAX_DIM for d in a.shape):
            raise ValueError(f"array {name}: shape {a.shape} exceeds {MAX_NDIM} dims of <= {MAX_DIM}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"array {name} holds NaN or infinite values; refusing to save it")
        pad = _align(offset) - offset
        offset += pad
        entries.append({"name": name, "dtype": code, "shape": [int(d) for d in a.shape],
                        "offset": offset, "nbytes": int(a.nbytes)})
        sha.update(bytes(pad))
        if a.nbytes:
            sha.update(memoryview(a).cast("B"))
        parts.append((pad, a))
        offset += a.nbytes
    raw = _header_bytes(meta, entries, offset, sha.hexdigest(), check)
    head = PREFIX.pack(MAGIC, FORMAT_VERSION, len(raw)) + raw
    head += bytes(_align(len(head)) - len(head))
    return head, parts


def _header_bytes(meta: dict, entries: list[dict], payload_len: int, payload_sha: str, check: bool) -> bytes:
    """The header of a file with these arrays, after every limit load enforces (ValueError naming
    the one exceeded): shared by save and check_fits, so a run refused by neither cannot fail at save."""
    if payload_len > MAX_PAYLOAD_BYTES:
        raise ValueError(f"arrays total {payload_len} bytes, more than the {MAX_PAYLOAD_BYTES} limit")
    full = dict(meta, arrays=entries, payload_sha256=payload_sha)
    full["header_sha256"] = _header_digest(full)
    if check:
        try:
            validate_header(full)
        except ModelFileError as e:
            raise ValueError(f"refusing to write an invalid model: {e}") from None
    raw = _canonical(full)
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(raw)} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    try:
        _parse_header(raw, "<new model>")  # the limits load enforces (items, depth)
    except ModelFileError as e:
        raise ValueError(f"refusing to write a header lstm could not read back: {e}") from None
    return raw


def _layout(shapes: Mapping[str, tuple[str, tuple[int, ...]]]) -> tuple[list[dict], int]:
    """The array table of a file holding arrays of these (dtype code, shape) in this order, and its
    payload length (as _prepare lays out real arrays)."""
    entries, end = [], 0
    for name, (code, shape) in shapes.items():
        nbytes = DTYPES[code].itemsize * math.prod(shape)
        entries.append({"name": name, "dtype": code, "shape": list(shape), "offset": _align(end), "nbytes": nbytes})
        end = _align(end) + nbytes
    return entries, end


def payload_bytes(shapes: Mapping[str, tuple[str, tuple[int, ...]]]) -> int:
    """The payload length of a file holding arrays of these (dtype code, shape)."""
    return _layout(shapes)[1]


def check_fits(header: dict, shapes: Mapping[str, tuple[str, tuple[int, ...]]], *, schema: bool = True) -> None:
    """Raise ValueError (naming the limit) unless a file with this header and arrays of these
    (dtype code, shape) can be saved and read back: the checks of save without the arrays' bytes,
    so that a training run can be refused before it starts instead of at the end."""
    meta = {k: v for k, v in header.items() if k not in RESERVED_KEYS}
    _check_jsonable(meta)
    entries, end = _layout(shapes)
    _header_bytes(meta, entries, end, "0" * 64, schema)


def dumps(header: dict, arrays: Mapping[str, np.ndarray], *, schema: bool = True) -> bytes:
    """The bytes of a model file. Any "arrays"/"*_sha256" keys in `header` are recomputed.

    With `schema` the result must pass validate_header (ValueError otherwise: an invalid model
    is a bug in the caller, not bad user data). Non-finite float arrays are refused.
    """
    head, parts = _prepare(header, arrays, schema)
    chunks = [head]
    for pad, a in parts:
        chunks.append(bytes(pad))
        if a.nbytes:
            chunks.append(memoryview(a).cast("B"))
    return b"".join(chunks)


def save(path, header: dict, arrays: Mapping[str, np.ndarray], *, schema: bool = True) -> None:
    """Write a model file atomically (atomic.atomic_output): the old file survives any failure.

    Does not take the output lock: the command holds atomic.output_lock for the whole run.
    """
    head, parts = _prepare(header, arrays, schema)
    with atomic_output(path, "wb", buffer_size=0) as f:
        f.write(head)
        for pad, a in parts:
            if pad:
                f.write(bytes(pad))
            if a.nbytes:
                f.write(memoryview(a).cast("B"))


# --------------------------------------------------------------------------------------------
# The model schema


_TOP_KEYS = {"format", "format_version", "created", "lstm_version", "numpy_version",
             "numba_version", "arch", "data", "series", "training", "arrays"}
_ARCH_KEYS = {"cell", "input_size", "hidden_size", "num_layers", "output_size", "dtype"}
_DATA_KEYS = {"time_col", "id_col", "targets", "features", "time_kind", "step", "freq",
              "lookback", "horizon", "quantiles", "strategy", "scaling"}
_SERIES_KEYS = {"ids", "last_time"}
_TRAINING_KEYS = {"seed", "epochs_run", "best_epoch", "threads", "params", "history",
                  "data_sha256"}
_HISTORY_KEYS = {"train_loss", "val_loss"}
_ARCH_DTYPES = {"float32": "<f4", "float64": "<f8"}
_CREATED_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)")
_INT64 = 2**63


def _bad(where: str, problem: str) -> ModelFileError:
    return ModelFileError(f"invalid model header: {where} {problem}")


def _section(parent: dict, key: str, keys: set, where: str, optional: set = frozenset()) -> dict:
    value = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(value, dict):
        raise _bad(where, "is missing or not an object")
    missing, unknown = keys - value.keys(), value.keys() - keys - optional
    if missing:
        raise _bad(where, f"lacks {sorted(missing)}")
    if unknown:
        raise _bad(where, f"has unknown keys {sorted(unknown)[:5]}")
    return value


def _int(value, where: str, lo: int, hi: int) -> int:
    if not _is_int(value) or not lo <= value <= hi:
        raise _bad(where, f"must be an integer in {lo}..{hi}, got {_short(value)}")
    return value


def _num(value, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
        raise _bad(where, f"must be a finite number in [{lo}, {hi}], got {_short(value)}")
    return value


def _str(value, where: str, nonempty: bool = False) -> str:
    if not isinstance(value, str) or (nonempty and not value):
        raise _bad(where, f"must be a {'non-empty ' if nonempty else ''}string, got {_short(value)}")
    return value


def _choice(value, where: str, allowed) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _bad(where, f"must be one of {sorted(allowed)}, got {_short(value)}")
    return value


def _names(value, where: str, lo: int, hi: int, nonempty: bool = True) -> list:
    if not isinstance(value, list) or not lo <= len(value) <= hi:
        raise _bad(where, f"must be a list of {lo}..{hi} strings")
    seen = set()
    for i, item in enumerate(value):
        _str(item, f"{where}[{i}]", nonempty)
        if item in seen:
            raise _bad(where, f"repeats {_short(item)}")
        seen.add(item)
    return value


_HOLIDAYS_RE = re.compile(r"[A-Z]{2,3}(-[A-Z0-9]{1,10})?")


def _known_inputs(data: dict) -> int:
    """Checks data.calendar and data.holidays; returns how many columns they derive."""
    from lstm_cli import calendar

    components = data.get("calendar", [])
    _names(components, "data.calendar", 0, len(calendar.COMPONENTS))
    for i, c in enumerate(components):
        _choice(c, f"data.calendar[{i}]", set(calendar.COMPONENTS))
    if list(components) != [c for c in calendar.COMPONENTS if c in components]:
        raise _bad("data.calendar", f"must list components in the order {list(calendar.COMPONENTS)}")
    holidays = data.get("holidays")
    if holidays is not None and not (isinstance(holidays, str) and _HOLIDAYS_RE.fullmatch(holidays)):
        raise _bad("data.holidays", f"must be null or a code like 'US' or 'DE-BY', got {_short(holidays)}")
    if (components or holidays) and data["time_kind"] != "datetime":
        raise _bad("data.calendar", "needs data.time_kind 'datetime'")
    return 2 * len(components) + (1 if holidays else 0)


def _known_effect(data: dict, regressors: int, targets: int) -> None:
    """data.known_coef: one list of `targets` finite numbers per regressor (future features, then the
    holiday column); data.known_intercept: `targets` numbers when there are regressors (or both absent)."""
    coef, intercept = data.get("known_coef", []), data.get("known_intercept", [])
    if not isinstance(coef, list) or len(coef) != (regressors if coef or intercept else len(coef)):
        raise _bad("data.known_coef", f"must be a list of {regressors} lists (one per future feature or holiday "
                                      "column) or absent")
    if not isinstance(intercept, list) or len(intercept) != (targets if coef else 0) or (regressors and not coef
                                                                                           and intercept):
        raise _bad("data.known_intercept", f"must be a list of {targets} numbers with data.known_coef, else absent")
    for i, row in enumerate(coef):
        if not isinstance(row, list) or len(row) != targets:
            raise _bad(f"data.known_coef[{i}]", f"must be a list of {targets} numbers (one per target)")
        for j, c in enumerate(row):
            _num(c, f"data.known_coef[{i}][{j}]")
    for j, c in enumerate(intercept):
        _num(c, f"data.known_intercept[{j}]")


def expected_arrays(arch: dict, n_series: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype code, shape) of every array a model with `arch` (validated) must hold."""
    D, H, L, O = arch["input_size"], arch["hidden_size"], arch["num_layers"], arch["output_size"]  # noqa: E741
    dt = _ARCH_DTYPES[arch["dtype"]]
    G = GATES[arch["cell"]] * H
    out = {}
    for k in range(L):
        out[f"weight_ih_l{k}"] = (dt, (G, D if k == 0 else H))
        out[f"weight_hh_l{k}"] = (dt, (G, H))
        out[f"bias_ih_l{k}"] = (dt, (G,))
        out[f"bias_hh_l{k}"] = (dt, (G,))
    out["head.weight"] = (dt, (O, H))
    out["head.bias"] = (dt, (O,))
    out["scaler.loc"] = ("<f8", (n_series, D))
    out["scaler.scale"] = ("<f8", (n_series, D))
    return out


def _check_freq_field(freq: str, data: dict) -> None:
    """data.freq passes the check of --freq (frame.freq_problem: pandas, imported only for a model
    with a frequency), belongs to dates, and a fixed-length one matches data.step."""
    from lstm_cli import frame

    problem = frame.freq_problem(freq)
    if problem:
        raise _bad("data.freq", f"{_short(freq)} {problem}")
    if data["time_kind"] != "datetime":
        raise _bad("data.freq", f"is {_short(freq)} but data.time_kind is {data['time_kind']!r} (no frequency)")
    fixed = frame._fixed_ns(frame._offset(freq))
    if fixed is not None and data["step"] != fixed:
        raise _bad("data.step", f"is {data['step']} ns but one {freq} step is {fixed} ns")


MAX_MEMBERS = limits.INTEGERS["ensemble"][1]
_MEMBER_KEYS = {"arch", "data", "training"}
_MEMBER_DATA_KEYS = {"lookback", "scaling"}  # model.MEMBER_KEYS


def validate_header(header: dict) -> None:
    """Enforce the model header schema field by field; ModelFileError("invalid model header: ...").

    Unknown keys are refused everywhere except in training.params (the place for free-form
    settings); "payload_sha256" and "header_sha256" may be present (the container checks them).
    An ensemble (model.Ensemble) lists members 1.. under "members": each must make, with the
    file's other fields and its own arrays (member1.*, and the shared scaler), a valid model.
    """
    if not isinstance(header, dict) or "members" not in header:
        _validate_one(header)
        return
    members = header["members"]
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS - 1:
        raise _bad("members", f"must be a list of 1..{MAX_MEMBERS - 1} ensemble members")
    entries = header.get("arrays")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                                  for e in entries):
        raise _bad("arrays", "must be a list of objects with a string name")
    base = {k: v for k, v in header.items() if k != "members"}
    own = [e for e in entries if not e["name"].startswith("member")]
    _validate_one({**base, "arrays": own})
    shared = [e for e in own if e["name"].startswith("scaler.")]
    claimed = len(own)
    for i, m in enumerate(members, 1):
        where = f"members[{i - 1}]"
        if not isinstance(m, dict) or m.keys() != _MEMBER_KEYS:
            raise _bad(where, f"must be an object with exactly the keys {sorted(_MEMBER_KEYS)}")
        if not isinstance(m["data"], dict) or m["data"].keys() != _MEMBER_DATA_KEYS:
            raise _bad(f"{where}.data", f"must be an object with exactly the keys {sorted(_MEMBER_DATA_KEYS)}")
        prefix = f"member{i}."
        mine = [dict(e, name=e["name"][len(prefix):]) for e in entries if e["name"].startswith(prefix)]
        claimed += len(mine)
        try:
            _validate_one({**base, "arch": m["arch"], "data": {**base["data"], **m["data"]},
                           "training": m["training"], "arrays": mine + shared})
        except ModelFileError as e:
            raise ModelFileError(str(e).replace("invalid model header: ", f"invalid model header: {where}: ", 1)) \
                from None
    if claimed != len(entries):
        stray = [e["name"] for e in entries if e["name"].startswith("member")
                 and not any(e["name"].startswith(f"member{i}.") for i in range(1, len(members) + 1))]
        raise _bad("arrays", f"include unknown arrays {stray[:5]}")


def _validate_one(header: dict) -> None:
    if not isinstance(header, dict):
        raise _bad("header", "is not an object")
    missing = _TOP_KEYS - header.keys()
    unknown = header.keys() - _TOP_KEYS - {"payload_sha256", "header_sha256", "intervals"}  # intervals: optional
    if missing:
        raise _bad("header", f"lacks {sorted(missing)}")
    if unknown:
        raise _bad("header", f"has unknown keys {sorted(unknown)[:5]}")
    if header["format"] != "lstm-model":
        raise _bad("format", f'must be "lstm-model", got {_short(header["format"])}')
    if not _is_int(header["format_version"]) or header["format_version"] != FORMAT_VERSION:
        raise _bad("format_version", f"must be {FORMAT_VERSION}, got {_short(header['format_version'])}")
    created = _str(header["created"], "created")
    try:
        if not _CREATED_RE.fullmatch(created):
            raise ValueError
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise _bad("created", f"must be an ISO-8601 UTC time like 2026-01-31T12:00:00Z, got "
                              f"{_short(created)}") from None
    for key in ("lstm_version", "numpy_version", "numba_version"):
        _str(header[key], key)

    arch = _section(header, "arch", _ARCH_KEYS, "arch")
    _choice(arch["cell"], "arch.cell", set(GATES))
    _int(arch["input_size"], "arch.input_size", 1, limits.MAX_INPUTS)
    _int(arch["hidden_size"], "arch.hidden_size", *limits.INTEGERS["hidden"])
    _int(arch["num_layers"], "arch.num_layers", *limits.INTEGERS["layers"])
    _int(arch["output_size"], "arch.output_size", 1, limits.MAX_OUTPUTS)
    _choice(arch["dtype"], "arch.dtype", set(_ARCH_DTYPES))

    data = _section(header, "data", _DATA_KEYS, "data",  # absent in older files:
                    optional={"season", "blend", "future_features", "calendar", "holidays", "known_coef",
                              "known_intercept"})
    time_col = _str(data["time_col"], "data.time_col", nonempty=True)
    id_col = data["id_col"]
    if id_col is not None:
        _str(id_col, "data.id_col", nonempty=True)
    targets = _names(data["targets"], "data.targets", 1, limits.MAX_TARGETS)
    features = _names(data["features"], "data.features", 0, limits.MAX_INPUTS - 1)
    if set(targets) & set(features):
        raise _bad("data.features", f"overlap data.targets: {sorted(set(targets) & set(features))[:5]}")
    future = _names(data.get("future_features", []), "data.future_features", 0, limits.MAX_INPUTS - 1)
    if set(future) & (set(targets) | set(features)):
        raise _bad("data.future_features", f"overlap data.targets or data.features: "
                                           f"{sorted(set(future) & (set(targets) | set(features)))[:5]}")
    for key, col in (("data.time_col", time_col), ("data.id_col", id_col)):
        if col is not None and (col in targets or col in features or col in future):
            raise _bad(key, f"{col!r} is also a target or feature column")
    derived = _known_inputs(data)
    _known_effect(data, len(future) + (1 if data.get("holidays") else 0), len(targets))
    if id_col is not None and id_col == time_col:
        raise _bad("data.id_col", "is the same column as data.time_col")
    _choice(data["time_kind"], "data.time_kind", {"datetime", "integer"})
    _int(data["step"], "data.step", 1, _INT64 - 1)
    if data["freq"] is not None:
        _check_freq_field(_str(data["freq"], "data.freq", nonempty=True), data)
    _int(data["lookback"], "data.lookback", 1, limits.MAX_STEPS)
    horizon = _int(data["horizon"], "data.horizon", 1, limits.MAX_STEPS)
    quantiles = data["quantiles"]
    if not isinstance(quantiles, list):
        raise _bad("data.quantiles", "must be a list")
    for i, q in enumerate(quantiles):
        if type(q) is not float or not 0.0 < q < 1.0:
            raise _bad(f"data.quantiles[{i}]", f"must be a float in (0, 1), got {_short(q)}")
        if i and q <= quantiles[i - 1]:
            raise _bad("data.quantiles", "must be strictly increasing")
    _choice(data["strategy"], "data.strategy", {"direct", "recursive"})
    _choice(data["scaling"], "data.scaling", {"series", "level", "seasonal"})
    season = _int(data.get("season", 1), "data.season", 1, limits.MAX_STEPS)
    _num(data.get("blend", 0.0), "data.blend", 0.0, 1.0)
    if data["scaling"] == "seasonal" and season > data["lookback"]:
        raise _bad("data.season", f"is {season} but a seasonal model needs lookback >= season "
                                  f"(lookback {data['lookback']})")

    known = len(future) + derived
    inputs = len(targets) + len(features) + known + (1 if known else 0)
    if arch["input_size"] != inputs:
        raise _bad("arch.input_size", f"is {arch['input_size']} but there are {len(targets)} targets "
                                      f"+ {len(features)} features"
                                      + (f" + {len(future)} future features + {derived} calendar and holiday "
                                         "columns + the horizon flag" if known else ""))
    steps = 1 if data["strategy"] == "recursive" else horizon  # a recursive network forecasts one step
    outputs = steps * len(targets) * max(1, len(quantiles))
    if arch["output_size"] != outputs:
        what = "a recursive model's targets x quantiles" if steps != horizon else "horizon x targets x quantiles"
        raise _bad("arch.output_size", f"is {arch['output_size']} but {what} = {outputs}")
    if "intervals" in header:
        _intervals(header["intervals"], horizon, len(targets), quantiles)

    series = _section(header, "series", _SERIES_KEYS, "series")
    ids = _names(series["ids"], "series.ids", 1, MAX_SERIES, nonempty=False)
    if id_col is None and len(ids) != 1:
        raise _bad("series.ids", f"holds {len(ids)} series but data.id_col is null (one series)")
    last_time = series["last_time"]
    if not isinstance(last_time, list) or len(last_time) != len(ids):
        raise _bad("series.last_time", f"must be a list of {len(ids)} integers (one per series id)")
    for i, t in enumerate(last_time):
        _int(t, f"series.last_time[{i}]", -_INT64, _INT64 - 1)

    training = _section(header, "training", _TRAINING_KEYS, "training")
    _int(training["seed"], "training.seed", 0, 2**64 - 1)
    epochs = _int(training["epochs_run"], "training.epochs_run", 0, _INT64 - 1)
    _int(training["best_epoch"], "training.best_epoch", 0, epochs)
    _int(training["threads"], "training.threads", *limits.INTEGERS["threads"])  # refit runs with them
    params = training["params"]
    if not isinstance(params, dict):
        raise _bad("training.params", "must be an object")
    for key, value in params.items():
        if value is not None and type(value) not in (bool, int, float, str):
            raise _bad(f"training.params.{key}", f"must be a number, string, bool or null, got "
                                                 f"{type(value).__name__}")
        _check_training_param(key, value)
    history = _section(training, "history", _HISTORY_KEYS, "training.history")
    for key, nullable in (("train_loss", False), ("val_loss", True)):
        values = history[key]
        if not isinstance(values, list):
            raise _bad(f"training.history.{key}", "must be a list")
        for i, v in enumerate(values):
            if v is None and nullable:
                continue
            _num(v, f"training.history.{key}[{i}]")
    digest = training["data_sha256"]
    if not (isinstance(digest, str) and _SHA_RE.fullmatch(digest)):
        raise _bad("training.data_sha256", f"must be a lowercase hex SHA-256, got {_short(digest)}")

    entries = header["arrays"]
    if not isinstance(entries, list):
        raise _bad("arrays", "must be a list")
    expected = expected_arrays(arch, len(ids))
    found = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _bad(f"arrays[{i}]", "must be an object with a string name")
        found[entry["name"]] = entry
    if missing := [n for n in expected if n not in found]:
        raise _bad("arrays", f"lack {missing[:5]} for a {arch['num_layers']}-layer model")
    if unknown := [n for n in found if n not in expected]:
        raise _bad("arrays", f"include unknown arrays {unknown[:5]}")
    for name, (dtype, shape) in expected.items():
        entry = found[name]
        if entry.get("dtype") != dtype:
            raise _bad(f"array {name}", f"has dtype {_short(entry.get('dtype'))}, expected {dtype}")
        if entry.get("shape") != list(shape):
            raise _bad(f"array {name}", f"has shape {_short(entry.get('shape'))}, expected {list(shape)}")


_INTERVAL_KEYS = {"levels", "scale", "origins", "scores", "quantiles"}


def _intervals(table, horizon: int, n_targets: int, quantiles) -> None:
    """header.intervals (lstm_cli.intervals): method "absolute" (or none: files before CQR) on a point
    model, "cqr" on a quantile model whose grid holds every level's pair; strictly increasing levels
    in (0, 100), and for each level a horizon x targets table of finite quantiles, >= 0 for absolute
    (a bound never crosses the forecast), of any sign for cqr (a negative one narrows the band)."""
    from lstm_cli import intervals

    table = _section({"intervals": table}, "intervals", _INTERVAL_KEYS, "intervals", optional={"method"})
    method = _choice(table.get("method", intervals.ABSOLUTE), "intervals.method", set(intervals.METHODS))
    if method == intervals.ABSOLUTE and quantiles:
        raise _bad("intervals", "of method absolute are for point models (data.quantiles is not empty: cqr)")
    if method == intervals.CQR and not quantiles:
        raise _bad("intervals", "of method cqr are for quantile models (data.quantiles is empty: absolute)")
    levels = table["levels"]
    if not isinstance(levels, list) or not 1 <= len(levels) <= intervals.MAX_LEVELS:
        raise _bad("intervals.levels", f"must be a list of 1..{intervals.MAX_LEVELS} levels")
    for i, v in enumerate(levels):
        _num(v, f"intervals.levels[{i}]", 0.0, 100.0)
        if v in (0, 100) or (i and v <= levels[i - 1]):
            raise _bad("intervals.levels", "must be strictly increasing levels in (0, 100)")
    if method == intervals.CQR and (off := [v for v in levels if v not in intervals.grid_levels(quantiles)]):
        raise _bad("intervals.levels", f"holds {intervals.level_name(off[0])}, which the quantile grid "
                                       f"{','.join(f'{q:g}' for q in quantiles)} has no pair q, 1 - q for")
    _choice(table["scale"], "intervals.scale", set(intervals.SCALES))
    _int(table["origins"], "intervals.origins", 1, limits.MAX_STEPS)
    _int(table["scores"], "intervals.scores", 1, _INT64 - 1)
    q = table["quantiles"]
    if not isinstance(q, list) or len(q) != len(levels):
        raise _bad("intervals.quantiles", f"must be a list of {len(levels)} tables (one per level)")
    for i, per_level in enumerate(q):
        if not isinstance(per_level, list) or len(per_level) != horizon:
            raise _bad(f"intervals.quantiles[{i}]", f"must be a list of {horizon} steps (data.horizon)")
        for h, row in enumerate(per_level):
            if not isinstance(row, list) or len(row) != n_targets:
                raise _bad(f"intervals.quantiles[{i}][{h}]", f"must be a list of {n_targets} numbers (one per target)")
            for k, value in enumerate(row):
                _num(value, f"intervals.quantiles[{i}][{h}][{k}]", 0.0 if method == intervals.ABSOLUTE else -math.inf)


def _check_training_param(key: str, value) -> None:
    """A setting `evaluate --refit` trains with again: within the range of its `lstm train`
    option (lstm_cli.limits), or null (unset: the default). Unknown keys are free-form."""
    where = f"training.params.{key}"
    if value is None:
        return
    if key in limits.INTEGERS:
        _int(value, where, *limits.INTEGERS[key])
    elif key in limits.FLOATS:
        _num(value, where)
        if problem := limits.float_problem(key, value):
            raise _bad(where, f"{problem}, got {_short(value)}")
    elif key in limits.CHOICES:
        _choice(value, where, set(limits.CHOICES[key]))
    elif key == "warm_start_sha256" and not (isinstance(value, str) and _SHA_RE.fullmatch(value)):
        raise _bad(where, f"must be a lowercase hex SHA-256 or null, got {_short(value)}")


def validate_arrays(header: dict, arrays: Mapping[str, np.ndarray]) -> None:
    """Value checks the header cannot express: scaler.scale > 0 (finiteness is checked for all)."""
    scale = arrays.get("scaler.scale")
    if scale is None:
        raise _bad("arrays", "lack scaler.scale")
    if scale.size and not (scale > 0).all():
        raise ModelFileError("invalid model arrays: scaler.scale holds zero or negative values")
