"""CSV -> validated arrays (read_series), and forecast stamps -> text (future_times, format_times,
write_csv_text). The only module that sees pandas on the input side; it never prints and raises the
typed errors of lstm_cli.errors with one-line messages that name the file and, where it applies, the
line (as an editor shows it, header = line 1), the column and the value, and say what to do.

Plain files are read by a vectorised fast path (_read_fast); whatever it does not handle (quotes
inside fields, any error, ...) is read again from the start by the csv-module path (_read_careful), so
the rules below, the results and every message are the careful path's.

Rules, in the order they apply:

Input. `path` is a regular file (plain or gzip, told by its magic bytes; a `.gz` name without them
is an error) or '-' for stdin. Missing paths, directories, FIFOs, devices and dangling symlinks are
refused from os.stat before anything is opened (InputMissingError). The (decompressed) text must be
UTF-8 (a BOM is fine) and at most `max_bytes` long (gzip: counted while decompressing). Empty or
whitespace-only files, header-only files, binary data (NUL bytes), ZIP/XLSX/XLS/PDF/Parquet/SQLite,
bzip2/xz/zstd/7z and UTF-16 files, and HTML/XML or JSON pages are DataErrors. Lines may end in LF,
CRLF or CR; blank lines are skipped; quoted fields may hold the separator, quotes ("") and newlines,
and have no length limit. Every record must have as many fields as the header. Extra columns are
ignored; header names are compared after stripping spaces, case-sensitively, and must be unique
(except empty ones, as trailing separators make).

Numbers. A value is a plain decimal number with an optional sign, fraction and exponent
(`12`, `-0.5`, `1.5e-3`, `.5`), spaces around it allowed. MISSING_TOKENS mark a missing value:
exactly '', 'NA', 'N/A', 'NaN', 'nan', 'null', 'NULL' after stripping spaces. Everything else is a
DataError naming line, column and value: `n/a`, `-`, `12 kWh`, `1,234` and `12,5` (no thousands
separators, no decimal commas), `inf`, and numbers too large for float64 (1e400). Tiny and huge
finite magnitudes (1e-300, 1e300) are kept.

Time column. `time_col`, else the first of TIME_NAMES (in that order) that is a header name
(case-insensitive), else the first column whose first SAMPLE_ROWS values all read as dates. Whole
numbers (`1871`, `42`, also epoch seconds) give time_kind 'integer', except 8-digit values that are
all valid YYYYMMDD dates (unless the column is named 'year'). `2020Q1`/`2020-Q1`/`Q1 2020` are
quarter starts and `2021-W05`(`-3`) ISO weeks (their Monday, or the given weekday). Anything else
must be dates in one format, guessed from the first row by pandas (else one of _MORE_FORMATS, such
as `Jan 2021`); d/m versus m/d is settled by whichever reading pandas finds a frequency for, else
refused as ambiguous. ISO 8601 values with offsets or `Z` are converted to UTC and kept as naive
UTC. Mixing formats, or values with and without offsets, is a DataError naming line and value.
Times are int64: nanoseconds since the epoch for dates, the numbers themselves for integers.
Two consecutive times of a series whose difference does not fit in int64 are a DataError.

Series. With `id_col`, ids are the fields' text verbatim, spaces and all, so that forecasts join
back on them (' a', 'a' and 'a ' are three series, as '1' and '01' are two; an empty or blank id is
an error; header names, by contrast, are stripped, as they are matched to options) and
series come in sorted-id order. Rows are sorted by (id, time), so row order in the file does not
matter; a time that appears twice in one series is a DataError.

Frequency and gaps. A given `freq` must be a pandas offset alias with a positive multiple and a
step of at most MAX_STEP_YEARS, written without spaces or a sign (freq_problem; UsageError
otherwise, and for an integer time column), and every time must lie on its grid from the series'
first time (calendar offsets: that first time on the offset too); check_given_freq (train and
validate) also refuses data whose most common step is not one step of it (ms on monthly data).
Without `freq`, each series with 3+ rows gets pd.infer_freq; when that fails because steps are missing, a calendar alias (month/quarter/year
starts or ends, weeks, business days, days) is still taken if every time lies on its grid; fixed
sub-daily steps with holes (business-hours data) get freq None. All series must agree (a series
with a fixed alias such as 'h' agrees with irregular ones whose most common step has its length).
`step` is the most common difference between consecutive times (for a fixed-length freq, its
length); with no two rows in any series it is 1 for integers and, for dates, the given freq's
first step or 0. Rows are always treated as consecutive steps: when some differences exceed one
step, one warning says how many gaps and which is the largest; one more warning counts differences
shorter than the step (irregular data without a freq, or local days converted to UTC).

Missing values (`missing`). 'interpolate' (default): interior missing values of each series and
column are filled linearly between their neighbours (by row, since rows are steps), with one
warning that counts them and names the first few; refused when a value is missing in the first or
last row of a series, in a run of more than MAX_INTERPOLATED_RUN rows, or in more than
MAX_MISSING_FRACTION of a series' rows. 'refuse': any missing value is a DataError naming line and
column. Time and id values may never be missing. Series too short for a model are the caller's
business.

Future rows (`future_features`, `future_rows`). Future features are read as features and come last
in `columns`. With future_rows='split', the rows after a series' last row with a target value
(every target empty: the "future frame" convention) are taken out of it, after sorting and before
the frequency, and returned in `future` (FutureRows: the future features only, every cell filled;
past features may be empty there); the observed rows keep every rule above, and the future rows'
empty cells are not missing values. 'refuse' makes such rows a DataError (the model reads no future
features); 'no' reads them as missing values. A series with no target value at all is a DataError
under 'split' and 'refuse'. read_future_file reads a --future file into FutureRows, future_block
picks each series' rows for the forecast steps.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime
import gzip
import io
import math
import operator
import os
import re
import stat
import sys
import tempfile
import unicodedata
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from lstm_cli import memory
from lstm_cli.errors import DataError, FreqNotApplicable, InputMissingError, UsageError, WriteError, shown

try:  # public since pandas 2.2
    from pandas.tseries.api import guess_datetime_format
except ImportError:  # pragma: no cover - pandas 2.1
    from pandas._libs.tslibs.parsing import guess_datetime_format

MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL"})
TIME_NAMES = ("date", "time", "datetime", "timestamp", "ds", "year", "period", "month", "week")
MISSING_POLICIES = ("interpolate", "refuse")
NO_FUTURE = (0, "no")  # (future feature columns, future_rows) of a read without future rows
FUTURE_ROW_POLICIES = ("no", "split", "refuse")  # what read_series does with trailing target-empty rows
MAX_INTERPOLATED_RUN = 3  # consecutive missing values one interpolation may fill
MAX_MISSING_FRACTION = 0.10  # of a series' rows, per column
SAMPLE_ROWS = 100  # rows read before choosing a time column by its content
MAX_GRID = 20_000_000  # calendar stamps generated to check a grid; beyond it only steps are checked
MAX_LINE_BYTES = 1 << 26  # 64 MiB: a longer line is refused (the csv module would hold it several times)
MAX_COLUMNS = 100_000  # header fields
PARSE_CHECK_BYTES = 1 << 26  # the careful path's memory is checked this often
PARSE_LINE_BYTES = 300  # memory per parsed row on the careful path (a tuple of str, its line number)
MAX_STEP_YEARS = 10  # longest frequency step: the ns dates 1677..2262 (584 years) then hold 58+ steps

DAY_NS = 86_400 * 10**9
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_YYYYMMDD = re.compile(r"[12][0-9]{3}[01][0-9][0-3][0-9]", re.ASCII)
_QUARTER = re.compile(r"(?:([0-9]{4})\s*-?\s*[Qq]([1-4])|[Qq]([1-4])\s*-?\s*([0-9]{4}))", re.ASCII)
_ISO_WEEK = re.compile(r"([0-9]{4})-?[Ww]([0-9]{2})(?:-?([1-7]))?", re.ASCII)
_OFFSET_SUFFIX = re.compile(r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)$")
_THOUSANDS = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?", re.ASCII)
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]*,[0-9]+(?:[eE][+-]?[0-9]+)?", re.ASCII)
_MORE_FORMATS = ("%b %Y", "%B %Y", "%Y %b", "%Y %B", "%b-%Y", "%Y-%b", "%b-%y", "%d %b %Y", "%d-%b-%Y",
                 "%d %B %Y", "%b %d %Y", "%b %d, %Y", "%B %d, %Y")  # tried when pandas guesses no format
_MAGIC = (  # (first bytes, or a tuple of alternatives; what it is; what to do)
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook?)", "export the sheet as CSV (UTF-8)"),
    (b"PK\x05\x06", "an empty ZIP archive", "export the data as CSV (UTF-8)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) or other Office file", "export the sheet as CSV (UTF-8)"),
    (b"%PDF", "a PDF document", "export the table as CSV"),
    (b"PAR1", "a Parquet file", "write it as CSV, e.g. pandas.read_parquet(...).to_csv(...)"),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as CSV"),
    (tuple(b"BZh%d1AY&SY" % k for k in range(1, 10)), "bzip2-compressed data", "decompress it, or compress it with gzip (.csv.gz)"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it, or compress it with gzip (.csv.gz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data", "decompress it, or compress it with gzip (.csv.gz)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract the CSV from it"),
    (b"\xff\xfe", "UTF-16 text", "save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "save it as UTF-8"),
)


@dataclass(frozen=True)
class FutureRows:
    """Known-in-advance inputs (future features) for the steps after each series' last value:
    DATA's trailing target-empty rows (read_series, future_rows='split') or a --future file."""

    source: str  # the file they came from (as SeriesSet.source)
    ids: tuple[str, ...]  # series ids, sorted as SeriesSet.ids are
    starts: np.ndarray  # int64 (len(ids) + 1,): rows of series s are starts[s]:starts[s + 1] (may be 0 rows)
    times: np.ndarray  # int64 (M,), sorted within each series
    values: np.ndarray  # float64 (M, F): the future features, in the order asked
    lines: np.ndarray  # int64 (M,): line numbers in the file, for messages


@dataclass(frozen=True)
class SeriesSet:
    source: str  # file name as given ('<stdin>' for '-')
    time_col: str
    id_col: str | None
    columns: tuple[str, ...]  # targets, then features, then future features: the column order of `values`
    n_targets: int
    ids: tuple[str, ...]  # one per series, sorted; ('',) when there is no id column
    starts: np.ndarray  # int64 (n_series + 1,): rows of series s are starts[s]:starts[s + 1]
    values: np.ndarray  # float64 (N, len(columns)), rows sorted by (id, time), no NaN
    times: np.ndarray  # int64 (N,): ns since the epoch (naive, or UTC) or plain integers
    time_kind: str  # 'datetime' or 'integer'
    step: int  # most common difference: ns for datetimes, units for integers
    freq: str | None  # pandas offset alias when inferable or given, else None
    warnings: tuple[str, ...]  # one-line notes for the user; never printed here
    future: FutureRows | None = None  # the trailing target-empty rows, with future_rows='split'


# ----------------------------------------------------------------------------------------------
# messages


def _q(value: str, limit: int = 40) -> str:
    """A value quoted for a one-line message: repr escapes newlines, long values are cut."""
    if len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    return repr(value)


def _name(source: str) -> str:
    return shown(source)  # one quoting for every path in every message


def _fmt_time(t: int, kind: str) -> str:
    if kind == "integer":
        return str(int(t))
    ts = pd.Timestamp(int(t))
    if ts.value % DAY_NS == 0:
        return ts.strftime("%Y-%m-%d")
    return ts.isoformat(sep=" ")


def _fmt_duration(d: int, kind: str) -> str:
    if kind == "integer":
        return str(int(d))
    if d < 0:
        return "-" + _fmt_duration(-int(d), kind)
    parts, rest = [], int(d)
    for unit, ns in (("d", DAY_NS), ("h", 3600 * 10**9), ("min", 60 * 10**9)):
        if rest >= ns:
            parts.append(f"{rest // ns}{unit}")
            rest %= ns
    if rest:  # seconds with their exact fraction: 0.5s, 1.000000001s (not 500000000ns)
        whole, ns = divmod(rest, 10**9)
        parts.append(f"{whole}.{ns:09d}".rstrip("0").rstrip(".") + "s")
    return " ".join(parts) or "0s"


class _Where:
    """Builds message prefixes: file, line, column, series."""

    def __init__(self, source: str, id_col: str | None):
        self.file = _name(source)
        self.id_col = id_col

    def at(self, line: int | None = None, column: str | None = None) -> str:
        out = self.file
        if line is not None:
            out += f", line {line}"
        if column is not None:
            out += f", column {column!r}"
        return out

    def series(self, sid: str) -> str:
        return f" (series {sid!r})" if self.id_col is not None else ""


# ----------------------------------------------------------------------------------------------
# bytes in


class _ReadStop(Exception):
    """Raised inside the byte pipeline; read_series turns it into a DataError with the file name."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class _Prefixed(io.RawIOBase):
    """`head` (already read to sniff it) followed by the rest of `inner`."""

    def __init__(self, head: bytes, inner):
        self._head = memoryview(head)  # sliced as it is read: no copy of what is left
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._head:
            k = min(len(b), len(self._head))
            b[:k] = self._head[:k]
            self._head = self._head[k:]
            return k
        data = self._inner.read(len(b))
        if not data:
            return 0
        b[: len(data)] = data
        return len(data)


class _Checked(io.RawIOBase):
    """Passes bytes through while enforcing the size limit, refusing NUL bytes and checking UTF-8,
    counting lines so that a failure can name the line it is on.

    Also what the careful path's parse costs in memory, before it is spent: a line longer than
    MAX_LINE_BYTES (one huge field, or no line ends: the csv module holds a line several times
    over), a header of more than MAX_COLUMNS fields, and, every PARSE_CHECK_BYTES, the rows so
    far (PARSE_LINE_BYTES each, as Python strings) against the memory free when reading began."""

    def __init__(self, inner, limit: int, what: str, sep: str | None = None):
        self._inner = inner
        self._limit = limit
        self._what = what
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._sep = sep.encode("utf-8") if sep and len(sep.encode("utf-8")) == 1 else None
        self._line_start = 0  # byte offset where the current line began
        self._header_fields = 1
        self._budget = memory.available_bytes()
        self._next_check = PARSE_CHECK_BYTES
        self.nbytes = 0
        self.lines = 0

    def _check_shape(self, data: bytes, start: int) -> None:
        """Line length, header width and the parse's memory, for `data` read at offset `start`."""
        last_nl = data.rfind(b"\n")
        if self.lines == 0 and self._sep is not None:
            head = data if last_nl < 0 else data[: data.find(b"\n")]
            self._header_fields += head.count(self._sep)
            if self._header_fields > MAX_COLUMNS:
                raise _ReadStop(f"the header has more than {MAX_COLUMNS:,} columns; this is not a CSV of time "
                                "series (or --sep is wrong); keep only the columns you need", 1)
        if last_nl >= 0:
            first_nl = data.find(b"\n")
            if start + first_nl - self._line_start > MAX_LINE_BYTES:
                raise _ReadStop(f"a line longer than {_fmt_bytes(MAX_LINE_BYTES)}: a field this long (or a file "
                                "without line ends) is not time-series data; fix the line ends or drop the "
                                "column", self.lines + 1)
            self._line_start = start + last_nl + 1
        elif start + len(data) - self._line_start > MAX_LINE_BYTES:
            raise _ReadStop(f"a line longer than {_fmt_bytes(MAX_LINE_BYTES)}: a field this long (or a file "
                            "without line ends) is not time-series data; fix the line ends or drop the column",
                            self.lines + 1)
        if self.nbytes >= self._next_check:
            self._next_check += PARSE_CHECK_BYTES
            need = (self.lines + data.count(b"\n")) * PARSE_LINE_BYTES + 2 * self.nbytes
            if self._budget is not None and need > self._budget:
                raise _ReadStop(f"parsing {self._what} needs about {memory.fmt(need)} of memory by byte "
                                f"{self.nbytes:,} ({memory.fmt(self._budget)} was available); split the file, "
                                "or keep only the columns you need")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._inner.read(len(b))
        if not data:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise _ReadStop("the file ends inside a UTF-8 character; it is truncated or not UTF-8: "
                                "save it as UTF-8", self.lines + 1) from None
            return 0
        self.nbytes += len(data)
        if self.nbytes > self._limit:
            raise _ReadStop(f"{self._what} is larger than the limit of {_fmt_bytes(self._limit)}; "
                            "pass a smaller file or raise the limit")
        nul = data.find(b"\x00")
        if nul >= 0:
            line = self.lines + data.count(b"\n", 0, nul) + 1
            raise _ReadStop("a NUL byte: this is binary data, not CSV text; export it as CSV", line)
        self._check_shape(data, self.nbytes - len(data))
        try:
            self._decoder.decode(data)
        except UnicodeDecodeError as e:
            pos = max(0, e.start)
            line = self.lines + data.count(b"\n", 0, pos) + 1
            bad = data[pos : pos + 1].hex()
            raise _ReadStop(f"byte 0x{bad} is not UTF-8; save the file as UTF-8", line) from None
        self.lines += data.count(b"\n")
        b[: len(data)] = data
        return len(data)


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _read_up_to(stream, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _stat_input(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputMissingError(f"{_name(path)}: a broken symbolic link (its target "
                                    f"{_q(os.readlink(path), 80)} does not exist)") from None
        raise InputMissingError(f"{_name(path)}: no such file; check the path") from None
    except NotADirectoryError:
        raise InputMissingError(f"{_name(path)}: no such file (a part of the path is not a folder)") from None
    except PermissionError:
        raise InputMissingError(f"{_name(path)}: permission denied; check the file's permissions") from None
    except OSError as e:
        raise InputMissingError(f"{_name(path)}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputMissingError(f"{_name(path)}: a directory, not a CSV file; name a file inside it")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise InputMissingError(f"{_name(path)}: {kind}, not a regular file; "
                                "pipe it in with '-' (stdin) or save it to a file")
    return st


def _text_stream(raw, source: str, gz_name: bool, max_bytes: int, sep: str | None = None) -> tuple[io.TextIOWrapper, bool]:
    """Sniff `raw` (binary), decompress gzip, and return a UTF-8 text stream over checked bytes."""
    where = _name(source)
    head = _read_up_to(raw, 2)
    stream = _Prefixed(head, raw)
    gz = head == b"\x1f\x8b"
    if gz:
        stream = gzip.GzipFile(fileobj=stream, mode="rb")
    elif gz_name and head:
        raise DataError(f"{where}: named .gz but not gzip-compressed (no gzip header); "
                        "rename it to .csv or compress it with gzip")
    try:
        head = _read_up_to(stream, 16)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{where}: corrupt or truncated gzip data ({_gzip_reason(e)}); "
                        "compress the CSV again") from None
    for magic, what, fix in _MAGIC:
        if head.startswith(magic):
            raise DataError(f"{where}: {what}, not a CSV file; {fix}")
    checked = _Checked(_Prefixed(head, stream), max_bytes,
                       "the decompressed data" if gz else "the input", sep)
    return io.TextIOWrapper(io.BufferedReader(checked, 1 << 16), encoding="utf-8-sig", newline=""), gz


def _gzip_reason(e: BaseException) -> str:
    if isinstance(e, EOFError):
        return "it ends before the end of the compressed stream"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class _Records:
    """Non-blank CSV records with the line each starts on; ragged records and broken quoting are
    DataErrors. I/O failures below (gzip, UTF-8, size) become DataErrors too."""

    def __init__(self, text: io.TextIOWrapper, where: _Where, sep: str, gz: bool):
        self._reader = csv.reader(text, delimiter=sep, quotechar='"', doublequote=True, strict=True)
        self._where = where
        self._gz = gz
        self._sep = sep
        self.header: list[str] | None = None
        self.header_line = 0

    def _failure(self, e: BaseException, start: int) -> Exception:
        """The user-facing error for a failure while reading the record that starts on line `start`."""
        where = self._where
        if isinstance(e, csv.Error):
            msg = str(e)
            if "end of data" in msg or "EOF" in msg:
                return DataError(f"{where.at(start)}: a quote opened here is never closed; "
                                 "close it or remove the stray quote")
            if "field limit" in msg:
                return DataError(f"{where.at(start)}: a field longer than {_fmt_bytes(MAX_LINE_BYTES)}: not "
                                 "time-series data (a stray quote?); close the quote or drop the column")
            return DataError(f"{where.at(self._reader.line_num)}: malformed quoting ({msg}); text after a "
                             'closing quote must be a separator; write quotes inside a field as ""')
        if isinstance(e, _ReadStop):
            return DataError(f"{where.at(e.line)}: {e}")
        if isinstance(e, (EOFError, zlib.error)) or (self._gz and isinstance(e, OSError)):
            return DataError(f"{where.file}: corrupt or truncated gzip data ({_gzip_reason(e)}); "
                             "compress the CSV again")
        return InputMissingError(f"{where.file}: read failed ({getattr(e, 'strerror', None) or e})")

    def read_header(self) -> list[str]:
        """The first non-blank record; blank lines before it are skipped."""
        reader = self._reader
        start = 1
        try:
            while True:
                start = reader.line_num + 1
                row = next(reader)
                if row and (len(row) > 1 or row[0].strip()):
                    break
        except StopIteration:
            raise DataError(f"{self._where.file}: empty (no header, no data); give a CSV with a header line "
                            "and one row per time step") from None
        except (csv.Error, _ReadStop, EOFError, zlib.error, OSError) as e:
            raise self._failure(e, start) from None
        self.header_line, self.header = start, row
        return row

    def read(self, pick, lines: list[int], rows: list, limit: int | None = None) -> None:
        """Append pick(record) and the record's first line for each data record, up to `limit`
        records; blank lines are skipped, ragged records are DataErrors."""
        reader = self._reader
        n = len(self.header)
        add_line, add_row = lines.append, rows.append
        count = 0
        start = reader.line_num + 1
        try:
            while limit is None or count < limit:
                start = reader.line_num + 1
                row = next(reader)
                if len(row) != n:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue
                    raise DataError(self._ragged(start, row, n))
                add_line(start)
                add_row(pick(row))
                count += 1
        except StopIteration:
            return
        except (csv.Error, _ReadStop, EOFError, zlib.error, OSError) as e:
            raise self._failure(e, start) from None

    def _ragged(self, line: int, row: list[str], n: int) -> str:
        msg = (f"{self._where.at(line)}: {len(row)} fields but the header (line {self.header_line}) "
               f"has {n}; ")
        if len(row) > n:
            msg += ("quote values that contain the separator, and write numbers with a decimal point "
                    "and no thousands separator")
        else:
            msg += "add the missing fields (empty for a missing value)"
        if self._sep != ";" and len(row) == 1 and ";" in row[0]:
            msg += "; the file looks semicolon-separated: pass --sep ';'"
        return msg


# ----------------------------------------------------------------------------------------------
# values


def _why_not_number(token: str) -> str:
    t = token.strip()
    if t.lower().lstrip("+-") in ("inf", "infinity"):
        return "is infinite; replace it with a finite number or leave it empty (missing)"
    if "," in t and (_THOUSANDS.fullmatch(t) or _DECIMAL_COMMA.fullmatch(t)):
        return ("has a comma inside a number (a thousands separator or a decimal comma); write plain "
                "numbers with a decimal point, such as 1234 or 12.5")
    return ("is not a number; write plain numbers such as 12.5 or 1.2e3, and missing values as one of: "
            + ", ".join(repr(m) for m in sorted(MISSING_TOKENS)))


def _parse_numbers(strs: Sequence[str], lines: np.ndarray, column: str, where: _Where,
                   semicolon_hint: bool) -> np.ndarray:
    """float64 array with NaN where a missing token stands; any other non-number is a DataError."""
    match = _NUMBER.fullmatch
    bad = [i for i, s in enumerate(strs) if not match(s)]
    clean = list(strs) if bad else strs
    for i in bad:
        if strs[i].strip() in MISSING_TOKENS:
            clean[i] = "nan"
            continue
        msg = f"{where.at(int(lines[i]), column)}: {_q(strs[i])} {_why_not_number(strs[i])}"
        if semicolon_hint and "," in strs[i]:
            msg += "; if the file is semicolon-separated, pass --sep ';'"
        raise DataError(msg)
    values = np.array(clean, dtype=np.float64) if len(clean) else np.zeros(0)
    over = np.isinf(values)
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise DataError(f"{where.at(int(lines[i]), column)}: {_q(strs[i])} is too large for a 64-bit float; "
                        "rescale the column")
    return values


# ----------------------------------------------------------------------------------------------
# times


def _parse_times(strs: Sequence[str], lines: np.ndarray, column: str, where: _Where,
                 hint: str) -> tuple[np.ndarray, str]:
    """(int64 times, kind) from the raw strings of the time column."""
    vals = [s.strip() for s in strs]
    for i, s in enumerate(vals):
        if s in MISSING_TOKENS:
            raise DataError(f"{where.at(int(lines[i]), column)}: missing time value {_q(strs[i])}; "
                            f"every row needs a time{hint}")
    if all(_INTEGER.fullmatch(s) for s in vals):
        if not all(_YYYYMMDD.fullmatch(s) for s in vals) or column.strip().lower() == "year":
            return _parse_integers(vals, lines, column, where), "integer"
        parsed = pd.to_datetime(pd.Series(vals, dtype=object), format="%Y%m%d", errors="coerce")
        if parsed.notna().all():
            return _to_ns(parsed, vals, lines, column, where), "datetime"
        return _parse_integers(vals, lines, column, where), "integer"
    for pattern, start_of, what in _PERIODS:
        if not pattern.fullmatch(vals[0]):
            continue
        stamps = []
        for i, s in enumerate(vals):
            m = pattern.fullmatch(s)
            try:
                stamps.append(start_of(m).isoformat() if m else None)
            except ValueError:
                m = None
            if m is None:
                raise DataError(f"{where.at(int(lines[i]), column)}: {_q(s)} is not a valid {what} written like {_q(vals[0])} "
                                f"(line {int(lines[0])}); use one time format in the whole column{hint}")
        parsed = pd.to_datetime(pd.Series(stamps, dtype=object), format="%Y-%m-%d")
        return _to_ns(parsed, vals, lines, column, where), "datetime"
    return _parse_datetimes(vals, lines, column, where, hint), "datetime"


def _quarter_start(m: re.Match) -> datetime.date:
    return datetime.date(int(m[1] or m[4]), 3 * int(m[2] or m[3]) - 2, 1)


def _iso_week_start(m: re.Match) -> datetime.date:
    return datetime.date.fromisocalendar(int(m[1]), int(m[2]), int(m[3] or 1))


_PERIODS = ((_QUARTER, _quarter_start, "quarter"), (_ISO_WEEK, _iso_week_start, "ISO week"))


def _parse_integers(vals: list[str], lines: np.ndarray, column: str, where: _Where) -> np.ndarray:
    try:
        return np.array([int(s) for s in vals], dtype=np.int64)
    except OverflowError:
        i = next(k for k, s in enumerate(vals) if not -(2**63) <= int(s) < 2**63)
        raise DataError(f"{where.at(int(lines[i]), column)}: time {_q(vals[i])} is out of the 64-bit "
                        "integer range; use smaller step numbers") from None


def _format_candidates(first: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        month_first = guess_datetime_format(first, dayfirst=False)
        day_first = guess_datetime_format(first, dayfirst=True)
    out = [f for f in (month_first, day_first) if f]
    if out and out[0].startswith(("%Y", "%y")):
        return out[:1]  # year-first formats are never year-day-month
    if not out:
        for fmt in _MORE_FORMATS:
            try:
                datetime.datetime.strptime(first, fmt)
            except ValueError:
                continue
            return [fmt]
    return list(dict.fromkeys(out))


def _parse_datetimes(vals: list[str], lines: np.ndarray, column: str, where: _Where,
                     hint: str) -> np.ndarray:
    first = vals[0]
    formats = _format_candidates(first)
    if not formats:
        raise DataError(f"{where.at(int(lines[0]), column)}: cannot read {_q(first)} as a date or time; "
                        f"write ISO 8601 such as 2024-01-31 or 2024-01-31 13:45:00{hint}")
    series = pd.Series(vals, dtype=object)
    tried = []
    for fmt in formats:
        aware = "%z" in fmt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(series, format=fmt, errors="coerce", utc=aware)
        if aware:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        tried.append((fmt, parsed))
    good = [(fmt, parsed) for fmt, parsed in tried if parsed.notna().all()]
    if not good:
        fmt, parsed = tried[0]
        i = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        value = vals[i]
        if bool(_OFFSET_SUFFIX.search(value)) != ("%z" in fmt) and len(value) > 10:
            why = ("mixes times with and without a UTC offset (compare line "
                   f"{int(lines[0])}: {_q(first)}); give every time an offset, or none")
        else:
            why = (f"does not match the time format of line {int(lines[0])} ({_q(first)}, read as {fmt}) "
                   "or is not a valid date; use one time format in the whole column")
        raise DataError(f"{where.at(int(lines[i]), column)}: {_q(value)} {why}{hint}")
    if len(good) > 1:
        good = _pick_regular(good)
        if len(good) > 1:
            raise DataError(f"{where.at(int(lines[0]), column)}: dates like {_q(first)} read as day/month "
                            "and as month/day alike; write them as YYYY-MM-DD")
    return _to_ns(good[0][1], vals, lines, column, where)


def _pick_regular(candidates):
    """Of the d/m and m/d readings of the same dates, the one whose distinct times have a pandas
    frequency when exactly one has; else all of them (ambiguous)."""
    regular = []
    for _, parsed in candidates:
        t = np.unique(parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64))
        regular.append(len(t) >= 3 and _infer_freq(pd.DatetimeIndex(t)) is not None)
    if sum(regular) == 1:
        return [c for c, r in zip(candidates, regular, strict=True) if r]
    return candidates


def _to_ns(parsed: pd.Series, vals: list[str], lines: np.ndarray, column: str, where: _Where) -> np.ndarray:
    lo, hi = pd.Timestamp.min.ceil("us"), pd.Timestamp.max.floor("us")
    out = ((parsed < lo) | (parsed > hi)).to_numpy()
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise DataError(f"{where.at(int(lines[i]), column)}: {_q(vals[i])} is outside the supported "
                        f"dates {lo:%Y-%m-%d}..{hi:%Y-%m-%d}; check the year")
    return parsed.dt.as_unit("ns").to_numpy().astype(np.int64)


# ----------------------------------------------------------------------------------------------
# frequency


def _offset(freq: str):
    from pandas.tseries.frequencies import to_offset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_offset(freq)


def _fixed_ns(offset) -> int | None:
    """Length in ns of a fixed-length offset (h, min, s, ...), None for calendar offsets."""
    from pandas.tseries.offsets import Tick

    return int(offset.nanos) if isinstance(offset, Tick) else None


def _mode(d: np.ndarray) -> int:
    values, counts = np.unique(d, return_counts=True)
    return int(values[np.argmax(counts)])


def _infer_freq(idx: pd.DatetimeIndex) -> str | None:
    """pd.infer_freq's alias, when the stamps lie on it: pandas calls 08:00-15:00 hourly data 'bh'
    (business hours are 09:00-17:00), whose grid then refused the file's first time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            f = pd.infer_freq(idx)
        except (ValueError, TypeError):
            return None
    if f is None:
        return None
    f = f if isinstance(f, str) else f.freqstr
    return f if _offset(f).is_on_offset(idx[0]) else None


def _on_grid(t: np.ndarray, freq: str) -> np.ndarray:
    """Mask of the sorted stamps t (ns) that lie on the grid of freq counted from t[0]."""
    offset = _offset(freq)
    fixed = _fixed_ns(offset)
    if fixed:
        return (t % fixed - t[0] % fixed) % fixed == 0  # t - t[0] overflows past 292 years of ns
    if len(t) < 2:
        return np.array([offset.is_on_offset(pd.Timestamp(int(x))) for x in t], dtype=bool)
    if (float(t[-1]) - float(t[0])) / max(1, int(np.diff(t).min())) > MAX_GRID:  # too many stamps to list
        return np.array([offset.is_on_offset(pd.Timestamp(int(x))) for x in t], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = pd.date_range(pd.Timestamp(int(t[0])), pd.Timestamp(int(t[-1])), freq=offset).asi8
    return np.isin(t, grid)


def _calendar_freq_with_gaps(t: np.ndarray) -> str | None:
    """A calendar alias for stamps that lie on its grid with some steps missing, or None. Fixed
    sub-daily steps are left to `step` (business-hours data has no alias)."""
    d = np.diff(t)
    step = _mode(d)
    if step <= 0 or step % DAY_NS:
        return None
    idx = pd.DatetimeIndex(t)
    candidates = []
    months = np.asarray(idx.year * 12 + idx.month)
    md = np.diff(months)
    if (md > 0).all():
        k = _mode(md)
        if (md % k == 0).all():
            if (idx.day == 1).all():
                candidates.append([idx[0] + pd.DateOffset(months=k * i) for i in range(4)])
            elif idx.is_month_end.all():
                candidates.append([idx[0] + pd.offsets.MonthEnd(k * i) for i in range(4)])
    if step == DAY_NS and (idx.day_of_week < 5).all():
        candidates.append("B")
    candidates.append([idx[0] + pd.Timedelta(step * i) for i in range(4)])
    for c in candidates:
        freq = c if isinstance(c, str) else _infer_freq(pd.DatetimeIndex(c))
        if freq is None or _fixed_ns(_offset(freq)):
            continue
        if _on_grid(t, freq).all():
            return freq
    return None


def _same_grid(a: str, b: str) -> bool:
    """Whether two aliases step through the same stamps (QS-JAN and QS-APR do)."""
    start = pd.Timestamp("2001-02-03")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ga = pd.date_range(start, periods=8, freq=_offset(a))
        gb = pd.date_range(start, periods=8, freq=_offset(b))
    return bool((ga == gb).all())


def freq_problem(freq) -> str | None:
    """Why `freq` is not a usable frequency, or None. Usable: a pandas offset alias (anchored ones
    such as W-MON and QS-DEC included) with a positive multiple, one step of which is at most
    MAX_STEP_YEARS long, so that a series, its lookback and its horizon fit in the ns dates. The one
    check of --freq (train, validate) and of a model file's data.freq."""
    examples = "(examples: D, W-MON, MS, QS, YS, h, 5min)"
    if not isinstance(freq, str) or not freq.strip() or len(freq) > 40 or not freq.isascii():
        return f"is not a pandas offset alias {examples}"
    try:
        offset = _offset(freq)
    except Exception as e:  # to_offset raises ValueError, OverflowError, ... for junk: all mean "not an alias"
        hint = ""
        m = re.search(r"Did you mean (\w[\w-]*)\??", str(e)) or re.search(r"[Pp]lease use '([^']+)'", str(e))
        if m:
            hint = f"; did you mean {m.group(1)!r}?"
        return f"is not a pandas offset alias {examples}{hint}"
    if offset.n < 1:
        return f"has the multiple {offset.n}; a step needs a positive one, such as 1h, 15min or 2W"
    if any(c.isspace() for c in freq) or freq.startswith(("+", "-")):
        # pandas reads ' MS' and '+1MS' as MS, but the string is what the model records and shows
        return f"has spaces or a sign; write the alias without them, e.g. {offset.freqstr}"
    ref = pd.Timestamp("2000-01-01")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = ref + offset
            length = (first + offset) - first
        too_long = length > pd.Timedelta(days=366 * MAX_STEP_YEARS)
    except (OverflowError, ValueError):  # OutOfBoundsDatetime is a ValueError
        too_long = True
    if too_long:
        return (f"steps by more than {MAX_STEP_YEARS} years; the supported dates "
                f"{pd.Timestamp.min:%Y}..{pd.Timestamp.max:%Y} leave room for too few steps")
    return None


def _check_freq(freq: str | None) -> None:
    if freq is None:
        return
    problem = freq_problem(freq)
    if problem:
        raise UsageError(f"--freq {_q(str(freq))} {problem}")


# ----------------------------------------------------------------------------------------------
# the whole read


def _names(value, what: str) -> tuple[str, ...]:
    """Column names as given (one string or several), stripped; an empty one is a UsageError."""
    if isinstance(value, str):
        value = (value,)
    out = []
    for v in value:
        if not isinstance(v, str) or not v.strip():
            raise UsageError(f"{what} names must be non-empty strings, got {v!r}")
        out.append(v.strip())
    return tuple(out)


def _check_roles(roles: list[tuple[str, str]]) -> None:
    """Each column one role: a name given twice, or as a target and a feature, is a UsageError."""
    seen: dict[str, str] = {}
    for col, role in roles:
        if col in seen:
            same = "twice" if seen[col] == role else f"as {seen[col]} and as {role}"
            raise UsageError(f"column {col!r} is named {same}; give each column one role")
        seen[col] = role


def _check_args(targets, features, time_col, id_col, sep, missing, max_bytes, future_features=(), future_rows="no"):
    targets, features = _names(targets, "target"), _names(features, "feature")
    future_features = _names(future_features, "future feature")
    if not targets:
        raise UsageError("name at least one target column (--target)")
    if future_rows not in FUTURE_ROW_POLICIES:
        raise UsageError(f"future_rows must be one of {', '.join(FUTURE_ROW_POLICIES)}, got {future_rows!r}")
    time_col = _names((time_col,), "time column")[0] if time_col is not None else None
    id_col = _names((id_col,), "id column")[0] if id_col is not None else None
    roles = [(t, "--target") for t in targets] + [(f, "--feature") for f in features]
    roles += [(f, "--future-features") for f in future_features]
    roles += [(c, r) for c, r in ((time_col, "--time-col"), (id_col, "--id-col")) if c is not None]
    _check_roles(roles)
    if not isinstance(sep, str) or len(sep) != 1 or sep in "\"\r\n":
        raise UsageError(f"--sep must be a single character such as ',' ';' or a tab, got {sep!r}")
    if missing not in MISSING_POLICIES:
        raise UsageError(f"--missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    if not isinstance(max_bytes, int) or max_bytes < 1:
        raise UsageError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    return targets, features, future_features, time_col, id_col


def _listed(names, limit: int = 20) -> str:
    """Names quoted for a message, the first `limit` of them: a header of thousands of columns
    must not make a line of tens of kilobytes."""
    names = list(names)
    shown_names = ", ".join(_q(n) for n in names[:limit])
    return shown_names + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _missing_columns_error(where: _Where, header: list[str], names: list[str], sep: str) -> DataError:
    available = _listed(header)
    msg = (f"{where.file}: column{'s' if len(names) > 1 else ''} {_listed(names)} "
           f"not found; the header has {available}")
    lower = {h.lower(): h for h in header}
    close = [lower[n.lower()] for n in names if n.lower() in lower]
    if close:
        msg += f"; did you mean {_listed(close)}? (names are case-sensitive)"
    if sep != ";" and any(";" in h for h in header):
        msg += "; the file looks semicolon-separated: pass --sep ';'"
    elif sep != "\t" and any("\t" in h for h in header):
        msg += "; the file looks tab-separated: pass --sep $'\\t'"
    return DataError(msg)


def _looks_like_dates(values: list[str]) -> bool:
    vals = [v.strip() for v in values if v.strip() not in MISSING_TOKENS]
    if not vals or all(_INTEGER.fullmatch(v) for v in vals):
        return False
    if any(all(p.fullmatch(v) for v in vals) for p, _, _ in _PERIODS):
        return True
    if all(_NUMBER.fullmatch(v) for v in vals):
        return False
    formats = _format_candidates(vals[0])
    if not formats:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(pd.Series(vals, dtype=object), format=formats[0], errors="coerce",
                                utc="%z" in formats[0])
    return bool(parsed.notna().all())


def read_series(path: str, *, targets: Sequence[str], features: Sequence[str] = (), time_col: str | None = None,
                id_col: str | None = None, sep: str = ",", freq: str | None = None,
                missing: str = "interpolate", max_bytes: int = 2_000_000_000, stdin=None,
                future_features: Sequence[str] = (), future_rows: str = "no") -> SeriesSet:
    """Read a CSV (file, .csv.gz or '-' for stdin) into validated, sorted arrays; see the module
    docstring for every rule. future_features are read as features (after them in `columns`);
    future_rows says what trailing target-empty rows are: 'no' (missing values, as ever), 'split'
    (future rows, returned in .future) or 'refuse' (an error: the model reads no future features)."""
    targets, features, future_features, time_col, id_col = _check_args(
        targets, features, time_col, id_col, sep, missing, max_bytes, future_features, future_rows)
    _check_freq(freq)
    with _open_input(path, max_bytes, stdin) as (raw, source, gz_name):
        return _read_stream(raw, source, gz_name, targets, features + future_features, time_col, id_col, sep,
                            freq, missing, max_bytes, (len(future_features), future_rows))


@contextlib.contextmanager
def _open_input(path, max_bytes: int, stdin):
    """(binary stream, source name, named .gz) of a path or '-' (stdin), checked from os.stat
    before it is opened (module docstring: Input); a file is closed afterwards, stdin is not."""
    path = os.fspath(path)
    source = "<stdin>" if path == "-" else path
    where = _Where(source, None)
    if path == "-":
        if stdin is None:
            if sys.stdin is None:
                raise UsageError("'-' reads the CSV from stdin, but there is no stdin; name a file instead")
            if sys.stdin.isatty():
                raise UsageError("'-' reads the CSV from stdin, but stdin is a terminal; pipe a file in")
            stdin = sys.stdin.buffer
        elif not isinstance(stdin.read(0), bytes):
            stdin = stdin.buffer
        yield stdin, source, False
        return
    st = _stat_input(path)
    if st.st_size == 0:
        raise DataError(f"{where.file}: empty (0 bytes); give a CSV with a header line and one row per time step")
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise InputMissingError(f"{where.file}: cannot be opened ({e.strerror or e})") from None
    with raw:
        head = raw.read(2)
        raw.seek(0)
        if head != b"\x1f\x8b" and st.st_size > max_bytes:
            raise DataError(f"{where.file}: {_fmt_bytes(st.st_size)}, larger than the limit of "
                            f"{_fmt_bytes(max_bytes)}; pass a smaller file or raise the limit")
        yield raw, source, path.lower().endswith(".gz")


def _read_stream(raw, source: str, gz_name: bool, targets, features, time_col, id_col, sep, freq, missing,
                 max_bytes, future=NO_FUTURE) -> SeriesSet:
    """The fast path (_read_fast) when it takes the input; else the careful path (_read_careful)
    from the first byte again: a regular file is rewound, stdin is replayed from what the fast
    path read. Only the careful path raises errors about the input, so every message is its own."""
    args = (targets, features, time_col, id_col, sep, freq, missing, max_bytes, future)
    seekable = raw.seekable() if hasattr(raw, "seekable") else False
    tape = None if seekable else _Tape(raw)
    try:
        start = raw.tell() if seekable else 0
    except OSError:
        seekable, tape = False, _Tape(raw)
    try:
        try:
            fast = _read_fast(raw if tape is None else tape, source, gz_name, *args)
        except memory.NotEnoughMemory:
            raise  # the careful path needs more memory still
        except _FAST_GIVES_UP:
            fast = None
        if fast is not None:
            return fast
        if tape is None:
            raw.seek(start)
        else:
            raw = tape.rewind()
        return _read_careful(raw, source, gz_name, *args)
    finally:
        if tape is not None:
            tape.close()


def _read_careful(raw, source: str, gz_name: bool, targets, features, time_col, id_col, sep, freq, missing,
                  max_bytes, future=NO_FUTURE) -> SeriesSet:
    with _long_fields():
        return _read_records(raw, source, gz_name, targets, features, time_col, id_col, sep, freq, missing,
                             max_bytes, future)


@contextlib.contextmanager
def _long_fields():
    """The csv module reads long quoted fields (its default stops at 131,072), not unbounded ones."""
    limit = csv.field_size_limit()
    csv.field_size_limit(MAX_LINE_BYTES)
    try:
        yield
    finally:
        csv.field_size_limit(limit)


@dataclass(frozen=True)
class _Plan:
    """What the header says: the columns to read, and how the time column was found."""

    header: list[str]
    index: dict[str, int]
    time_col: str
    columns: list[str]  # targets, then features
    auto_time: bool  # no --time-col was given
    by_content: bool  # ... and no column had a time name: the first column holding dates was taken

    @property
    def chosen(self) -> str:
        return f"; {self.time_col!r} was taken as the time column, choose another with --time-col"

    @property
    def hint(self) -> str:
        return self.chosen if self.by_content else ""


def _plan(header_raw: list[str], header_line: int, where: _Where, sep: str, targets, features, time_col, id_col,
          sample: Callable[[], list[list[str]]]) -> _Plan:
    """Header checks and the choice of the time column; `sample` gives the first SAMPLE_ROWS
    records (all fields) when the time column must be found by its content."""
    first = header_raw[0].lstrip()
    if first.startswith("<"):
        raise DataError(f"{where.file}: an HTML/XML page, not a CSV file (line {header_line} starts "
                        f"with {_q(first, 30)}); download or export the data itself as CSV")
    if first.startswith("{") or re.match(r"\[\s*([\[{\"0-9-]|$)", first):
        raise DataError(f"{where.file}: JSON, not a CSV file (line {header_line} starts with "
                        f"{_q(first, 30)}); convert it to CSV, e.g. pandas.read_json(...).to_csv(...)")
    header = [h.strip() for h in header_raw]
    dups = [h for h, n in Counter(header).items() if n > 1 and h]  # unnamed columns cannot be asked for
    if dups:
        raise DataError(f"{where.file}: duplicate column name{'s' if len(dups) > 1 else ''} "
                        f"{_listed(dups)} in the header (line {header_line}); "
                        "rename them so that every column has its own name")
    index = {h: i for i, h in enumerate(header)}
    wanted = list(targets) + list(features) + [c for c in (time_col, id_col) if c is not None]
    absent = [c for c in wanted if c not in index]
    if absent:
        raise _missing_columns_error(where, header, absent, sep)
    auto_time = time_col is None
    by_content = False
    if auto_time:
        taken = set(wanted)
        by_lower = {}
        for h in header:
            by_lower.setdefault(h.lower(), h)
        time_col = next((by_lower[n] for n in TIME_NAMES if n in by_lower and by_lower[n] not in taken), None)
        if time_col is None:
            rows = sample()
            time_col = next((h for h in header if h not in taken
                             and _looks_like_dates([r[index[h]] for r in rows])), None)
            by_content = True
            named = next((by_lower[n] for n in TIME_NAMES if n in by_lower and by_lower[n] in taken), None)
            if time_col is None and named is not None:  # the time column itself given as a target or feature
                raise UsageError(f"{where.file}: {named!r} looks like the time column but is named as a target or "
                                 "feature; a column has one role: drop it from those, or give the time column with "
                                 "--time-col")
            if time_col is None:
                rest = [h for h in header if h not in taken]
                raise DataError(f"{where.file}: no time column found (none is named "
                                f"{'/'.join(TIME_NAMES)} and " + (f"none of {_listed(rest)} holds dates"
                                if rest else "there is no other column") + "); name it with --time-col")
    return _Plan(header, index, time_col, list(targets) + list(features), auto_time, by_content)


def _read_records(raw, source: str, gz_name: bool, targets, features, time_col, id_col, sep, freq, missing,
                  max_bytes, future=NO_FUTURE) -> SeriesSet:
    """The careful path: Python's csv module, one record at a time, every value checked as text."""
    where = _Where(source, id_col)
    plan, header_raw, guesses, fields, lines = _careful_fields(raw, source, gz_name, where, sep, max_bytes, targets,
                                                               features, time_col, id_col, guess_ids=True)
    time_col, columns = plan.time_col, plan.columns
    times, kind = _parse_times(fields[0], lines, time_col, where, plan.hint)
    if freq is not None and kind == "integer":
        raise FreqNotApplicable(f"--freq {freq!r} does not apply: the time column {time_col!r} holds integers "
                         "(steps or years); leave --freq out")
    if id_col is not None:
        ids, codes = _series_codes(fields[1], lines, id_col, where)
    else:
        ids = ("",)
        codes = np.zeros(len(times), dtype=np.int64)
    first_value = 2 if id_col is not None else 1
    semicolon_hint = sep != ";" and ";" in ",".join(header_raw)
    values = np.empty((len(times), len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        values[:, j] = _parse_numbers(fields[first_value + j], lines, col, where, semicolon_hint)
    id_guess = {c: fields[first_value + len(columns) + j] for j, c in enumerate(guesses)}
    del fields
    return _assemble(source, where, plan, id_col, len(targets), ids, codes, times, kind, values, lines, freq,
                     missing, id_guess, future)


def _careful_fields(raw, source: str, gz_name: bool, where: _Where, sep: str, max_bytes: int, targets, features,
                    time_col, id_col, guess_ids: bool) -> tuple[_Plan, list[str], list[str], list[tuple], np.ndarray]:
    """(plan, raw header, id guesses, fields, lines) of the careful path: the header checked and
    the time column chosen, then for every data record the fields read (time, id, plan.columns,
    then the columns that may be a forgotten --id-col, when guess_ids) and the line it starts on."""
    text, gz = _text_stream(raw, source, gz_name, max_bytes, sep)
    records = _Records(text, where, sep, gz)
    header_raw = records.read_header()
    sample_lines: list[int] = []
    sample: list[list[str]] = []

    def read_sample() -> list[list[str]]:
        records.read(list, sample_lines, sample, limit=SAMPLE_ROWS)
        return sample

    plan = _plan(header_raw, records.header_line, where, sep, targets, features, time_col, id_col, read_sample)
    guesses = _id_candidates(plan, sample or read_sample()) if guess_ids and id_col is None else []
    need = [plan.index[plan.time_col]] + ([plan.index[id_col]] if id_col is not None else [])
    need += [plan.index[c] for c in plan.columns] + [plan.index[c] for c in guesses]
    pick = operator.itemgetter(*need)
    lines_list = sample_lines
    picked = [pick(row) for row in sample]
    sample.clear()
    records.read(pick, lines_list, picked)
    if not picked:
        raise DataError(f"{where.file}: a header (line {records.header_line}) but no data rows; "
                        "add one row per time step")
    fields = list(zip(*picked, strict=True))
    del picked
    lines = np.asarray(lines_list, dtype=np.int64)
    del lines_list
    return plan, header_raw, guesses, fields, lines


def _series_codes(raw_ids: Sequence[str], lines: np.ndarray, id_col: str, where: _Where) -> tuple[tuple[str, ...], np.ndarray]:
    """(ids sorted as strings, each row's index into them) from the id fields, kept verbatim:
    forecasts must join back on the file's own ids. An empty or blank id is a DataError."""
    raw_ids = list(raw_ids)
    for i, s in enumerate(raw_ids):
        if not s.strip():
            raise DataError(f"{where.at(int(lines[i]), id_col)}: empty series id; every row needs one")
    first_codes, uniques = pd.factorize(np.array(raw_ids, dtype=object), sort=False)
    order = sorted(range(len(uniques)), key=lambda k: uniques[k])  # ids sort as strings
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return tuple(str(uniques[k]) for k in order), rank[first_codes]


def _id_candidates(plan: _Plan, rows: list[list[str]], limit: int = 2) -> list[str]:
    """Columns that may be a forgotten --id-col: not asked for, and text that repeats in the
    first rows. Only the careful path reads them (every error message comes from it)."""
    out = []
    for h in plan.header:
        if not h or h == plan.time_col or h in plan.columns:
            continue
        vals = [r[plan.index[h]].strip() for r in rows]
        if vals and all(vals) and len(set(vals)) < len(vals) and not all(_NUMBER.fullmatch(v) for v in vals):
            out.append(h)
            if len(out) == limit:
                break
    return out


def _likely_id_col(id_guess: dict[str, Sequence[str]], times: np.ndarray) -> tuple[str, int] | None:
    """(column, number of series) of the first candidate that splits the rows (file order) into
    at least two series, each of two rows or more, with no time twice in one series: a panel
    read without --id-col."""
    for name, vals in id_guess.items():
        codes, uniques = pd.factorize(np.asarray([v.strip() for v in vals], dtype=object))
        if not 2 <= len(uniques) <= len(times) // 2 or (np.bincount(codes) < 2).any():
            continue
        order = np.lexsort((times, codes))
        c, t = codes[order], times[order]
        if not ((np.diff(c) != 0) | (np.diff(t) != 0)).all():
            continue
        return name, len(uniques)
    return None


def _panel_error(message: str, id_guess: dict[str, Sequence[str]] | None, times: np.ndarray) -> DataError | None:
    """message + '; this looks like several series ... pass --id-col NAME', or None when no column
    fits. Its for_model (predict, evaluate: no --id-col there) says to retrain with it instead."""
    found = _likely_id_col(id_guess, times) if id_guess else None
    if found is None:
        return None
    name, n = found
    looks = f"{message}; this looks like several series in one file ({name!r} has {n} values, each with one row per time)"
    error = DataError(f"{looks}: pass --id-col {name}")
    error.for_model = f"{looks}, but the model was trained on one series: retrain it with --id-col {name}"
    return error


def _assemble(source: str, where: _Where, plan: _Plan, id_col: str | None, n_targets: int, ids: tuple[str, ...],
              codes: np.ndarray, times: np.ndarray, kind: str, values: np.ndarray, lines: np.ndarray,
              freq: str | None, missing: str, id_guess: dict[str, Sequence[str]] | None = None,
              future: tuple[int, str] = NO_FUTURE) -> SeriesSet:
    """Both paths end here with the parsed rows in file order: the missing-value policy, sorting,
    duplicate times, future rows, frequency and gaps, interpolation. id_guess: text columns (file
    order) that may be a forgotten --id-col, named in the message when the times fail as one
    series. future: (how many of the last columns are future features, future_rows)."""
    time_col, columns = plan.time_col, plan.columns
    n_future, future_rows = future
    file_times = times
    if missing == "refuse" and future_rows == "no":  # else after the split: future rows' empty cells are not missing
        _refuse_missing(values, lines, times, kind, columns, lambda i, codes=codes: ids[codes[i]], where)

    dc, dt = np.diff(codes), np.diff(times)
    if not ((dc > 0) | ((dc == 0) & (dt >= 0))).all():  # already in (id, time) order: lexsort is the identity
        order = np.lexsort((times, codes))
        times, codes, lines, values = times[order], codes[order], lines[order], values[order]
        del order
        dc, dt = np.diff(codes), np.diff(times)
    same = (dt == 0) & (dc == 0)
    if same.any():
        k = int(np.flatnonzero(same)[0])
        sid = ids[codes[k]]
        a, b = sorted((int(lines[k]), int(lines[k + 1])))
        duplicate = f"{where.at(b, time_col)}: time {_fmt_time(times[k], kind)}{where.series(sid)} also appears on line {a}"
        panel = _panel_error(duplicate, id_guess, file_times)
        if panel is not None:  # not a bad row: a panel read as one series
            raise panel
        raise DataError(f"{duplicate}; keep one row per time"
                        f"{' and series' if id_col is not None else ''}{plan.chosen if plan.auto_time else ''}")
    starts = np.concatenate([[0], np.flatnonzero(dc) + 1, [len(times)]]).astype(np.int64)
    del dc, dt, same, codes
    future_set = None
    if future_rows != "no":
        values, times, lines, starts, future_set = _split_future(source, values, times, lines, starts, ids, kind,
                                                                 columns, n_targets, n_future, future_rows, where)
        if missing == "refuse":
            _refuse_missing(values, lines, times, kind, columns,
                            lambda i: ids[int(np.searchsorted(starts, i, side="right")) - 1], where)

    notes: list[str] = []
    try:
        step, out_freq = _frequency(times, starts, ids, kind, freq, lines, time_col, where, notes)
    except DataError as e:  # off the grid, or steps that disagree: a panel without --id-col, perhaps
        panel = _panel_error(str(e), id_guess, file_times)
        if panel is None:
            raise
        raise panel from None
    del file_times
    _fill_missing(values, times, starts, ids, columns, lines, kind, where, notes)
    values = np.ascontiguousarray(values)
    return SeriesSet(source=source, time_col=time_col,
                     id_col=id_col, columns=tuple(columns), n_targets=n_targets, ids=ids, starts=starts,
                     values=values, times=np.ascontiguousarray(times), time_kind=kind, step=int(step),
                     freq=out_freq, warnings=tuple(notes), future=future_set)


def _refuse_missing(values, lines, times, kind, columns, series_of: Callable[[int], str], where: _Where) -> None:
    """--missing refuse: the first missing value in the file (the lowest line) is a DataError."""
    nan_rows, nan_cols = np.nonzero(np.isnan(values))
    if len(nan_rows):
        k = int(np.argmin(lines[nan_rows]))
        i, j = int(nan_rows[k]), int(nan_cols[k])
        raise DataError(f"{where.at(int(lines[i]), columns[j])}: missing value{where.series(series_of(i))} at "
                        f"{_fmt_time(times[i], kind)}; fill it in, or use --missing interpolate")


def _split_future(source, values, times, lines, starts, ids, kind, columns, n_targets, n_future, future_rows,
                  where: _Where):
    """(values, times, lines, starts, FutureRows) of sorted rows whose trailing target-empty rows
    (every target missing) are taken out of each series as its future rows ('split'), or refused
    ('refuse': the model reads no future features). Past features may be empty there, the
    future features (the last n_future columns) may not; a series with no target value at all is
    a DataError either way."""
    n_rows = _rows_after_last_value(~np.isnan(values[:, :n_targets]).all(axis=1), starts)
    if (n_rows < 0).any():
        s = int(np.flatnonzero(n_rows < 0)[0])
        i = int(starts[s])
        subject = f"series {ids[s]!r} has" if where.id_col is not None else "the data has"
        raise DataError(f"{where.at(int(lines[i]))}: {subject} no observed value (every row from "
                        f"{_fmt_time(times[i], kind)} on has {_target_names(columns, n_targets)} empty); give "
                        "the series its observed values, or drop it")
    if future_rows == "refuse":
        if n_rows.any():
            s = int(np.flatnonzero(n_rows)[0])
            i = int(starts[s + 1] - n_rows[s])
            k = int(n_rows[s])
            subject = f"series {ids[s]!r} has" if where.id_col is not None else "the data has"
            others = int((n_rows > 0).sum()) - 1
            more = f" (and {others} more series)" if others else ""
            raise DataError(f"{where.at(int(lines[i]))}: {subject} {k} row{'s' if k > 1 else ''} after its last "
                            f"value (from {_fmt_time(times[i], kind)}) with {_target_names(columns, n_targets)} "
                            f"empty{more}: future rows, but this model reads no future features; drop those rows "
                            "(or retrain with --future-features)")
        return values, times, lines, starts, None
    future_starts = np.concatenate([[0], np.cumsum(n_rows)]).astype(np.int64)
    future = (np.repeat(starts[1:] - n_rows - future_starts[:-1], n_rows)  # each series' first future row
              + np.arange(future_starts[-1], dtype=np.int64))  # row indices, in order
    future_values = values[future, values.shape[1] - n_future:]
    future_lines, future_times = lines[future].astype(np.int64), times[future]
    empty = np.isnan(future_values)
    if empty.any():
        rows, cols = np.nonzero(empty)
        k = int(np.argmin(future_lines[rows]))
        r, j = int(rows[k]), int(cols[k])
        s = int(np.searchsorted(future_starts, r, side="right") - 1)
        name = columns[len(columns) - n_future + j]
        raise DataError(f"{where.at(int(future_lines[r]), name)}: empty in a future row{where.series(ids[s])} "
                        f"(at {_fmt_time(future_times[r], kind)}, after the last value of "
                        f"{_target_names(columns, n_targets)}); future rows need every future feature: fill it in")
    rows = FutureRows(source=source, ids=ids, starts=future_starts, times=np.ascontiguousarray(future_times),
                      values=np.ascontiguousarray(future_values), lines=future_lines)
    if not n_rows.any():
        return values, times, lines, starts, rows
    keep = np.ones(len(times), dtype=bool)
    keep[future] = False
    starts = np.concatenate([[0], np.cumsum(np.diff(starts) - n_rows)]).astype(np.int64)
    return values[keep], times[keep], lines[keep], starts, rows


def _rows_after_last_value(has_value: np.ndarray, starts: np.ndarray, walk: int = 64) -> np.ndarray:
    """Per series, how many rows follow its last row with a target value (-1: it has none). Series
    are walked back from their ends `walk` rows at most, which settles the usual few future rows
    without an index of all rows; the rest from the positions of every row with a value."""
    firsts, lasts = starts[:-1], starts[1:] - 1
    out = np.zeros(len(lasts), dtype=np.int64)
    active = np.flatnonzero(~has_value[lasts])
    for _ in range(walk):
        if not len(active):
            return out
        out[active] += 1
        pos = lasts[active] - out[active]
        before = pos < firsts[active]
        out[active[before]] = -1
        active, pos = active[~before], pos[~before]
        active = active[~has_value[pos]]
    observed = np.flatnonzero(has_value)
    if not len(observed):
        out[active] = -1
        return out
    before_end = np.searchsorted(observed, lasts[active] + 1)  # rows with a value before each series' end
    none = before_end == np.searchsorted(observed, firsts[active])
    out[active] = np.where(none, -1, lasts[active] - observed[np.maximum(before_end - 1, 0)])
    return out


def _target_names(columns, n_targets: int) -> str:
    """'the target' column named, or 'every target' (several) for messages about empty targets."""
    if n_targets == 1:
        return f"the target {columns[0]!r}"
    return f"every target ({_listed(columns[:n_targets])})"


# ----------------------------------------------------------------------------------------------
# the fast path: plain CSV read in blocks of lines, split, checked and converted with array
# operations. It takes only what it can read exactly as the careful path does and raises
# _Unusual for anything else (quotes inside fields, ragged or odd lines, a bad value, any error), and
# the careful path then reads the input from the start. So both give identical SeriesSets and
# every error message comes from the careful path.

FAST_BLOCK = 1 << 22  # bytes of text read and converted at a time
FAST_MAX_FIELD = 64  # bytes; a longer field in a column we read goes to the careful path
FAST_MAX_LINE = 1 << 26  # bytes; a longer line goes to the careful path
# The fast path's memory at its peak (the end of _assemble), measured with getrusage on 200 MB
# files of tiny rows (sorted and reversed; one series and panels; all-distinct and repeated
# times) and rounded up: per row, the _Rows arrays (4 + 4 + 8 per value + the line's 4 or 8) at
# their capacity plus what _assemble adds (int64 times, codes, diffs, masks, the sort's order
# and copies); per distinct time or id text, its str, dict entry and code in _Distinct and the
# copies _parse_times makes; per byte of a block, the block's own arrays.
FAST_ASSEMBLE_ROW_BYTES = 56  # + 8 per value column
FAST_DISTINCT_BYTES = 176  # + the text's length
FAST_BLOCK_WORK = 12  # times the block's length
TAPE_MEMORY_BYTES = 1 << 26  # stdin kept in memory for a replay; the rest goes to a temporary file
_SPACE = (9, 10, 11, 12, 13, 32)  # what `\s` matches under re.ASCII


class _Unusual(Exception):
    """The fast path declines the input; the careful path reads it."""


_FAST_GIVES_UP = (_Unusual, DataError, UsageError, UnicodeDecodeError, EOFError, zlib.error, OSError, csv.Error)


class _Tape(io.RawIOBase):
    """Passes stdin through and keeps every byte, so that the careful path can read it again from
    the first one (rewind). The first TAPE_MEMORY_BYTES are kept in memory, the rest in an
    anonymous temporary file (made in a private directory, never named there once open): a 2 GB
    stdin costs disk space, not 2 GB of memory, and is read back a buffer at a time."""

    def __init__(self, inner, in_memory: int | None = None):
        self._inner = inner
        self._in_memory = TAPE_MEMORY_BYTES if in_memory is None else in_memory
        self._kept: io.BytesIO | None = io.BytesIO()
        self._file = None  # the temporary file, once the tape outgrew memory
        self._replay = None  # after rewind: what was kept, read before the rest of stdin
        self.size = 0

    @property
    def memory_bytes(self) -> int:
        """What the tape holds in memory."""
        return self.size if self._file is None and self._kept is not None else 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._replay is not None:
            n = self._replay.readinto(b)
            if n:
                return n
            self._replay.close()
            self._replay = None
        data = self._inner.read(len(b))
        if not data:
            return 0
        if self._kept is not None or self._file is not None:
            self._keep(data)
        b[: len(data)] = data
        return len(data)

    def _keep(self, data: bytes) -> None:
        try:
            if self._file is None and self.size + len(data) > self._in_memory:
                self._file = _anonymous_file()
                with self._kept.getbuffer() as kept:
                    self._file.write(kept)
                self._kept = None
            (self._kept if self._file is None else self._file).write(data)
        except OSError as e:  # not a reason to give up the fast path: the replay would be short
            raise WriteError(f"<stdin>: cannot keep a copy of stdin beyond {_fmt_bytes(self._in_memory)} in a "
                             f"temporary file in {shown(tempfile.gettempdir())} ({e.strerror or e}); free space "
                             "there, point TMPDIR at a folder with room, or give the CSV as a file, not '-'") from None
        self.size += len(data)

    def rewind(self) -> _Tape:
        """Read from the first byte again: what was kept, then the rest of stdin (not kept)."""
        replay = self._kept if self._file is None else self._file
        replay.seek(0)
        self._replay, self._kept, self._file = replay, None, None
        return self

    def close(self) -> None:
        for f in (self._file, self._replay):
            if f is not None:
                f.close()
        self._kept = self._file = self._replay = None
        super().close()


def _anonymous_file():
    """A temporary file only this process can reach: created in a private (0700) directory that
    is removed at once (TemporaryFile itself is already unlinked, or was never named)."""
    private = tempfile.mkdtemp(prefix="lstm-stdin-")
    try:
        return tempfile.TemporaryFile(dir=private)
    finally:
        os.rmdir(private)


def _number_automaton() -> tuple[np.ndarray, np.ndarray]:
    """The DFA of _NUMBER over bytes: table (states x 256) and the accepting states. Byte 0 is
    the padding of a fixed-width field and keeps the state (the text holds no NUL bytes)."""
    START, SIGN, INT, FRAC, POINT, E, ESIGN, EXP, TRAIL, DEAD = range(10)
    table = np.full((10, 256), DEAD, dtype=np.uint8)
    table[:, 0] = np.arange(10)
    digits = np.arange(ord("0"), ord("9") + 1)
    for state, byte, to in ((START, _SPACE, START), (START, b"+-", SIGN), (START, digits, INT),
                            (START, b".", POINT), (SIGN, digits, INT), (SIGN, b".", POINT),
                            (INT, digits, INT), (INT, b".", FRAC), (INT, b"eE", E), (INT, _SPACE, TRAIL),
                            (FRAC, digits, FRAC), (FRAC, b"eE", E), (FRAC, _SPACE, TRAIL),
                            (POINT, digits, FRAC), (E, b"+-", ESIGN), (E, digits, EXP), (ESIGN, digits, EXP),
                            (EXP, digits, EXP), (EXP, _SPACE, TRAIL), (TRAIL, _SPACE, TRAIL)):
        table[state, np.asarray(list(byte), dtype=np.intp)] = to
    accept = np.zeros(10, dtype=bool)
    accept[[INT, FRAC, EXP, TRAIL]] = True
    return table, accept


_NUMBER_TABLE, _NUMBER_ACCEPT = _number_automaton()


def _blocks(stream, max_bytes: int):
    """Blocks of whole lines (each ending in b'\\n'; one is added after a last line without it),
    the first one after a UTF-8 BOM."""
    carry = b""
    total = 0
    first = True
    while True:
        chunk = stream.read(FAST_BLOCK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise _Unusual("over the size limit")
        data = carry + chunk if carry else chunk
        if first:
            if len(data) < 16 and total < 16:
                carry = data
                continue
            for magic, _, _ in _MAGIC:
                if data.startswith(magic):
                    raise _Unusual("not text")
            if data.startswith(codecs.BOM_UTF8):
                data = data[3:]
            first = False
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > FAST_MAX_LINE:
                raise _Unusual("a very long line")
            carry = data
            continue
        carry = data[cut + 1 :]
        yield data[: cut + 1]
    if first and carry:  # a file shorter than 16 bytes
        for magic, _, _ in _MAGIC:
            if carry.startswith(magic):
                raise _Unusual("not text")
        if carry.startswith(codecs.BOM_UTF8):
            carry = carry[3:]
    if carry:
        yield carry + b"\n"


def _fixed_width(arr: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The fields arr[start:start + length] as rows of a (n, W) uint8 array padded with NUL bytes,
    W a multiple of 8 (so rows view as uint64 words)."""
    longest = int(length.max()) if len(length) else 0
    if longest > FAST_MAX_FIELD:
        raise _Unusual("a long field")
    width = max(8, -(-longest // 8) * 8)
    out = sliding_window_view(arr, width)[start]  # whole rows at a time (arr ends in padding)
    out *= np.arange(width) < length[:, None]  # NUL after each field
    return out


def _factorize_rows(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, first): codes number the distinct rows of mat in order of first appearance;
    first[u] is the first row with code u."""
    words = mat.view(np.uint64)
    codes, _ = pd.factorize(words[:, 0])
    for w in range(1, words.shape[1]):
        more, uniques = pd.factorize(words[:, w])
        codes, _ = pd.factorize(codes * len(uniques) + more)  # exact: both factors are below 2**31
    top = np.maximum.accumulate(codes)
    first = np.flatnonzero(np.diff(top, prepend=-1))
    return codes, first


class _Distinct:
    """Distinct field strings of one column over all blocks, numbered in order of first appearance."""

    def __init__(self):
        self.table: dict[str, int] = {}
        self.text_bytes = 0  # of the distinct strings, for the memory estimate

    def codes(self, mat: np.ndarray, length: np.ndarray) -> np.ndarray:
        local, first = _factorize_rows(mat)
        table = self.table
        before = len(table)
        glob = np.array([table.setdefault(bytes(mat[i, : length[i]]).decode("utf-8"), len(table))
                         for i in first.tolist()], dtype=np.int32)
        if len(table) > before:  # the new ones, at the mean length of the block's distinct texts
            self.text_bytes += int((len(table) - before) * length[first].mean()) + 1
        return glob[local]


def _fast_numbers(mat: np.ndarray, length: np.ndarray) -> np.ndarray:
    """float64 values of fixed-width fields: what _parse_numbers gives (NaN for missing tokens),
    or _Unusual for anything else (not a number, too large for a float64)."""
    table, state = _NUMBER_TABLE, np.zeros(len(mat), dtype=np.uint8)
    for k in range(int(length.max()) if len(length) else 0):
        state = table[state, mat[:, k]]
    ok = _NUMBER_ACCEPT[state]
    out = np.empty(len(mat), dtype=np.float64)
    width = mat.shape[1]
    if ok.all():
        out[:] = mat.view(f"S{width}").ravel().astype(np.float64)
    else:
        for i in np.flatnonzero(~ok).tolist():
            if bytes(mat[i, : length[i]]).decode("utf-8").strip() not in MISSING_TOKENS:
                raise _Unusual("not a number")
        out[~ok] = np.nan
        out[ok] = mat[ok].view(f"S{width}").ravel().astype(np.float64)
    if np.isinf(out).any():
        raise _Unusual("too large")
    return out


class _Rows:
    """The fast path's rows, written in place into arrays that grow when needed, rather than
    parts joined at the end. Capacity that is never written to costs no memory."""

    def __init__(self, n_values: int, line_dtype):
        self.n = 0
        self.time = np.empty(0, dtype=np.int32)  # codes of the time text (_Distinct)
        self.id = np.empty(0, dtype=np.int32)  # codes of the id text, then of the sorted ids
        self.values = np.empty((0, n_values), dtype=np.float64)
        self.lines = np.empty(0, dtype=line_dtype)
        self.row_bytes = 4 + 4 + 8 * n_values + self.lines.itemsize  # of the four arrays

    def capacity_for(self, k: int, expect: int | None) -> int:
        """The rows the arrays hold after take(k, expect)."""
        need = self.n + k
        return max(need, expect or 0, 2 * len(self.lines)) if need > len(self.lines) else len(self.lines)

    def take(self, k: int, expect: int | None) -> slice:
        """The slice of the next k rows; `expect`: the expected number of rows in all, if known."""
        need = self.n + k
        if need > len(self.lines):
            cap = self.capacity_for(k, expect)
            for name in ("time", "id", "values", "lines"):
                old = getattr(self, name)
                new = np.empty((cap, *old.shape[1:]), dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        at = slice(self.n, need)
        self.n = need
        return at


def _whole_quoted_fields(arr: np.ndarray, seps: np.ndarray, sep_code: int) -> bool:
    """True when every quote in the block opens or closes a whole field whose text holds no
    quote, separator or line end ("text" between separators): the csv module reads such a field
    as its text. Else _Unusual (doubled quotes, quoted separators or line ends, stray quotes)."""
    q = np.flatnonzero(arr == 34)
    if len(q) % 2:
        raise _Unusual("an odd number of quotes")
    opens, closes = q[0::2], q[1::2]
    before = arr[np.maximum(opens - 1, 0)]
    after = arr[closes + 1]
    lines = np.flatnonzero(arr == 10)
    if not (((opens == 0) | (before == sep_code) | (before == 10)).all()
            and ((after == sep_code) | (after == 10) | (after == 13)).all()
            and (np.searchsorted(seps, opens) == np.searchsorted(seps, closes)).all()
            and (np.searchsorted(lines, opens) == np.searchsorted(lines, closes)).all()):
        raise _Unusual("quotes inside fields")
    return True


def _plain_size(raw) -> int | None:
    """The size of a regular file behind raw, else None."""
    try:
        st = os.fstat(raw.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class _FastMemory:
    """The fast path's memory check, made before each block's rows are stored: what the rows so
    far and those still to come will hold at the reader's peak (FAST_ASSEMBLE_ROW_BYTES and the
    figures beside it), against the memory free when reading began. With the file's size known
    the rest is projected from the block, so a file that cannot fit is refused on its first
    block; else (gzip, stdin) on the block that would pass the budget: a gzip bomb of tiny rows
    stops there with the figure, not in the OOM killer or a MemoryError gigabytes later."""

    def __init__(self, budget: int | None, where: _Where, rows: _Rows, texts: tuple[_Distinct, ...],
                 tape: _Tape | None):
        self.budget, self.where, self.rows, self.texts, self.tape = budget, where, rows, texts, tape
        self.per_row = FAST_ASSEMBLE_ROW_BYTES + 8 * rows.values.shape[1]
        self._seen = (0, 0)  # distinct texts and their bytes at the last check

    def check(self, k: int, expect: int | None, block_bytes: int, more: float) -> None:
        """k rows of a block of block_bytes are to be stored; `more`: the rows still to come per
        row of this block (0 when the size is unknown)."""
        distinct = sum(len(t.table) for t in self.texts)
        text = sum(t.text_bytes for t in self.texts)
        new_distinct, new_text = distinct - self._seen[0], text - self._seen[1]
        self._seen = (distinct, text)
        if self.budget is None:
            return
        rows = self.rows
        n = rows.n + k + int(k * more)
        need = (max(rows.capacity_for(k, expect), n) * rows.row_bytes + n * self.per_row
                + int(distinct + new_distinct * more) * FAST_DISTINCT_BYTES + int(text + new_text * more)
                + FAST_BLOCK_WORK * block_bytes + (self.tape.memory_bytes if self.tape is not None else 0))
        if need < PARSE_CHECK_BYTES or need <= self.budget:  # the careful path's floor: small reads pass
            return
        what = f"loading about {n:,} rows" if more else f"loading the first {n:,} rows"
        raise memory.refusal(need, self.budget, f"{self.where.file}: {what}",
                             "split the file, use a machine with more memory (or, for predict and evaluate, "
                             "--engine dask), or lower --max-input-bytes")


def _read_fast(raw, source: str, gz_name: bool, targets, features, time_col, id_col, sep, freq, missing,
               max_bytes, future=NO_FUTURE) -> SeriesSet:
    """The fast path (see above): plain or gzip UTF-8 text whose quotes (if any) enclose whole
    fields, LF or CRLF line ends, the header on line 1, every other line either blank or with as
    many fields as the header, fields up to FAST_MAX_FIELD bytes in the columns read."""
    sep_byte = sep.encode("utf-8")
    if len(sep_byte) != 1:
        raise _Unusual("a multi-byte separator")
    sep_code = sep_byte[0]
    where = _Where(source, id_col)
    budget = memory.available_bytes()  # before reading, as the careful path's _Checked
    head = _read_up_to(raw, 2)
    stream = _Prefixed(head, raw)
    if head == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=stream, mode="rb")
    elif gz_name:
        raise _Unusual("named .gz")
    blocks = _blocks(stream, max_bytes)
    block = next(blocks, b"")
    nl = block.find(b"\n")
    header_text = block[:nl].decode("utf-8").removesuffix("\r")
    if not header_text.strip() or "\r" in header_text or "\x00" in header_text:
        raise _Unusual("header")
    if '"' in header_text:  # one physical line: a quoted line end leaves a quote open (csv.Error)
        header_raw = next(csv.reader([header_text], delimiter=sep, quotechar='"', doublequote=True, strict=True))
    else:
        header_raw = header_text.split(sep)
    if len(header_raw) > MAX_COLUMNS:
        raise _Unusual("a very wide header")  # the careful path refuses it with the message

    def sample() -> list[list[str]]:
        rows = []
        for line in block[nl + 1 :].decode("utf-8").split("\n"):
            line = line.removesuffix("\r")
            fields = line.split(sep)
            if len(fields) == len(header_raw) and '"' not in line:
                rows.append(fields)
            elif line.strip() or "\r" in line:
                raise _Unusual("sample")
            if len(rows) == SAMPLE_ROWS:
                return rows
        if next(blocks, None) is not None:
            raise _Unusual("a short first block")  # never: a block holds far more than SAMPLE_ROWS lines
        return rows

    plan = _plan(header_raw, 1, where, sep, targets, features, time_col, id_col, sample)
    n_fields = len(plan.header)
    need = [plan.index[plan.time_col]] + ([plan.index[id_col]] if id_col is not None else [])
    need += [plan.index[c] for c in plan.columns]
    time_text, id_text = _Distinct(), _Distinct()
    rows = _Rows(len(plan.columns), np.int32 if max_bytes < 2**31 - 2 else np.int64)  # a line takes a byte
    size = None if isinstance(stream, gzip.GzipFile) else _plain_size(raw)  # to size the arrays at once
    fast_memory = _FastMemory(budget, where, rows, (time_text, id_text), raw if isinstance(raw, _Tape) else None)
    done = len(block)  # bytes of text in the blocks read so far
    block = block[nl + 1 :]
    line_base = 2  # the line number of the block's first line
    while block is not None:
        if not block:  # the first block held only the header
            block = next(blocks, None)
            continue
        if b"\x00" in block:
            raise _Unusual("NUL bytes")
        if not block.isascii():
            block.decode("utf-8")
        arr = np.frombuffer(block + bytes(FAST_MAX_FIELD + 8), dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)
        starts = np.concatenate([[0], ends[:-1] + 1])
        n_cr = block.count(b"\r")
        if n_cr:
            if n_cr != block.count(b"\r\n"):
                raise _Unusual("a lone CR")
            ends = ends - (arr[np.maximum(ends - 1, 0)] == 13)
        seps = np.flatnonzero(arr == sep_code)
        quoted = b'"' in block and _whole_quoted_fields(arr, seps, sep_code)
        per_line = np.diff(np.searchsorted(seps, np.concatenate([[0], ends])))
        good = per_line == n_fields - 1
        if not good.all():
            for k in np.flatnonzero(~good).tolist():  # blank lines are skipped; others are ragged
                if per_line[k] or block[starts[k] : ends[k]].decode("utf-8").strip():
                    raise _Unusual("a ragged line")
            starts, ends = starts[good], ends[good]
        if len(starts):
            seps = seps.reshape(len(starts), n_fields - 1)
            k = len(starts)
            cols = []
            for j in need:
                a = starts if j == 0 else seps[:, j - 1] + 1
                b = ends if j == n_fields - 1 else seps[:, j]
                if quoted:  # "text" -> text
                    q = arr[a] == 34
                    a, b = a + q, b - q
                length = b - a
                cols.append((_fixed_width(arr, a, length), length))
            time_codes = time_text.codes(*cols[0])
            id_codes = id_text.codes(*cols[1]) if id_col is not None else None
            more = 0.0 if size is None else max(0, size - done) / len(block)  # rows to come per row here
            expect = None if size is None else rows.n + k + int(1.1 * k * more) + 1
            fast_memory.check(k, expect, len(block), more)
            at = rows.take(k, expect)
            rows.time[at] = time_codes
            if id_codes is not None:
                rows.id[at] = id_codes
            del time_codes, id_codes
            first_value = len(need) - len(plan.columns)
            for c in range(len(plan.columns)):
                rows.values[at, c] = _fast_numbers(*cols[first_value + c])
            rows.lines[at] = line_base + np.flatnonzero(good)
            del cols
        line_base += len(good)
        del arr, seps, starts, ends, good, per_line
        block = next(blocks, None)
        done += len(block or b"")
    n = rows.n
    if not n:
        raise _Unusual("no data rows")
    stamps, kind = _parse_times(list(time_text.table), np.zeros(len(time_text.table), np.int64), plan.time_col,
                                where, plan.hint)
    if freq is not None and kind == "integer":
        raise _Unusual("--freq with integer times")
    times = stamps[rows.time[:n]]
    rows.time = None
    if id_col is not None:
        verbatim = list(id_text.table)  # distinct field texts, kept as they are (as the careful path does)
        if not all(s.strip() for s in verbatim):
            raise _Unusual("an empty id")
        ids = tuple(sorted(verbatim))
        rank = {s: k for k, s in enumerate(ids)}
        codes = rows.id[:n]
        np.take(np.array([rank[s] for s in verbatim], dtype=np.int32), codes, out=codes)
    else:
        ids = ("",)
        codes = np.zeros(n, dtype=np.int32)
    values, lines = rows.values[:n], rows.lines[:n]
    del rows
    return _assemble(source, where, plan, id_col, len(targets), ids, codes, times, kind, values, lines, freq,
                     missing, None, future)


def _frequency(times, starts, ids, kind, freq, lines, time_col, where: _Where, notes: list[str]):
    """(step, freq) per the module rules; appends the gap warnings to notes."""
    spans = _Spans(times, starts)
    inner = _inner_pairs(len(times), starts)
    constant = _constant_step(times, inner)  # the one difference within every series, if only one
    d = np.diff(times) if constant is None else None  # made when needed: regular data needs none
    _check_no_wrap(times, inner, constant, d, ids, starts, kind, where)
    pooled = constant if constant is not None else _mode(d[inner]) if inner.any() else 0

    if freq is None:
        if kind == "datetime":
            memo: dict[bytes, str | None] = {}  # panels often share their stamps
            per_freq = []
            for s, t in enumerate(spans):
                if len(t) >= 3:
                    key = t.tobytes()
                    if key not in memo:
                        memo[key] = _infer_freq(pd.DatetimeIndex(t)) or _calendar_freq_with_gaps(t)
                    per_freq.append((s, memo[key]))
            freq = _agree(per_freq, spans, ids, where)
        if freq is None:
            per_step = [] if constant is not None else [(s, _mode(np.diff(t))) for s, t in enumerate(spans)
                                                         if len(t) > 1]  # one step everywhere: they agree
            for s, st in per_step[1:]:
                if st != per_step[0][1]:
                    s0, st0 = per_step[0]
                    raise DataError(f"{where.file}: series {ids[s0]!r} steps by {_fmt_duration(st0, kind)} but "
                                    f"series {ids[s]!r} by {_fmt_duration(st, kind)}; give every series the "
                                    "same step, or split the file")
            step = pooled if inner.any() else (1 if kind == "integer" else 0)
            if constant is None:  # else every difference within a series is the step: no notes
                _gap_notes(times, d > step, d < step, inner, starts, step, None, ids, kind, where, notes, d)
            return step, None

    offset = _offset(freq)
    fixed = _fixed_ns(offset)
    if fixed:
        if constant is not None and constant % fixed == 0:  # every time is its series' first + k * constant
            bad = ()
        else:
            rel = np.remainder(times, fixed)  # each row's phase on the grid, then its offset from its series'
            np.subtract(rel, np.repeat(rel[starts[:-1]], np.diff(starts)), out=rel)  # (times - start would
            np.remainder(rel, fixed, out=rel)  # overflow for series longer than 292 years of ns)
            bad = np.flatnonzero(rel)
            del rel
        if len(bad):
            i = int(bad[0])
            s = int(np.searchsorted(starts, i, side="right") - 1)
            _off_grid(i, times, spans[s], s, lines, time_col, freq, ids, kind, where)
        step = fixed
        if constant is not None and constant <= step:
            return step, freq  # no gaps, and no differences shorter than the step: no notes
        d = np.diff(times) if d is None else d
        gap, short = d > step, np.zeros(len(d), dtype=bool)
    else:
        odd = np.zeros(len(inner), dtype=bool)  # pairs within a series that are not one step apart
        chunk = 1 << 20  # a chunk of stamps at a time: no array of all the next stamps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for a in range(0, len(inner), chunk):
                b = min(a + chunk, len(inner))
                odd[a:b] = inner[a:b] & (times[a + 1 : b + 1] != (pd.DatetimeIndex(times[a:b]) + offset).asi8)
        # a fast pass: series that start on the offset and step one step at a time need no grid
        first_codes, firsts = pd.factorize(times[starts[:-1]])
        checked = ~np.array([offset.is_on_offset(pd.Timestamp(int(t))) for t in firsts], dtype=bool)[first_codes]
        checked[np.searchsorted(starts, np.flatnonzero(odd), side="right") - 1] = True
        for s in np.flatnonzero(checked).tolist():
            a, t = int(starts[s]), spans[s]
            ok = _on_grid(t, freq)
            if not ok.all():
                _off_grid(a + int(np.flatnonzero(~ok)[0]), times, t, s, lines, time_col, freq, ids, kind, where)
        if inner.any():
            step = pooled
        else:
            t0 = pd.Timestamp(int(times[0]))
            step = int((t0 + offset).value - t0.value)
        gap, short = odd, np.zeros(len(inner), dtype=bool)
    _gap_notes(times, gap, short, inner, starts, step, freq, ids, kind, where, notes, d)
    return step, freq


def _constant_step(times: np.ndarray, inner: np.ndarray, chunk: int = 1 << 20) -> int | None:
    """The difference between consecutive times when it is the same for every pair within a
    series (`inner`), else None; computed a chunk at a time, without an array of all differences."""
    if not inner.any():
        return None
    k = int(np.argmax(inner))
    first = (times[k + 1 : k + 2] - times[k : k + 1])[0]  # an array difference: wraps without a warning
    for a in range(0, len(inner), chunk):
        b = min(a + chunk, len(inner))
        if not ((times[a + 1 : b + 1] - times[a:b] == first) | ~inner[a:b]).all():
            return None
    return int(first)


def _check_no_wrap(times, inner, constant, d, ids, starts, kind, where: _Where) -> None:
    """Refuse consecutive times of one series more than int64 apart: their difference wraps to a
    negative step (times are sorted and distinct, so a true difference is positive)."""
    if constant is not None:
        bad = np.flatnonzero(inner)[:1] if constant < 0 else ()
    else:
        bad = np.flatnonzero(inner & (d < 0))[:1] if d is not None and len(d) else ()
    if len(bad):
        k = int(bad[0])
        s = int(np.searchsorted(starts, k, side="right") - 1)
        fix = "count from a nearer origin (smaller numbers)" if kind == "integer" else "fix or drop the distant row"
        raise DataError(f"{where.file}: times {_fmt_time(times[k], kind)} and {_fmt_time(times[k + 1], kind)}"
                        f"{where.series(ids[s])} are too far apart (their difference does not fit in 64 bits); "
                        f"{fix}")


class _Spans:
    """The times of each series, as views made when asked for."""

    def __init__(self, times: np.ndarray, starts: np.ndarray):
        self.times, self.starts = times, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, s: int) -> np.ndarray:
        return self.times[self.starts[s] : self.starts[s + 1]]

    def __iter__(self):
        return (self[s] for s in range(len(self)))


def _agree(per_freq, spans, ids, where: _Where) -> str | None:
    """The one frequency of all series (None when they are all irregular with one fixed step);
    a DataError naming two series when they disagree."""
    named = [(s, f) for s, f in per_freq if f is not None]
    if not named:
        return None
    s0, f0 = named[0]
    if len(named) == len(per_freq):
        for s, f in named[1:]:
            if f != f0 and not _same_grid(f, f0):
                raise DataError(f"{where.file}: series {ids[s0]!r} has frequency {f0} but series "
                                f"{ids[s]!r} has {f}; give every series the same frequency, or split the file")
        return f0
    # some series are irregular: only fixed-length frequencies can still agree, through `step`
    s_none = next(s for s, f in per_freq if f is None)
    step = _mode(np.diff(spans[s_none]))
    for s, f in named:
        if _fixed_ns(_offset(f)) != step:
            raise DataError(f"{where.file}: series {ids[s]!r} has frequency {f} but series {ids[s_none]!r} "
                            f"has no regular frequency (most common step {_fmt_duration(step, 'datetime')}); "
                            "give every series the same frequency, or split the file")
    return None


def _off_grid(i, times, t, s, lines, time_col, freq, ids, kind, where: _Where):
    """Raise for row i (sorted order), which is off the grid of series s (stamps t)."""
    start = "" if times[i] == t[0] else f" that starts at {_fmt_time(t[0], kind)}"  # not 'X ... starts at X'
    what = f"{where.at(int(lines[i]), time_col)}: time {_fmt_time(times[i], kind)}{where.series(ids[s])}"
    error = DataError(f"{what} is not on the {freq} grid{start}; fix the time or pass the right --freq")
    # read_like_model says it this way, for a model's frequency: no --freq can be passed there
    error.for_model = (f"{what} is not on the {freq} grid{start}; give data at the model's frequency "
                       f"({freq}), or retrain on this data")
    raise error


def check_model_step(series: SeriesSet, time_kind: str, freq: str | None, step: int) -> None:
    """Refuse DATA read for a model (time_kind, freq, step of its header) whose step is another: on
    the grid of a 30-minute model, hourly data is all 'gaps', and the forecast would go on at 30
    minutes. The most common difference between consecutive times of a series must be one model step
    (for a calendar freq: such a pair must be one offset apart). Integer times for a model of dates
    (or the reverse) are refused first: every reader of DATA for a model (predict, evaluate, validate
    --model, the dask partitions, a warm start) comes through here."""
    where = _Where(series.source, series.id_col)
    if series.time_kind != time_kind:
        wanted = "dates" if time_kind == "datetime" else "integer times"
        raise DataError(f"{where.file}: column {_q(series.time_col)} holds {series.time_kind} times, but the "
                        f"model was trained on {time_kind} times; give {wanted}, or retrain on this data")
    mismatch = _step_mismatch(series, freq, step)
    if mismatch is None:
        return
    s, theirs, _ = mismatch
    ours = freq or _fmt_duration(step, time_kind)
    raise DataError(f"{where.file}: times step by {theirs}{where.series(series.ids[s])} (the most common "
                    f"difference), but the model's step is {ours}; give data at the model's step, or retrain "
                    "on this data")


def _phase_modulus(freq: str, anchor: int) -> int | None:
    """The period whose remainder is a grid's phase: the step of a clock-aligned fixed freq (30min,
    h), a day for calendar grids that keep one time of day (D, W-SUN, MS, QS...), else None (48h,
    business hours: no phase a time of day can name)."""
    offset = _offset(freq)
    fixed = _fixed_ns(offset)
    if fixed:
        return fixed if DAY_NS % fixed == 0 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            grid = pd.date_range(pd.Timestamp(int(anchor)), periods=4, freq=offset).asi8
        except (OverflowError, ValueError):
            grid = pd.date_range(end=pd.Timestamp(int(anchor)), periods=4, freq=offset).asi8
    return DAY_NS if len(set((grid % DAY_NS).tolist())) == 1 else None


def check_model_phase(series: SeriesSet, freq: str | None, trained_ids, trained_last) -> None:
    """Refuse DATA on the model's frequency but another phase: month starts at 12:00 for a model of
    midnight month starts (pandas' MS accepts any time of day on day 1), or a 30-minute model's
    :15/:45. The forecast would go on at DATA's phase, which the model never saw. A series' phase
    is its first time's (the reader put every later time on the grid from it); a series the model
    knows must have its own, a new one a phase of some series the model was trained on."""
    if freq is None or series.time_kind != "datetime" or len(trained_last) == 0:
        return
    last = np.asarray(trained_last, dtype=np.int64)
    mod = _phase_modulus(freq, int(last[0]))
    if mod is None:
        return
    known = {sid: int(t) for sid, t in zip(trained_ids, last, strict=True)}
    phases = set(np.remainder(last, mod).tolist())
    firsts = series.times[series.starts[:-1]]
    for s, (sid, first) in enumerate(zip(series.ids, np.remainder(firsts, mod).tolist(), strict=True)):
        anchor = known.get(sid)
        if (first % mod == anchor % mod) if anchor is not None else first in phases:
            continue
        anchor = anchor if anchor is not None else int(last[0])
        where = _Where(series.source, series.id_col)
        raise DataError(f"{where.at(None, series.time_col)}: time {_fmt_time(firsts[s], 'datetime')}"
                        f"{where.series(sid)} is not on the model's {freq} grid, which runs through "
                        f"{_fmt_time(anchor, 'datetime')} (the end of its training data); give times on that "
                        "grid (the same time of day), or retrain on this data")


def check_given_freq(series: SeriesSet, given: str | None) -> None:
    """Refuse a --freq (train, validate) one step of which is not DATA's most common step, the rule
    check_model_step applies for a model: `--freq ms` on monthly data read every month as a 'gap' of
    milliseconds, trained, and predict then refused the data. A few missing steps stay gaps."""
    if given is None:
        return
    mismatch = _step_mismatch(series, series.freq, series.step)
    if mismatch is None:
        return
    s, theirs, found = mismatch
    where = _Where(series.source, series.id_col)
    fix = f"pass --freq {found} or leave --freq out" if found else "leave --freq out to take the data's step"
    raise DataError(f"{where.file}: times step by {theirs}{where.series(series.ids[s])} (the most common "
                    f"difference), not by one step of --freq {_q(given)}; {fix}")


def _step_mismatch(series: SeriesSet, freq: str | None, step: int) -> tuple[int, str, str | None] | None:
    """None when the most common difference between consecutive times of a series is one step
    (freq's, else `step`), or no series has two rows; else (series index, that difference as text,
    the alias pandas infers for that series or None)."""
    times, starts, kind = series.times, series.starts, series.time_kind
    inner = _inner_pairs(len(times), starts)
    if not inner.any():
        return None
    constant = _constant_step(times, inner)
    if constant is not None:
        common, k = constant, int(np.argmax(inner))
    else:
        d = np.diff(times)
        common = _mode(d[inner])
        k = int(np.flatnonzero(inner & (d == common))[0])
        del d
    offset = _offset(freq) if freq is not None else None
    fixed = _fixed_ns(offset) if offset is not None else None
    if offset is None or fixed:
        if common == (fixed or step):
            return None
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if (pd.DatetimeIndex(times[k : k + 1]) + offset).asi8[0] == times[k + 1]:
                return None
    s = int(np.searchsorted(starts, k, side="right") - 1)
    t = times[starts[s] : starts[s + 1]]
    found = (_infer_freq(pd.DatetimeIndex(t)) or _calendar_freq_with_gaps(t)) if kind == "datetime" and len(t) >= 3 \
        else None
    return s, found or _fmt_duration(common, kind), found


def _inner_pairs(n: int, starts: np.ndarray) -> np.ndarray:
    """Mask of the pairs (i, i + 1) of n sorted rows that lie within one series."""
    inner = np.ones(max(0, n - 1), dtype=bool)
    inner[starts[1:-1] - 1] = False
    return inner


def _gap_notes(times, gap, short, inner, starts, step, freq, ids, kind, where: _Where, notes: list[str],
               d: np.ndarray | None = None) -> None:
    gap = gap & inner
    n_gaps, n_short = int(gap.sum()), int((short & inner).sum())
    if n_gaps:
        d = np.diff(times) if d is None else d
        pos = np.flatnonzero(gap)
        k = int(pos[np.argmax(d[pos])])
        s = int(np.searchsorted(starts, k, side="right") - 1)
        unit = f"{freq} steps" if freq is not None else f"steps of {_fmt_duration(step, kind)}"
        notes.append(f"{where.file}: {n_gaps} gap{'s' if n_gaps > 1 else ''} in time (largest "
                     f"{_fmt_duration(int(d[k]), kind)}{where.series(ids[s])}, from {_fmt_time(times[k], kind)} "
                     f"to {_fmt_time(times[k + 1], kind)}); rows are treated as consecutive {unit}")
    if n_short:
        notes.append(f"{where.file}: {n_short} time difference{'s are' if n_short > 1 else ' is'} shorter "
                     f"than the usual step of {_fmt_duration(step, kind)}; rows are treated as consecutive steps")


def _fill_missing(values, times, starts, ids, columns, lines, kind, where: _Where, notes: list[str]) -> None:
    """Interpolate interior gaps in place, or raise when the policy refuses (module docstring)."""
    nan = np.isnan(values)
    if not nan.any():
        return
    filled = []
    for s in range(len(ids)):
        a, b = int(starts[s]), int(starts[s + 1])
        n = b - a
        for j, col in enumerate(columns):
            m = nan[a:b, j]
            if not m.any():
                continue
            pos = np.flatnonzero(m)
            sid = ids[s]
            if m[0] or m[-1]:
                i = a if m[0] else b - 1
                edge = "first" if m[0] else "last"
                raise DataError(f"{where.at(int(lines[i]), col)}: missing value in the {edge} row"
                                f"{where.series(sid)} ({_fmt_time(times[i], kind)}); interpolation needs "
                                "values on both sides: fill it in or drop the row")
            runs = np.split(pos, np.flatnonzero(np.diff(pos) > 1) + 1)
            longest = max(runs, key=len)
            if len(longest) > MAX_INTERPOLATED_RUN:
                i = a + int(longest[0])
                raise DataError(f"{where.at(int(lines[i]), col)}: {len(longest)} consecutive missing values"
                                f"{where.series(sid)} from {_fmt_time(times[i], kind)} to "
                                f"{_fmt_time(times[a + int(longest[-1])], kind)}; interpolation fills at most "
                                f"{MAX_INTERPOLATED_RUN} in a row: fill them in")
            if len(pos) > MAX_MISSING_FRACTION * n:
                i = a + int(pos[0])
                raise DataError(f"{where.at(int(lines[i]), col)}: {len(pos)} of {n} values missing"
                                f"{where.series(sid)}, more than {MAX_MISSING_FRACTION:.0%}; interpolation "
                                "would invent too much: fill them in or drop the column")
            seg = values[a:b, j]
            known = np.flatnonzero(~m)
            seg[pos] = np.interp(pos, known, seg[known])
            filled += [(sid, col, int(times[a + p])) for p in pos]
    shown = ", ".join(f"{col!r}{where.series(sid)} at {_fmt_time(t, kind)}" for sid, col, t in filled[:3])
    more = f" and {len(filled) - 3} more" if len(filled) > 3 else ""
    notes.append(f"{where.file}: interpolated {len(filled)} missing value{'s' if len(filled) > 1 else ''} "
                 f"linearly: {shown}{more}")


# ----------------------------------------------------------------------------------------------
# future rows: the future features' values for the forecast steps


def read_future_file(path: str, *, future_features: Sequence[str], time_col: str | None, id_col: str | None,
                     sep: str = ",", freq: str | None = None, max_bytes: int = 2_000_000_000,
                     time_kind: str | None = None, stdin=None) -> FutureRows:
    """The rows of a --future FILE: its time column, id column (when id_col) and future features,
    any number of rows per series (history rows too: future_block takes those after DATA's last
    value), sorted by (id, time). Read by the careful path (such files are small) with its rules
    and messages; every cell must be filled. time_kind (DATA's, or the model's), and freq (dates
    only), refuse times of the other kind."""
    future_features = _names(future_features, "future feature")
    if not future_features:
        raise UsageError("--future gives values of future features, but none are named (--future-features)")
    time_col = _names((time_col,), "time column")[0] if time_col is not None else None
    id_col = _names((id_col,), "id column")[0] if id_col is not None else None
    _check_roles([(f, "--future-features") for f in future_features]
                 + [(c, r) for c, r in ((time_col, "--time-col"), (id_col, "--id-col")) if c is not None])
    _check_freq(freq)
    with _open_input(path, max_bytes, stdin) as (raw, source, gz_name), _long_fields():
        where = _Where(source, id_col)
        plan, header_raw, _, fields, lines = _careful_fields(raw, source, gz_name, where, sep, max_bytes, (),
                                                             future_features, time_col, id_col, guess_ids=False)
    times, kind = _parse_times(fields[0], lines, plan.time_col, where, plan.hint)
    expected = time_kind or ("datetime" if freq is not None else None)
    if expected is not None and kind != expected:
        wanted = "dates" if expected == "datetime" else "integers"
        raise DataError(f"{where.at(int(lines[0]), plan.time_col)}: the times are {kind} values, but DATA's are "
                        f"{wanted}; write them as DATA does")
    if id_col is not None:
        ids, codes = _series_codes(fields[1], lines, id_col, where)
    else:
        ids, codes = ("",), np.zeros(len(times), dtype=np.int64)
    first_value = 2 if id_col is not None else 1
    semicolon_hint = sep != ";" and ";" in ",".join(header_raw)
    values = np.empty((len(times), len(future_features)), dtype=np.float64)
    for j, col in enumerate(future_features):
        values[:, j] = _parse_numbers(fields[first_value + j], lines, col, where, semicolon_hint)
    del fields
    empty_rows, empty_cols = np.nonzero(np.isnan(values))
    if len(empty_rows):  # rows are in file order: the first is the lowest line
        i, j = int(empty_rows[0]), int(empty_cols[0])
        raise DataError(f"{where.at(int(lines[i]), future_features[j])}: empty{where.series(ids[codes[i]])} at "
                        f"{_fmt_time(times[i], kind)}; every row of the future file needs every future feature: "
                        "fill it in or drop the row")
    order = np.lexsort((times, codes))
    times, codes, lines, values = times[order], codes[order], lines[order], values[order]
    same = (np.diff(times) == 0) & (np.diff(codes) == 0)
    if same.any():
        k = int(np.flatnonzero(same)[0])
        a, b = sorted((int(lines[k]), int(lines[k + 1])))
        raise DataError(f"{where.at(b, plan.time_col)}: time {_fmt_time(times[k], kind)}{where.series(ids[codes[k]])} "
                        f"also appears on line {a}; keep one row per time{' and series' if id_col else ''}")
    starts = np.searchsorted(codes, np.arange(len(ids) + 1)).astype(np.int64)
    return FutureRows(source=source, ids=ids, starts=starts, times=np.ascontiguousarray(times, dtype=np.int64),
                      values=np.ascontiguousarray(values), lines=lines.astype(np.int64))


def future_block(series: SeriesSet, future: FutureRows, n_steps: int, freq: str | None, *,
                 why: str = "the forecast's steps", rows: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(times (S, n_steps) int64, values (S, n_steps, F) float64): for every series of `series`,
    its first n_steps future rows after its last observed time (rows at or before it are
    ignored: a --future file may hold history). They must continue the series: with a freq,
    exactly the stamps future_times gives; without one, each a positive multiple of series.step
    after the one before (business-hours data jumps overnight). Else a DataError naming the
    future rows' file, the series, what is needed and what was found; `why` says why n_steps, `rows`
    what a future row holds (both for that message)."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    file, data = _name(future.source), _name(series.source)
    kind, step = series.time_kind, int(series.step)
    known = {sid: s for s, sid in enumerate(series.ids)}
    stray = [sid for sid in future.ids if sid not in known]
    if stray:
        count = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise DataError(f"--future {file}: series {stray[0]!r}{count} is not in {data}; drop its rows, or give "
                        "its history in DATA")
    last = series.times[series.starts[1:] - 1]
    in_series = np.array([known[sid] for sid in future.ids], dtype=np.int64)  # future segment -> series
    lengths = np.diff(future.starts)
    segment = np.repeat(np.arange(len(future.ids)), lengths)
    history = np.bincount(segment, weights=future.times <= last[in_series[segment]],  # a prefix: times are sorted
                          minlength=len(future.ids)).astype(np.int64)
    first = np.zeros(len(series.ids), dtype=np.int64)  # each series' first future row after its last value
    have = np.zeros(len(series.ids), dtype=np.int64)
    first[in_series] = future.starts[:-1] + history
    have[in_series] = lengths - history
    short = np.flatnonzero(have < n_steps)
    if len(short):
        _too_few_future_rows(series, future, int(short[0]), int(have[short[0]]), n_steps, freq, why, rows)
    rows = first[:, None] + np.arange(n_steps)
    times = future.times[rows]
    if freq is not None:
        expected = _forecast_grid(series, last, n_steps, freq)
        wrong = times != expected
    else:  # whole steps of the series' grid (business hours jump overnight), and no jump longer
        # than the longest of the series' own history (a hole in the future rows is not a step)
        diffs = np.diff(times, prepend=last[:, None], axis=1)
        wrong = (diffs <= 0) | (diffs % step != 0) if step > 0 else diffs <= 0
        wrong |= diffs > _longest_steps(series)[:, None]
    if wrong.any():
        s, k = (int(x) for x in np.argwhere(wrong)[0])
        found = (f"{_Where(future.source, None).at(int(future.lines[rows[s, k]]))}: time "
                 f"{_fmt_time(times[s, k], kind)}{_Where(series.source, series.id_col).series(series.ids[s])} "
                 "does not continue the series: ")
        if freq is not None:
            raise DataError(f"{found}step {k + 1} after its last value ({_fmt_time(last[s], kind)}) is "
                            f"{_fmt_time(expected[s, k], kind)} ({freq}); give one row per step")
        before = last[s] if k == 0 else times[s, k - 1]
        if diffs[s, k] > 0 and diffs[s, k] % step == 0:  # whole steps, but more than one at a time
            longest = int(_longest_steps(series)[s])
            why = (f"one step of {_fmt_duration(step, kind)} is {_fmt_time(before + step, kind)}" if longest == step
                   else f"longer than any step of the series' history ({_fmt_duration(longest, kind)})")
            raise DataError(f"{found}it is {_fmt_duration(int(diffs[s, k]), kind)} after {_fmt_time(before, kind)}, "
                            f"{why}; give one row per step")
        raise DataError(f"{found}it is {_fmt_duration(int(diffs[s, k]), kind)} after {_fmt_time(before, kind)}, not "
                        f"a whole number of steps of {_fmt_duration(step, kind)}; give one row per step")
    return times, future.values[rows]


def _longest_steps(series: SeriesSet) -> np.ndarray:
    """(S,) the longest time difference within each series' history (its step for a single row)."""
    d = np.append(np.diff(series.times), 0)  # d[i]: row i to row i + 1
    d[series.starts[1:] - 1] = 0  # the last row of a series has no next row in it
    return np.maximum(np.maximum.reduceat(d, series.starts[:-1]), int(series.step)).astype(np.int64)


def _forecast_grid(series: SeriesSet, last: np.ndarray, n: int, freq: str) -> np.ndarray:
    """(S, n) int64: future_times after each series' last time; a fixed-length freq at once, a
    calendar one per distinct last time (panels mostly end together)."""
    fixed = _fixed_ns(_offset(freq)) if series.time_kind == "datetime" else None
    if fixed and (len(last) == 0 or int(last.max()) + n * fixed <= pd.Timestamp.max.value):
        return last[:, None] + fixed * np.arange(1, n + 1, dtype=np.int64)
    ends, first_with, end_of = np.unique(last, return_index=True, return_inverse=True)
    if len(ends) == 0:
        return np.zeros((0, n), dtype=np.int64)
    return np.stack([_forecast_stamps(series, int(s), n, freq) for s in first_with])[end_of]


def _forecast_stamps(series: SeriesSet, s: int, n: int, freq: str | None) -> np.ndarray:
    """future_times after series s's last time, its DataError (past 2262) naming DATA and the series."""
    where = _Where(series.source, series.id_col)
    try:
        return future_times(int(series.times[series.starts[s + 1] - 1]), series.step, freq, series.time_kind, n)
    except DataError as e:
        raise DataError(f"{where.file}{where.series(series.ids[s])}: {e}") from None


def _too_few_future_rows(series: SeriesSet, future: FutureRows, s: int, have: int, n: int, freq: str | None,
                         why: str = "the forecast's steps", rows: str = ""):
    kind = series.time_kind
    last = int(series.times[series.starts[s + 1] - 1])
    subject = f"series {series.ids[s]!r} has" if series.id_col is not None else "the data has"
    found = f"{have} future row{'' if have == 1 else 's'}" if have else "no future rows"
    if freq is not None or kind == "integer":
        end = format_times(_forecast_stamps(series, s, n, freq)[-1:], kind, freq)[0]
        fix = f"add rows up to {end}"
    else:
        fix = f"add {n - have} more row{'' if n - have == 1 else 's'}, one per step"
    raise DataError(f"{_name(future.source)}: {subject} {found} after its last value "
                    f"({format_times(np.array([last]), kind, freq)[0]}), need {n} ({why}): {fix}{rows}")


# ----------------------------------------------------------------------------------------------
# forecasts out


def future_times(last: int, step: int, freq: str | None, time_kind: str, n: int) -> np.ndarray:
    """The n stamps after `last` (int64): calendar steps of freq when it is a calendar alias (month
    starts stay month starts), else last + k * step."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    k = np.arange(1, n + 1, dtype=np.int64)
    if time_kind == "integer":
        if step <= 0:
            raise ValueError(f"step must be positive, got {step}")
        if int(last) + int(step) * n > np.iinfo(np.int64).max:  # Python ints: int64 would wrap silently
            raise DataError(f"forecast times after {int(last)} (steps of {int(step)}) pass the 64-bit integer "
                            f"limit {np.iinfo(np.int64).max}; forecast fewer steps or count time from a "
                            "nearer origin")
        return np.int64(last) + k * np.int64(step)
    if time_kind != "datetime":
        raise ValueError(f"time_kind must be 'datetime' or 'integer', got {time_kind!r}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start = pd.Timestamp(int(last))
    try:
        if freq is not None:
            offset = _offset(freq)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stamps = pd.date_range(start, periods=n + 1, freq=offset)
            stamps = stamps[1:] if stamps[0] == start else stamps[:n]
            return stamps.as_unit("ns").asi8.astype(np.int64)
        if step <= 0:
            raise ValueError(f"step must be positive when freq is None, got {step}")
        end = int(last) + int(step) * n
        pd.Timestamp(end)  # raises beyond year 2262
        return np.int64(last) + k * np.int64(step)
    except (OverflowError, pd.errors.OutOfBoundsDatetime):
        raise DataError(f"forecast times after {_fmt_time(last, 'datetime')} pass the last supported date "
                        f"{pd.Timestamp.max:%Y-%m-%d}; forecast fewer steps") from None


def check_forecast_fits(series: SeriesSet, horizon: int, freq: str | None = None) -> None:
    """Refuse DATA whose next `horizon` steps pass 2262 or the int64 limit, with predict's message:
    train (and validate) said yes to data whose model could then never forecast it. The latest
    series end is the one that binds; freq is the model's when it has one."""
    if horizon < 1 or len(series.ids) == 0:
        return
    last = series.times[series.starts[1:] - 1]
    k = int(np.argmax(last))
    try:
        future_times(int(last[k]), series.step, freq or series.freq, series.time_kind, horizon)
    except DataError as e:
        where = _Where(series.source, series.id_col)
        raise DataError(f"{where.file}{where.series(series.ids[k])}: {e}") from None


def format_times(times: np.ndarray, time_kind: str, freq: str | None) -> list[str]:
    """Stamps as text: integers as integers; dates as YYYY-MM-DD when every stamp is midnight (and
    the freq is not sub-daily), else 'YYYY-MM-DD HH:MM:SS' (with fractions when there are any)."""
    times = np.asarray(times, dtype=np.int64)
    if time_kind == "integer":
        return [str(int(t)) for t in times]
    idx = pd.DatetimeIndex(times)
    sub_daily = False
    if freq is not None:
        fixed = _fixed_ns(_offset(freq))
        sub_daily = fixed is not None and fixed < DAY_NS
    if not sub_daily and (times % DAY_NS == 0).all():
        return list(idx.strftime("%Y-%m-%d"))
    if (times % 10**9 == 0).all():
        return list(idx.strftime("%Y-%m-%d %H:%M:%S"))
    return [t.isoformat(sep=" ") for t in idx]


_FORMULA_START = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")  # and their fullwidth forms, which Excel also takes


def _first_visible(text: str) -> str:
    """The first character that is neither white space (any: tab, no-break, ideographic) nor an
    invisible format character (zero-width space, BOM): what a spreadsheet parses the cell by."""
    for c in text:
        if not (c.isspace() or unicodedata.category(c) == "Cf"):
            return c
    return ""


def formula_like(text: str) -> bool:
    """Whether a spreadsheet would run this text cell as a formula (CSV injection): it starts,
    after any white space or invisible characters, with = + - @ (or their fullwidth forms), or
    with a tab or line end. Plain numbers such as -1.5 or +3 are numbers, not formulas."""
    if not text or not (text[0] in "\t\r\n" or _first_visible(text) in _FORMULA_START):
        return False
    return _NUMBER.fullmatch(text) is None


def spreadsheet_safe(text: str) -> str:
    """text, with a single quote before it when it is formula_like: spreadsheets show the text
    and never run it (OWASP's advice for CSV injection). --excel-safe only: the ids change."""
    return "'" + text if formula_like(text) else text


def _cell(v, excel_safe: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "NaN"
        return repr(v)
    return spreadsheet_safe(str(v)) if excel_safe else str(v)


def write_csv_text(rows: dict[str, list], columns: list[str], excel_safe: bool = False) -> str:
    """CSV text of rows[column] lists in `columns` order: '\\n' line ends, floats in repr precision
    (round-trip exact), NaN as 'NaN' (a missing token), fields quoted only when they need it.
    Text is written verbatim (ids must join back) unless excel_safe: then the header and text
    cells that a spreadsheet would run as formulas get a leading ' (spreadsheet_safe); numbers,
    negative ones too, never change."""
    missing = [c for c in columns if c not in rows]
    if missing:
        raise ValueError(f"no values for columns {missing}")
    lengths = {len(rows[c]) for c in columns}
    if len(lengths) > 1:
        raise ValueError(f"columns differ in length: { {c: len(rows[c]) for c in columns} }")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    _write_rows(out, writer, [[spreadsheet_safe(c) for c in columns] if excel_safe else list(columns)])
    n = lengths.pop() if lengths else 0
    for a in range(0, n, 1 << 16):  # cells as text a chunk of rows at a time
        _write_rows(out, writer, [_cells(rows[c][a : a + (1 << 16)], excel_safe) for c in columns], by_column=True)
    return out.getvalue()


def _write_rows(out: io.StringIO, writer, cells: list[list[str]], by_column: bool = False) -> None:
    """Write rows (or columns, by_column) of text cells. csv.writer quotes a field holding a
    carriage return only when its line terminator holds one (Python 3.11), so an id with a
    '\\r' would end the line early: rows of such a chunk are written with '\\r\\n', then the '\\r'
    of the terminator is dropped."""
    rows = zip(*cells, strict=True) if by_column else cells
    if not any("\r" in "".join(part) for part in cells):
        writer.writerows(rows)
        return
    line = io.StringIO()
    quoting_cr = csv.writer(line, lineterminator="\r\n")
    for row in rows:
        line.seek(0)
        line.truncate()
        quoting_cr.writerow(row)
        out.write(line.getvalue()[:-2] + "\n")


def _cells(values, excel_safe: bool = False) -> list[str]:
    """[_cell(v, excel_safe) for v in values], a whole column at a time when it holds only str,
    only int or only float values (text: each distinct value checked once)."""
    kinds = set(map(type, values))
    if kinds <= {str}:
        risky = {s: spreadsheet_safe(s) for s in set(values) if formula_like(s)} if excel_safe else None
        return [risky.get(s, s) for s in values] if risky else list(values)
    if kinds == {float}:
        out = list(map(float.__repr__, values))
        return [("NaN" if c == "nan" else c) for c in out] if "nan" in out else out
    if kinds == {int}:
        return list(map(int.__repr__, values))
    return [_cell(v, excel_safe) for v in values]


_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)
_EXACT_TENS = 10.0 ** np.arange(23)  # 10**0 .. 10**22, all exact in float64


def _round_significant(x: np.ndarray, digits: int, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(r, exact) for finite nonzero x: where exact, r is the float64 nearest to x rounded to
    `digits` significant digits (an integer below 10**15 and a power of ten up to 10**22 are
    exact, so one division rounds once and repr(r) shows those digits); elsewhere r is unusable:
    the scale is not exact, or (with `ties`) x scaled lies so near a half that the rounding of the
    scaling itself could decide which way it goes."""
    shift = digits - 1 - np.floor(np.log10(np.abs(x))).astype(np.int64)  # decimals to keep
    tens = _EXACT_TENS[np.minimum(np.abs(shift), 22)]
    scaled = np.where(shift >= 0, x * tens, x / tens)
    whole = np.round(scaled)
    exact = (np.abs(shift) <= 22) & (digits <= 15)
    if ties:
        exact &= np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) > 1e-15 * np.abs(scaled)
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.where(shift >= 0, whole / tens, whole * tens)
    return r, exact


def output_floats(values: np.ndarray, dtype: str = "float64", precision: int | None = None) -> np.ndarray:
    """Forecasts as the float64 values to print, so that repr (CSV) and json show no digits the
    model does not have: a float32 model's forecasts become the shortest decimal that reads back
    as the same float32 (9.8436 rather than 9.843599151388043), float64 models keep every digit,
    and `precision` rounds to that many significant digits instead. Values a float32 cannot hold
    (beyond 3.4e38, below its normal range) keep their float64 value. A few array passes for
    1.2M values; a Python loop only for magnitudes beyond exact scaling (below 1e-14, above 1e22)."""
    x = np.asarray(values, dtype=np.float64)
    if precision is None and dtype != "float32":
        return x
    out = x.copy()
    flat = out.reshape(-1)
    usable = np.isfinite(x) & (x != 0)
    if precision is None:
        usable &= (np.abs(x) >= _F32_TINY) & (np.abs(x) <= _F32_MAX)
    idx = np.flatnonzero(usable.ravel())
    if precision is not None:
        pending = x.ravel()[idx]
        r, exact = _round_significant(pending, precision)
        flat[idx[exact]] = r[exact]
        idx, pending = idx[~exact], pending[~exact]
        flat[idx] = [float(f"{v:.{precision}g}") for v in pending.tolist()]
        return out
    x32 = x.ravel()[idx].astype(np.float32)

    def reads_back(at: np.ndarray, digits: int) -> np.ndarray:
        """Positions (into idx) whose value rounded to `digits` reads back as its float32; stored."""
        r, exact = _round_significant(x32[at].astype(np.float64), digits, ties=False)
        with np.errstate(over="ignore"):
            ok = exact & (r.astype(np.float32) == x32[at])
        flat[idx[at[ok]]] = r[ok]
        return ok

    # Reading back is monotone in the digits, and most float32 values need 7 or 8 (of at most 9):
    # try 7 on all, then fewer on those that took it and more on the rest.
    todo = np.arange(len(idx))
    ok = reads_back(todo, 7)
    shorter, longer = todo[ok], todo[~ok]
    for digits in (6, 5, 4, 3, 2, 1):
        shorter = shorter[reads_back(shorter, digits)]
    for digits in (8, 9):
        longer = longer[~reads_back(longer, digits)]
    flat[idx[longer]] = [float(str(v)) for v in x32[longer]]  # beyond exact scaling: numpy's shortest text
    return out
