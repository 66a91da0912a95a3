"""frame.py: CSV -> SeriesSet on the nine real data sets, every bad fixture in tests/data/bad,
property tests over harmless rewrites of a file, and the forecast-side helpers.

The oracle for the happy paths is an independent plain pandas read of the same file."""

from __future__ import annotations

import csv
import gzip
import io
import os
import random
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lstm_cli import frame
from lstm_cli.errors import DataError, FreqNotApplicable, InputMissingError, UsageError
from lstm_cli.frame import MISSING_TOKENS, format_times, future_times, read_series, write_csv_text

DATA = Path(__file__).parent / "data"
BAD = DATA / "bad"
DAY = 86_400 * 10**9


def ns(*stamps: str) -> list[int]:
    return [pd.Timestamp(s).value for s in stamps]


def write(path: Path, text: str | bytes) -> str:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def assert_same(a: frame.SeriesSet, b: frame.SeriesSet) -> None:
    assert a.columns == b.columns and a.ids == b.ids and a.time_col == b.time_col
    assert (a.time_kind, a.step, a.freq, a.n_targets) == (b.time_kind, b.step, b.freq, b.n_targets)
    np.testing.assert_array_equal(a.starts, b.starts)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.warnings == tuple(w.replace(b.source, a.source) for w in b.warnings)


# ----------------------------------------------------------------------------------------------
# the nine real data sets

REAL = {  # file: (read_series kwargs, time_col, kind, freq, step, n_series, rows)
    "a10_monthly.csv": ({"targets": ["cost_million_aud"]}, "date", "datetime", "MS", 31 * DAY, 1, 204),
    "ausbeer_quarterly.csv": ({"targets": ["beer_megalitres"]}, "date", "datetime", "QS-JAN", 92 * DAY, 1, 218),
    "gasoline_weekly.csv": ({"targets": ["million_barrels_per_day"]}, "date", "datetime", "W-MON", 7 * DAY,
                            1, 1355),
    "hyndsight_daily.csv": ({"targets": ["pageviews"]}, "date", "datetime", "D", DAY, 1, 365),
    "nile_yearly.csv": ({"targets": ["volume"]}, "year", "integer", None, 1, 1, 100),
    "bank_calls_5min.csv": ({"targets": ["calls"]}, "datetime", "datetime", None, 300 * 10**9, 1, 3380),
    "us_macro_quarterly.csv": ({"targets": ["real_gdp"], "features": ["real_investment", "real_government",
                                                                      "cpi", "tbill_rate"]},
                               "date", "datetime", "QS-JAN", 92 * DAY, 1, 203),
    "departures_monthly_panel.csv": ({"targets": ["departures_thousands"], "id_col": "series_id"},
                                     "date", "datetime", "MS", 31 * DAY, 5, 2490),
    "prison_quarterly_panel.csv": ({"targets": ["prisoners"], "id_col": "series_id"},
                                   "date", "datetime", "QS-MAR", 92 * DAY, 32, 1536),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_data_sets(name):
    kwargs, time_col, kind, freq, step, n_series, rows = REAL[name]
    s = read_series(str(DATA / name), **kwargs)
    assert (s.time_col, s.time_kind, s.freq, s.step, len(s.ids), len(s.times)) == (
        time_col, kind, freq, step, n_series, rows)
    columns = tuple(kwargs["targets"]) + tuple(kwargs.get("features", ()))
    assert s.columns == columns and s.n_targets == len(kwargs["targets"]) and s.id_col == kwargs.get("id_col")
    assert s.values.dtype == np.float64 and s.values.shape == (rows, len(columns)) and s.values.flags.c_contiguous
    assert s.times.dtype == np.int64 and s.starts.dtype == np.int64
    assert s.starts[0] == 0 and s.starts[-1] == rows and np.all(np.diff(s.starts) > 0)
    # oracle: plain pandas, sorted by (id, time)
    df = pd.read_csv(DATA / name, dtype={kwargs.get("id_col", "_"): str})
    id_col = kwargs.get("id_col")
    if kind == "integer":
        df["_t"] = df[time_col].astype(np.int64)
    else:
        df["_t"] = pd.to_datetime(df[time_col]).astype("datetime64[ns]").astype(np.int64)
    df = df.sort_values([id_col, "_t"] if id_col else ["_t"], kind="stable")
    np.testing.assert_array_equal(s.times, df["_t"].to_numpy())
    np.testing.assert_array_equal(s.values, df[list(columns)].to_numpy(dtype=np.float64))
    expect_ids = tuple(sorted(df[id_col].unique())) if id_col else ("",)
    assert s.ids == expect_ids
    for k in range(len(s.ids)):  # each series strictly increasing in time
        assert np.all(np.diff(s.times[s.starts[k]:s.starts[k + 1]]) > 0)
    if name == "bank_calls_5min.csv":  # nights and weekends: 15 + 4 gaps, the largest a weekend
        assert len(s.warnings) == 1
        assert "19 gaps" in s.warnings[0] and "2d 10h" in s.warnings[0] and "2003-07-11 21:00:00" in s.warnings[0]
    else:
        assert s.warnings == ()


def test_real_values_spot_checks():
    a10 = read_series(str(DATA / "a10_monthly.csv"), targets=["cost_million_aud"])
    assert a10.times[0] == ns("1991-07-01")[0] and a10.values[0, 0] == 3.526591
    nile = read_series(str(DATA / "nile_yearly.csv"), targets=["volume"])
    assert nile.times[0] == 1871 and nile.times[-1] == 1970 and nile.values[0, 0] == 1120.0
    dep = read_series(str(DATA / "departures_monthly_panel.csv"), targets=["departures_thousands"],
                      id_col="series_id")
    assert dep.ids == ("permanent", "reslong", "resshort", "vislong", "visshort")
    assert list(np.diff(dep.starts)) == [498] * 5


# ----------------------------------------------------------------------------------------------
# every bad fixture: exception class, a key phrase, one line, names the file

BAD_CASES = [  # (fixture, kwargs beyond targets=['sales'], exception, phrases)
    ("empty.csv", {}, DataError, ["empty"]),
    ("whitespace_only.csv", {}, DataError, ["empty"]),
    ("header_only.csv", {}, DataError, ["no data rows"]),
    ("binary_nul.csv", {}, DataError, ["line 3", "NUL byte", "binary"]),
    ("xlsx_saved_as.csv", {}, DataError, ["ZIP", "xlsx", "export"]),
    ("xls_saved_as.csv", {}, DataError, ["Excel"]),
    ("bzip2_saved_as.csv", {}, DataError, ["bzip2", "gzip"]),
    ("html_page.csv", {}, DataError, ["HTML"]),
    ("json_page.csv", {}, DataError, ["JSON"]),
    ("truncated.csv.gz", {}, DataError, ["truncated gzip"]),
    ("corrupt.csv.gz", {}, DataError, ["corrupt"]),
    ("not_gzip.csv.gz", {}, DataError, ["not gzip"]),
    ("utf16.csv", {}, DataError, ["UTF-16", "UTF-8"]),
    ("latin1.csv", {}, DataError, ["line 3", "not UTF-8"]),
    ("missing_target.csv", {}, DataError, ["'sales' not found", "'date', 'revenue'"]),
    ("missing_target.csv", {"targets": ["Revenue"]}, DataError, ["did you mean 'revenue'"]),
    ("missing_target.csv", {"targets": ["revenue"], "id_col": "store"}, DataError, ["'store' not found"]),
    ("missing_target.csv", {"targets": ["revenue"], "time_col": "when"}, DataError, ["'when' not found"]),
    ("duplicate_columns.csv", {}, DataError, ["duplicate column name 'sales'"]),
    ("ragged_more.csv", {}, DataError, ["line 3", "3 fields", "header (line 1) has 2"]),
    ("ragged_fewer.csv", {}, DataError, ["line 4", "2 fields", "has 3"]),
    ("unclosed_quote.csv", {}, DataError, ["line 3", "never closed"]),
    ("stray_quote.csv", {}, DataError, ["line 3", "quoting"]),
    ("thousands_separator.csv", {}, DataError, ["line 3", "column 'sales'", "'1,234'", "thousands"]),
    ("semicolon_decimal_comma.csv", {}, DataError, ["not found", "--sep ';'"]),
    ("decimal_comma.csv", {"sep": ";"}, DataError, ["line 3", "'12,5'", "decimal comma"]),
    ("unit_in_value.csv", {}, DataError, ["line 4", "column 'sales'", "'12 kWh'", "not a number"]),
    ("na_lowercase.csv", {}, DataError, ["line 3", "'n/a'", "not a number"]),
    ("em_dash.csv", {}, DataError, ["line 3", "'\u2014'", "not a number"]),
    ("infinite.csv", {}, DataError, ["line 3", "'inf'", "infinite"]),
    ("overflow.csv", {}, DataError, ["line 3", "'1e400'", "too large"]),
    ("mixed_formats.csv", {}, DataError, ["line 4", "'03/01/2021'", "time format of line 2"]),
    ("mixed_offsets.csv", {}, DataError, ["line 4", "with and without a UTC offset"]),
    ("unparseable_date.csv", {}, DataError, ["line 2", "'next monday'", "as a date"]),
    ("invalid_date.csv", {}, DataError, ["line 4", "'2021-02-29'", "not a valid date"]),
    ("duplicate_time.csv", {}, DataError, ["line 5", "2021-01-02", "also appears on line 3"]),
    ("duplicate_time_panel.csv", {"id_col": "store"}, DataError, ["line 5", "(series 'b')", "line 3"]),
    ("missing_time_value.csv", {}, DataError, ["line 3", "missing time"]),
    ("empty_id.csv", {"id_col": "store"}, DataError, ["line 3", "column 'store'", "empty series id"]),
    ("missing_first.csv", {}, DataError, ["line 2", "first row"]),
    ("missing_last.csv", {}, DataError, ["line 21", "last row"]),
    ("missing_run.csv", {}, DataError, ["line 5", "4 consecutive missing"]),
    ("missing_many.csv", {}, DataError, ["line 3", "3 of 20", "more than 10%"]),
    ("missing_refused.csv", {"missing": "refuse"}, DataError, ["line 4", "column 'sales'", "missing value"]),
    ("freq_disagree_panel.csv", {"id_col": "store"}, DataError, ["series 'a'", "MS", "series 'b'", "has D"]),
    ("step_disagree_panel.csv", {"id_col": "store"}, DataError, ["series 'a' steps by 1", "series 'b' by 2"]),
    ("no_time_column.csv", {}, DataError, ["no time column", "--time-col"]),
    ("date_out_of_range.csv", {}, DataError, ["line 4", "'2300-01-01'", "outside"]),
    ("ambiguous_dates.csv", {}, DataError, ["line 2", "day/month", "YYYY-MM-DD"]),
    ("off_grid.csv", {"freq": "MS"}, DataError, ["line 3", "2021-01-02", "not on the MS grid"]),
    ("too_big.csv", {"max_bytes": 64}, DataError, ["larger than the limit of 64 bytes"]),
    ("too_big.csv.gz", {"max_bytes": 64}, DataError, ["decompressed", "limit of 64 bytes"]),
    ("nile_like.csv", {"freq": "YS"}, FreqNotApplicable, ["--freq 'YS' does not apply", "integers"]),
    ("off_grid.csv", {"freq": "fortnightly"}, UsageError, ["not a pandas offset alias"]),
    ("off_grid.csv", {"freq": "M"}, UsageError, ["did you mean 'ME'"]),
    ("off_grid.csv", {"missing": "drop"}, UsageError, ["--missing must be one of interpolate, refuse"]),
    ("off_grid.csv", {"sep": ";;"}, UsageError, ["--sep must be a single character"]),
    ("off_grid.csv", {"targets": []}, UsageError, ["at least one target"]),
    ("off_grid.csv", {"features": ["sales"]}, UsageError, ["'sales' is named as --target and as --feature"]),
]


def test_every_bad_fixture_is_in_the_table():
    assert {f.name for f in BAD.iterdir()} == {case[0] for case in BAD_CASES}


@pytest.mark.parametrize("fixture,kwargs,exc,phrases", BAD_CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1])}" if c[1] else c[0] for c in BAD_CASES])
def test_bad_fixture(fixture, kwargs, exc, phrases):
    path = str(BAD / fixture)
    kwargs = {"targets": ["sales"], **kwargs}
    with pytest.raises(exc) as info:
        read_series(path, **kwargs)
    assert type(info.value) is exc
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg and msg.strip() == msg
    assert not msg.startswith("lstm:")
    if not issubclass(exc, UsageError):  # usage errors name the option, data errors the file
        assert msg.startswith(path)
    for phrase in phrases:
        assert phrase in msg, f"{phrase!r} not in {msg!r}"


def test_bad_fixtures_fail_the_same_way_from_stdin():
    for fixture, kwargs, exc, phrases in BAD_CASES:
        if exc is not DataError or fixture in ("not_gzip.csv.gz", "too_big.csv", "empty.csv"):
            continue  # a name is needed to say '.gz'; the size/emptiness checks from stat differ in wording
        stream = io.BytesIO((BAD / fixture).read_bytes())
        with pytest.raises(DataError) as info:
            read_series("-", stdin=stream, **{"targets": ["sales"], **kwargs})
        assert str(info.value).startswith("<stdin>") and phrases[-1] in str(info.value), fixture


# ----------------------------------------------------------------------------------------------
# paths that are not readable files: InputMissingError, quickly


def _raises_quickly(path: str, phrase: str):
    box: dict = {}

    def run():
        try:
            read_series(path, targets=["sales"])
        except Exception as e:  # noqa: BLE001 - the test inspects it
            box["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), f"read_series blocked on {path}"
    e = box.get("e")
    assert isinstance(e, InputMissingError), e
    assert str(e).startswith(path) and phrase in str(e) and "\n" not in str(e)


def test_missing_paths(tmp_path):
    _raises_quickly(str(tmp_path / "nope.csv"), "no such file")
    _raises_quickly(str(tmp_path), "a directory")
    _raises_quickly(str(tmp_path / "nope" / "x.csv"), "no such file")
    os.symlink(tmp_path / "gone.csv", tmp_path / "link.csv")
    _raises_quickly(str(tmp_path / "link.csv"), "broken symbolic link")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_device_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    _raises_quickly(str(fifo), "FIFO")
    if os.path.exists("/dev/null"):
        _raises_quickly("/dev/null", "device")


def test_unreadable_file(tmp_path, monkeypatch):
    p = tmp_path / "secret.csv"
    shutil.copy(BAD / "off_grid.csv", p)

    def denied(*args, **kwargs):  # chmod 0 does not stop root, so fail the open itself
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(frame, "open", denied, raising=False)
    with pytest.raises(InputMissingError, match=r"secret.csv: cannot be opened \(Permission denied\)$"):
        read_series(str(p), targets=["sales"])


# ----------------------------------------------------------------------------------------------
# inputs that must work

A10 = (DATA / "a10_monthly.csv").read_text()


@pytest.fixture(scope="module")
def a10():
    return read_series(str(DATA / "a10_monthly.csv"), targets=["cost_million_aud"])


def _lines():
    header, *rows = A10.strip("\n").split("\n")
    return header, rows


def test_quoted_fields_long_fields_blank_lines_and_no_final_newline(tmp_path, a10):
    header, rows = _lines()
    long = "x" * 200_000  # beyond the csv module's default 131,072-character field limit
    out = ["note," + header]
    for k, r in enumerate(rows):
        note = '"line one\nline two, with ""quotes"""' if k == 3 else (f'"{long}"' if k == 7 else "plain")
        out.append(f"{note},{r}")
    text = "\n\n".join(out[:10]) + "\n" + "\n".join(out[10:]) + "\n\n \n\n"
    s = read_series(write(tmp_path / "q.csv", text), targets=["cost_million_aud"])
    assert_same(s, a10)
    s = read_series(write(tmp_path / "nofinal.csv", A10.rstrip("\n")), targets=["cost_million_aud"])
    assert_same(s, a10)


def test_errors_after_multiline_fields_name_the_editor_line(tmp_path):
    text = 'date,note,sales\n2021-01-01,"a\nb\nc",1\n2021-01-02,x,2\n2021-01-03,"d\ne",oops\n'
    with pytest.raises(DataError, match=r", line 6, column 'sales': 'oops'"):
        read_series(write(tmp_path / "m.csv", text), targets=["sales"])


def test_scientific_notation_signs_spaces_and_extremes(tmp_path):
    text = ("date , sales ,x\n2021-01-01, 1.5e3 ,a\n2021-01-02,-2E-3,b\n2021-01-03,+.5,c\n"
            "2021-01-04,1e300,d\n2021-01-05,1e-300,e\n2021-01-06,7.,f\n")
    s = read_series(write(tmp_path / "sci.csv", text), targets=["sales"])
    assert s.values[:, 0].tolist() == [1500.0, -0.002, 0.5, 1e300, 1e-300, 7.0]


def test_semicolon_files_with_sep(tmp_path, a10):
    text = A10.replace(",", ";")
    assert_same(read_series(write(tmp_path / "semi.csv", text), targets=["cost_million_aud"], sep=";"), a10)
    tabs = A10.replace(",", "\t")
    assert_same(read_series(write(tmp_path / "t.tsv", tabs), targets=["cost_million_aud"], sep="\t"), a10)


def test_gzip_by_magic_and_stdin(tmp_path, a10):
    gz = gzip.compress(A10.encode())
    assert_same(read_series(write(tmp_path / "named.csv", gz), targets=["cost_million_aud"]), a10)
    s = read_series("-", targets=["cost_million_aud"], stdin=io.BytesIO(gz))
    assert s.source == "<stdin>"
    assert_same(s, a10)
    s = read_series("-", targets=["cost_million_aud"], stdin=io.BytesIO(A10.encode()))
    assert_same(s, a10)


def test_stdin_size_limit_is_counted_while_reading():
    with pytest.raises(DataError, match=r"^<stdin>: the input is larger than the limit of 100 bytes"):
        read_series("-", targets=["cost_million_aud"], stdin=io.BytesIO(A10.encode()), max_bytes=100)


def test_old_mac_line_ends(tmp_path, a10):
    assert_same(read_series(write(tmp_path / "cr.csv", A10.replace("\n", "\r")), targets=["cost_million_aud"]), a10)


# ----------------------------------------------------------------------------------------------
# property tests: harmless rewrites give identical arrays

PANEL_ROWS = []
for _sid, _start in (("north", 0), ("south", 2), ("10", 1), ("010", 0)):
    for _m in range(_start, _start + 20):
        _v = "" if (_sid, _m) in {("south", 5), ("north", 4), ("north", 9)} else f"{(_m * 7 + len(_sid)) % 13 + 0.25}"
        PANEL_ROWS.append([f"{2020 + _m // 12}-{_m % 12 + 1:02d}-01", _sid, _v, f"{_m * 1.5e-3:g}", f"x{_m}"])
PANEL_HEADER = ["date", "store", "sales", "price", "comment"]
PANEL_KW = {"targets": ["sales"], "features": ["price"], "id_col": "store"}


def _panel_text(rows, order, bom=False, crlf=False, quote=False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    q = '"{}"'.format if quote else str
    lines = [",".join(q(PANEL_HEADER[i]) for i in order)] + [",".join(q(r[i]) for i in order) for r in rows]
    return (("\ufeff" if bom else "") + nl.join(lines) + nl).encode()


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    p = tmp_path_factory.mktemp("panel") / "panel.csv"
    return read_series(write(p, _panel_text(PANEL_ROWS, range(5))), **PANEL_KW)


def test_panel_reference(panel):
    assert panel.ids == ("010", "10", "north", "south")  # strings: '10' and '010' differ
    assert panel.freq == "MS" and panel.columns == ("sales", "price")
    assert np.isfinite(panel.values).all()
    north = panel.values[panel.starts[2]:panel.starts[3], 0]
    assert north[4] == pytest.approx((north[3] + north[5]) / 2)  # linear between neighbours
    assert len(panel.warnings) == 1 and "interpolated 3 missing values" in panel.warnings[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), bom=st.booleans(), crlf=st.booleans(), gz=st.booleans(),
       blank_tail=st.booleans(), quote=st.booleans())
def test_rewrites_give_identical_arrays(panel, tmp_path, seed, bom, crlf, gz, blank_tail, quote):
    rng = random.Random(seed)
    rows = PANEL_ROWS[:]
    rng.shuffle(rows)
    order = list(range(5))
    rng.shuffle(order)
    data = _panel_text(rows, order, bom, crlf, quote) + (b"\n\n" if blank_tail else b"")
    if gz:
        data = gzip.compress(data)
    path = write(tmp_path / f"p{seed}.csv", data)
    assert_same(read_series(path, **PANEL_KW), panel)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=3, max_size=30))
def test_write_csv_text_round_trips_floats_exactly(tmp_path, values):
    stamps = future_times(ns("2021-12-01")[0], 0, "MS", "datetime", len(values))
    text = write_csv_text({"date": format_times(stamps, "datetime", "MS"), "y": values}, ["date", "y"])
    s = read_series(write(tmp_path / "rt.csv", text), targets=["y"])
    assert s.values[:, 0].tolist() == values
    np.testing.assert_array_equal(s.times, stamps)
    assert s.freq == "MS"


@st.composite
def generated_panels(draw):
    """(rows as lists of strings, header, kwargs, expected dict) for a random regular panel."""
    freq = draw(st.sampled_from(["MS", "QS-JAN", "W-MON", "D", "h", "15min", "integer"]))
    ids = draw(st.lists(st.text(alphabet='ab01 ,"', min_size=1, max_size=4).map(str.strip).filter(bool),
                        min_size=1, max_size=4, unique=True))
    rows, expect = [], []
    for sid in ids:
        n = draw(st.integers(3, 12))
        skip = draw(st.integers(0, 5))
        vals = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
        if freq == "integer":
            stamps = [1990 + skip + k for k in range(n)]
            text = [str(t) for t in stamps]
        else:
            index = pd.date_range("2021-01-04", periods=skip + n, freq=freq)[skip:]
            stamps = index.as_unit("ns").asi8.tolist()
            text = [str(t) for t in index]
        for t, tx, v in zip(stamps, text, vals, strict=True):
            rows.append([tx, sid, repr(v), "extra"])
            expect.append((sid, t, v))
    expect.sort(key=lambda r: (r[0], r[1]))
    kwargs = {"targets": ["y"], "id_col": "store", "time_col": "when"}
    return rows, ["when", "store", "y", "other"], kwargs, freq, expect


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(panel=generated_panels(), seed=st.integers(0, 2**32 - 1), bom=st.booleans(), crlf=st.booleans(),
       gz=st.booleans(), quote_all=st.booleans())
def test_generated_panels_read_back_exactly(tmp_path, panel, seed, bom, crlf, gz, quote_all):

    rows, header, kwargs, freq, expect = panel
    rng = random.Random(seed)
    rng.shuffle(rows)
    order = list(range(len(header)))
    rng.shuffle(order)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n",
                        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow([header[i] for i in order])
    writer.writerows([[r[i] for i in order] for r in rows])
    data = (("\ufeff" if bom else "") + out.getvalue()).encode()
    s = read_series(write(tmp_path / "g.csv", gzip.compress(data) if gz else data), **kwargs)
    assert s.ids == tuple(sorted({sid for sid, _, _ in expect}))
    assert s.times.tolist() == [t for _, t, _ in expect]
    assert s.values[:, 0].tolist() == [v for _, _, v in expect]
    assert np.diff(s.starts).tolist() == [sum(1 for r in expect if r[0] == sid) for sid in s.ids]
    assert s.time_kind == ("integer" if freq == "integer" else "datetime")
    assert s.freq == (None if freq == "integer" else freq) and s.warnings == ()


def test_reversed_file_gives_identical_arrays(tmp_path, a10):
    header, rows = _lines()
    text = "\n".join([header] + rows[::-1]) + "\n"
    assert_same(read_series(write(tmp_path / "rev.csv", text), targets=["cost_million_aud"]), a10)


# ----------------------------------------------------------------------------------------------
# time columns


def test_integer_time_and_detection(tmp_path):
    s = read_series(write(tmp_path / "steps.csv", "step,y\n3,1\n1,2\n2,3\n"), targets=["y"], time_col="step")
    assert s.time_kind == "integer" and s.times.tolist() == [1, 2, 3] and s.values[:, 0].tolist() == [2, 3, 1]
    # first column whose values are dates, when no column has a time name
    s = read_series(write(tmp_path / "when.csv", "y,when\n1,2021-01-01\n2,2021-01-02\n3,2021-01-03\n"),
                    targets=["y"])
    assert s.time_col == "when" and s.freq == "D"
    # name priority: 'date' before 'year' whatever the column order
    s = read_series(write(tmp_path / "two.csv", "year,date,y\n2021,2021-01-01,1\n2021,2021-02-01,2\n"
                                              "2021,2021-03-01,3\n"), targets=["y"])
    assert s.time_col == "date" and s.freq == "MS"
    s = read_series(write(tmp_path / "Upper.csv", "Timestamp,y\n2021-01-01 10:00,1\n2021-01-01 11:00,2\n"
                                                "2021-01-01 12:00,3\n"), targets=["y"])
    assert s.time_col == "Timestamp" and s.freq == "h"


def test_yyyymmdd_quarters_and_day_first(tmp_path):
    s = read_series(write(tmp_path / "c.csv", "date,y\n20210130,1\n20210131,2\n20210201,3\n"), targets=["y"])
    assert s.time_kind == "datetime" and s.times.tolist() == ns("2021-01-30", "2021-01-31", "2021-02-01")
    s = read_series(write(tmp_path / "q.csv", "period,y\n2020Q3,1\n2020 Q4,2\n2021-Q1,3\nQ2 2021,4\n"),
                    targets=["y"])
    assert s.times.tolist() == ns("2020-07-01", "2020-10-01", "2021-01-01", "2021-04-01")
    assert s.freq.startswith("QS")
    # dd/mm/yyyy month starts: only the day-first reading is regular
    text = "date,y\n" + "".join(f"01/{m:02d}/202{k},{m}\n" for k in (0, 1) for m in range(1, 13))
    s = read_series(write(tmp_path / "dm.csv", text), targets=["y"])
    assert s.freq == "MS" and s.times[1] == ns("2020-02-01")[0]
    text = "date,y\n" + "".join(f"{d:02d}/01/2021,{d}\n" for d in range(10, 20))  # unambiguous
    assert read_series(write(tmp_path / "d.csv", text), targets=["y"]).times[0] == ns("2021-01-10")[0]


@pytest.mark.parametrize("stamps,first,freq", [
    (["2021-W52", "2022-W01", "2022-W02"], "2021-12-27", "W-MON"),  # ISO weeks: their Mondays
    (["2021W52-3", "2022W01-3", "2022W02-3"], "2021-12-29", "W-WED"),
    (["Jan 2021", "Feb 2021", "Mar 2021"], "2021-01-01", "MS"),
    (["1991 Jul", "1991 Aug", "1991 Sep"], "1991-07-01", "MS"),
    (["2021-01", "2021-02", "2021-03"], "2021-01-01", "MS"),
    (["2021/01/05 10:00", "2021/01/05 11:00", "2021/01/05 12:00"], "2021-01-05 10:00", "h"),
    (["2021-1-5", "2021-1-6", "2021-1-7"], "2021-01-05", "D"),
    (["1/5/2021", "1/6/2021", "1/13/2021"], "2021-01-05", "B"),  # m/d: 13 cannot be a month
])
def test_more_time_formats(tmp_path, stamps, first, freq):
    text = "week,y\n" + "".join(f"{t},{k}\n" for k, t in enumerate(stamps))
    s = read_series(write(tmp_path / "f.csv", text), targets=["y"])
    assert s.time_kind == "datetime" and s.times[0] == ns(first)[0] and s.freq == freq


def test_invalid_periods(tmp_path):
    with pytest.raises(DataError, match=r"line 3, column 'week': '2021-W53' is not a valid ISO week"):
        read_series(write(tmp_path / "w.csv", "week,y\n2021-W52,1\n2021-W53,2\n"), targets=["y"])
    with pytest.raises(DataError, match=r"line 4, column 'period': '2021-07-01' is not a valid quarter"):
        read_series(write(tmp_path / "q.csv", "period,y\n2021Q1,1\n2021Q2,2\n2021-07-01,3\n"), targets=["y"])


def test_offsets_become_utc_across_dst(tmp_path):
    # Europe/Berlin around the spring change: 01:00+01:00 is followed by 03:00+02:00, one hour later
    text = ("time,y\n2021-03-28T00:00:00+01:00,1\n2021-03-28T01:00:00+01:00,2\n"
            "2021-03-28T03:00:00+02:00,3\n2021-03-28T04:00:00+02:00,4\n2021-03-28T03:00:00Z,5\n")
    s = read_series(write(tmp_path / "dst.csv", text), targets=["y"])
    assert s.times.tolist() == ns("2021-03-27 23:00", "2021-03-28 00:00", "2021-03-28 01:00",
                                  "2021-03-28 02:00", "2021-03-28 03:00")
    assert s.freq == "h" and s.step == 3600 * 10**9 and s.warnings == ()


# ----------------------------------------------------------------------------------------------
# frequency, gaps and missing values


def test_gaps_keep_a_calendar_freq_with_one_warning(tmp_path):
    months = [1, 2, 3, 6, 7, 8, 9, 10, 12]
    s = read_series(write(tmp_path / "g.csv", "date,y\n" + "".join(f"2021-{m:02d}-01,{m}\n" for m in months)),
                    targets=["y"])
    assert s.freq == "MS" and len(s.warnings) == 1
    assert "2 gaps" in s.warnings[0] and "from 2021-03-01 to 2021-06-01" in s.warnings[0]
    # business days with a holiday
    days = ["2021-03-29", "2021-03-30", "2021-03-31", "2021-04-01", "2021-04-05", "2021-04-06", "2021-04-07"]
    s = read_series(write(tmp_path / "b.csv", "date,y\n" + "".join(f"{d},1\n" for d in days)), targets=["y"])
    assert s.freq == "B" and "1 gap " in s.warnings[0]


def test_given_freq(tmp_path):
    text = "date,y\n" + "".join(f"2021-{m:02d}-01,{m}\n" for m in range(1, 13))
    s = read_series(write(tmp_path / "m.csv", text), targets=["y"], freq="MS")
    assert s.freq == "MS" and s.warnings == ()
    with pytest.raises(DataError, match="line 3, column 'date': time 2021-02-01 is not on the QS grid"):
        read_series(write(tmp_path / "m.csv", text), targets=["y"], freq="QS")
    # a fixed-length freq: its length is the step, and holes are gaps
    text = "time,y\n2021-01-01 10:00,1\n2021-01-01 11:00,2\n2021-01-01 14:00,3\n2021-01-01 15:00,4\n"
    s = read_series(write(tmp_path / "h.csv", text), targets=["y"], freq="h")
    assert s.freq == "h" and s.step == 3600 * 10**9
    assert len(s.warnings) == 1 and "1 gap " in s.warnings[0] and "largest 3h" in s.warnings[0]
    with pytest.raises(DataError, match="not on the 2h grid"):
        read_series(write(tmp_path / "h.csv", text), targets=["y"], freq="2h")


def test_panels_given_freq_and_mixed_regularity(tmp_path):
    # the predict path passes the model's freq: every series is checked against its grid
    s = read_series(str(DATA / "prison_quarterly_panel.csv"), targets=["prisoners"], id_col="series_id",
                    freq="QS-DEC")
    assert s.freq == "QS-DEC" and len(s.ids) == 32 and s.warnings == ()
    text = "date,id,y\n" + "".join(f"2021-{m:02d}-01,{sid},1\n" for sid in "ab" for m in range(1, 7))
    text += "2021-07-15,b,1\n"
    with pytest.raises(DataError, match=r"line 14, column 'date': time 2021-07-15 \(series 'b'\) is not on the MS"):
        read_series(write(tmp_path / "p.csv", text), targets=["y"], id_col="id", freq="MS")
    # one series hourly without holes ('h'), one with a hole (no alias): same fixed step, so they agree
    text = "datetime,id,y\n" + "".join(f"2021-01-01 {h:02d}:00,a,1\n" for h in range(24))
    text += "".join(f"2021-01-01 {h:02d}:00,b,1\n" for h in (0, 1, 2, 5, 6, 7))
    s = read_series(write(tmp_path / "h.csv", text), targets=["y"], id_col="id")
    assert s.freq is None and s.step == 3600 * 10**9
    assert s.warnings == (f"{tmp_path / 'h.csv'}: 1 gap in time (largest 3h (series 'b'), from 2021-01-01 02:00:00 "
                          "to 2021-01-01 05:00:00); rows are treated as consecutive steps of 1h",)


def test_missing_value_policy(tmp_path):
    def series(vals):
        return "date,y\n" + "".join(f"2021-01-{d + 1:02d},{v}\n" for d, v in enumerate(vals))

    vals = [1, "", "NA", "null", 5] + list(range(6, 31))  # a run of 3 is the most we fill
    s = read_series(write(tmp_path / "a.csv", series(vals)), targets=["y"])
    assert s.values[:5, 0].tolist() == [1, 2, 3, 4, 5]
    assert "interpolated 3 missing values" in s.warnings[0] and "2021-01-02" in s.warnings[0]
    vals = [1, 2, "N/A", 4, 5, 6, 7, 8, 9, 10]  # 10% exactly is still filled
    assert read_series(write(tmp_path / "b.csv", series(vals)), targets=["y"]).values[2, 0] == 3
    with pytest.raises(DataError, match="line 4, column 'y': missing value"):
        read_series(write(tmp_path / "b.csv", series(vals)), targets=["y"], missing="refuse")
    for token in MISSING_TOKENS:
        vals = [1, 2, token, 4, 5, 6, 7, 8, 9, 10]
        assert read_series(write(tmp_path / "c.csv", series(vals)), targets=["y"]).values[2, 0] == 3


def test_missing_values_are_judged_per_series(tmp_path):
    rows = [f"2021-01-{d:02d},a,{d}" for d in range(1, 11)] + [f"2021-01-{d:02d},b,{'' if d == 10 else d}"
                                                              for d in range(1, 11)]
    text = "date,store,y\n" + "\n".join(rows) + "\n"
    with pytest.raises(DataError, match=r"line 21, column 'y': missing value in the last row \(series 'b'\)"):
        read_series(write(tmp_path / "p.csv", text), targets=["y"], id_col="store")


# ----------------------------------------------------------------------------------------------
# forecasts out


def test_future_times_calendar():
    def fut(last, freq, n=4, step=0):
        return format_times(future_times(ns(last)[0], step, freq, "datetime", n), "datetime", freq)

    assert fut("2008-06-01", "MS") == ["2008-07-01", "2008-08-01", "2008-09-01", "2008-10-01"]
    assert fut("2010-04-01", "QS-JAN") == ["2010-07-01", "2010-10-01", "2011-01-01", "2011-04-01"]
    assert fut("2016-12-01", "QS-MAR") == ["2017-03-01", "2017-06-01", "2017-09-01", "2017-12-01"]
    assert fut("2017-01-16", "W-MON", 2) == ["2017-01-23", "2017-01-30"]
    assert fut("2015-04-29", "D", 2) == ["2015-04-30", "2015-05-01"]
    assert fut("2024-01-31", "ME", 3) == ["2024-02-29", "2024-03-31", "2024-04-30"]
    assert fut("2021-04-02", "B", 2) == ["2021-04-05", "2021-04-06"]  # Friday -> Monday
    assert fut("2021-01-15", "MS", 1) == ["2021-02-01"]  # a stamp off the grid rolls forward


def test_future_times_fixed_steps_and_integers():
    five = 300 * 10**9
    got = future_times(ns("2003-08-01 20:55")[0], five, None, "datetime", 3)
    assert format_times(got, "datetime", None) == ["2003-08-01 21:00:00", "2003-08-01 21:05:00",
                                                   "2003-08-01 21:10:00"]
    assert future_times(1970, 1, None, "integer", 3).tolist() == [1971, 1972, 1973]
    assert future_times(10, 5, None, "integer", 2).tolist() == [15, 20]
    assert future_times(ns("2021-01-01")[0], DAY, None, "datetime", 0).shape == (0,)
    assert future_times(1970, 1, None, "integer", 0).dtype == np.int64
    with pytest.raises(ValueError):
        future_times(1970, 1, None, "integer", -1)
    with pytest.raises(DataError, match="2262"):
        future_times(ns("2262-03-01")[0], 0, "MS", "datetime", 3)


def test_future_times_after_timezone_aware_input(tmp_path):
    # hourly data in local time with offsets across the autumn change: UTC stays regular
    text = ("time,y\n2021-10-31T01:00:00+02:00,1\n2021-10-31T02:00:00+02:00,2\n"
            "2021-10-31T02:00:00+01:00,3\n2021-10-31T03:00:00+01:00,4\n")
    s = read_series(write(tmp_path / "tz.csv", text), targets=["y"])
    assert s.freq == "h"
    got = future_times(int(s.times[-1]), s.step, s.freq, s.time_kind, 2)
    assert format_times(got, "datetime", s.freq) == ["2021-10-31 03:00:00", "2021-10-31 04:00:00"]
    # daily stamps at UTC midnight ('Z') stay dates
    text = "date,y\n2021-01-01T00:00:00Z,1\n2021-01-02T00:00:00Z,2\n2021-01-03T00:00:00Z,3\n"
    s = read_series(write(tmp_path / "z.csv", text), targets=["y"])
    got = future_times(int(s.times[-1]), s.step, s.freq, s.time_kind, 2)
    assert format_times(got, "datetime", s.freq) == ["2021-01-04", "2021-01-05"]


def test_format_times():
    assert format_times(np.array(ns("2021-01-01", "2021-02-01")), "datetime", "MS") == ["2021-01-01", "2021-02-01"]
    assert format_times(np.array(ns("2021-01-01", "2021-01-01 00:05")), "datetime", None) == [
        "2021-01-01 00:00:00", "2021-01-01 00:05:00"]
    assert format_times(np.array(ns("2021-01-02")), "datetime", "h") == ["2021-01-02 00:00:00"]
    assert format_times(np.array(ns("2021-01-02 00:00:00.5")), "datetime", None) == ["2021-01-02 00:00:00.500000"]
    assert format_times(np.array([1871, -5]), "integer", None) == ["1871", "-5"]


def test_write_csv_text():
    text = write_csv_text({"date": ["2021-01-01", "2021-02-01"], "store": ["a,b", 'say "hi"'],
                           "y": [0.1, np.float32(2.5)], "n": [1, np.int64(2)], "z": [float("nan"), None]},
                          ["date", "store", "y", "n", "z"])
    assert text == 'date,store,y,n,z\n2021-01-01,"a,b",0.1,1,NaN\n2021-02-01,"say ""hi""",2.5,2,\n'
    with pytest.raises(ValueError):
        write_csv_text({"a": [1], "b": [1, 2]}, ["a", "b"])
    with pytest.raises(ValueError):
        write_csv_text({"a": [1]}, ["a", "b"])


def test_frame_never_imports_numba():
    code = "import sys, lstm_cli.frame; sys.exit('numba' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_unnamed_columns_from_trailing_separators_are_ignored(tmp_path):
    text = "date,sales,,\n2021-01-01,1,,\n2021-01-02,2,,\n2021-01-03,3,,\n"
    s = read_series(write(tmp_path / "t.csv", text), targets=["sales"])
    assert s.values[:, 0].tolist() == [1, 2, 3] and s.freq == "D"


# ----------------------------------------------------------------------------------------------
# the fast path (plain CSV, array operations) against the careful path (csv module, value by value)


def _careful_only(mp: pytest.MonkeyPatch) -> None:
    def decline(*args, **kwargs):
        raise frame._Unusual("the test reads with the careful path")

    mp.setattr(frame, "_read_fast", decline)


def _fast_only(mp: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("the fast path declined an input it should take")

    mp.setattr(frame, "_read_careful", fail)


def _outcome(read):
    try:
        return "ok", read()
    except (DataError, UsageError, InputMissingError) as e:
        return type(e).__name__, str(e)


def assert_identical(a: frame.SeriesSet, b: frame.SeriesSet) -> None:
    """Field by field, dtypes and bytes included."""
    for field in frame.SeriesSet.__dataclass_fields__:
        x, y = getattr(a, field), getattr(b, field)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and x.flags.c_contiguous == y.flags.c_contiguous, field
            assert x.tobytes() == y.tobytes(), field
        else:
            assert x == y, field


def assert_paths_agree(read) -> str:
    """read() through read_series (fast path first) and with the careful path alone give the same
    SeriesSet or the same error. Returns 'ok' or the error class name."""
    auto = _outcome(read)
    with pytest.MonkeyPatch.context() as mp:
        _careful_only(mp)
        careful = _outcome(read)
    assert auto[0] == careful[0], (auto, careful)
    if auto[0] == "ok":
        assert_identical(auto[1], careful[1])
    else:
        assert auto[1] == careful[1]
    return auto[0]


class _Pipe(io.RawIOBase):
    """A stdin that cannot seek: the fast path must replay what it read for the careful path."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self._data.read(min(len(b), 7))  # short reads, as from a pipe
        b[: len(chunk)] = chunk
        return len(chunk)


TIME_STYLES = {  # k -> the text of the k-th step
    "date": lambda k: (pd.Timestamp("2021-01-01") + pd.Timedelta(days=k)).strftime("%Y-%m-%d"),
    "datetime": lambda k: (pd.Timestamp("2021-01-01 06:00") + pd.Timedelta(hours=k)).strftime("%Y-%m-%d %H:%M:%S"),
    "integer": lambda k: str(1900 + k),
    "yyyymmdd": lambda k: (pd.Timestamp("2021-01-28") + pd.Timedelta(days=k)).strftime("%Y%m%d"),
    "quarter": lambda k: f"{2000 + k // 4}Q{k % 4 + 1}",
    "month": lambda k: (pd.Timestamp("2021-01-01") + pd.DateOffset(months=k)).strftime("%b %Y"),
    "day_first": lambda k: (pd.Timestamp("2021-01-01") + pd.DateOffset(months=k)).strftime("%d/%m/%Y"),
    "offset": lambda k: (pd.Timestamp("2021-03-27 22:00", tz="Europe/Berlin") + pd.Timedelta(hours=k)).isoformat(),
    "business": lambda k: (pd.Timestamp("2021-03-29") + pd.offsets.BDay(k)).strftime("%Y-%m-%d"),
}
NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:.6g}"),
    st.integers(-10**25, 10**25).map(str),
    st.sampled_from(["1.", ".5", "+5", "-0", "5.e3", "1E+05", "0012", " 12 ", "\t7", "3 ", "1e-400", "1e300",
                     "-.5e-3", "12.50000000000000000001", "123456789012345678901234567890"]),
)
ODD_VALUES = st.sampled_from(["", "NA", "N/A", "NaN", "nan", "null", "NULL", " NA ", "\xa0NA", "\x1cnan", " ",
                              "n/a", "-", "1,5", "1,234", "inf", "-Infinity", "1e400", "12 kWh", "\u2014", "NAN",
                              "1_000", "\u0663", "0x10", "1e", ".", "e5", "+-1", "1.2.3", '"', "x" * 70])
IDS = st.sampled_from(["a", "b", " a", "a ", "01", "1", "M\u00fcnchen", "s 1", "\xa0a", "", "c" * 70, "d,e"])


@st.composite
def varied_files(draw):
    """(bytes, read_series kwargs, stdin kind) for long-format files that are mostly plain and
    sometimes odd in one or more ways: every rule of the module docstring is in play."""
    rng = draw(st.randoms(use_true_random=True))

    def rare(n: int) -> bool:  # one time in n (hypothesis's own integers favour their bounds)
        return rng.random() * n < 1

    style = draw(st.sampled_from(sorted(TIME_STYLES) + ["date", "datetime"]))
    odd = rng.choice([0, 0, 0, 0.02, 0.1, 0.3])  # the share of odd values
    ids = draw(st.lists(IDS if rare(4) else st.sampled_from(["a", "b", "01", "s 1"]),
                        min_size=1, max_size=4, unique=True))
    rows = []
    for sid in ids:
        n = draw(st.integers(1, 14))
        steps = sorted(draw(st.sets(st.integers(0, n + draw(st.integers(0, 3))), min_size=n, max_size=n)))
        for k in steps:
            value = draw(ODD_VALUES) if rng.random() < odd else draw(NUMBERS)
            rows.append([TIME_STYLES[style](k), sid, value, "1,2" if rare(100) else rng.choice(["x", "", "y z"])])
    if draw(st.booleans()):
        rows = draw(st.permutations(rows))
    if rows and rare(10):  # a duplicate time
        rows.append(list(rows[draw(st.integers(0, len(rows) - 1))]))
    if rows and rare(10):  # a bad time
        rows[draw(st.integers(0, len(rows) - 1))][0] = draw(st.sampled_from(["", "NA", "2021-02-30", "soon",
                                                                              "2021-01-01T00:00:00Z", "1e3"]))
    header = ["date" if style not in ("integer", "quarter") else "period", "id", "value", "note"]
    order = draw(st.permutations(range(4)))
    if rare(5) and style not in ("integer", "day_first"):
        header[0] = "when"  # no time name: the column is found by its content
    sep = draw(st.sampled_from([",", ",", ";", "\t"]))
    term = draw(st.sampled_from(["\n", "\r\n"]))
    lines = []
    quoted = rng.randrange(len(rows) + 1) if rare(4) else -1  # a line with every field quoted
    for k, r in enumerate([header] + rows):
        out = io.StringIO()
        quoting = csv.QUOTE_ALL if k == quoted else csv.QUOTE_MINIMAL
        csv.writer(out, delimiter=sep, lineterminator=term, quoting=quoting).writerow([r[i] for i in order])
        lines.append(out.getvalue())
    for _ in range(draw(st.integers(0, 2))):  # blank and whitespace-only lines
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(["\n", "  \n", " \r\n", "\r\n"])))
    if rare(8) and len(lines) > 1:  # a stray quote, or a quoted field with text after it
        k = rng.randrange(1, len(lines))
        at = rng.randrange(len(lines[k]))
        lines[k] = lines[k][:at] + rng.choice(['"', '""', '"x" ', 'y"']) + lines[k][at:]
    if rare(16) and len(lines) > 1:  # a ragged line
        k = draw(st.integers(1, len(lines) - 1))
        lines[k] = lines[k].replace(sep, "", 1)
    text = "".join(lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no final line end
    data = (("\ufeff" if rare(5) else "") + text).encode()
    if rare(5):
        data = gzip.compress(data)
    kwargs = {"targets": ["value"], "id_col": "id", "sep": sep,
              "missing": draw(st.sampled_from(["interpolate", "interpolate", "refuse"]))}
    if header[0] != "when" and draw(st.booleans()):
        kwargs["time_col"] = header[0]
    if style in ("date", "business") and rare(4):
        kwargs["freq"] = draw(st.sampled_from(["D", "B", "MS", "2D"]))
    return data, kwargs, draw(st.sampled_from(["file", "file", "stdin", "pipe"]))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=varied_files(), block=st.sampled_from([64, 1000, frame.FAST_BLOCK]))
def test_fast_and_careful_paths_agree_on_varied_files(tmp_path, case, block):
    data, kwargs, how = case
    path = write(tmp_path / "v.csv", data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(frame, "FAST_BLOCK", block)  # lines cut across blocks, and the carried rest
        if how == "file":
            read = lambda: read_series(path, **kwargs)  # noqa: E731
        else:
            stream = io.BytesIO if how == "stdin" else _Pipe
            read = lambda: read_series("-", stdin=stream(data), **kwargs)  # noqa: E731
        outcome = assert_paths_agree(read)
        _fast_only(mp)
        try:
            read()
            event("fast path took it")
        except AssertionError:
            event(f"fast path declined ({outcome})")
        except (DataError, UsageError):
            raise AssertionError("the careful path took no part and there was an error") from None


@st.composite
def plain_files(draw):
    """Files the fast path must take: LF or CRLF, blank lines, missing tokens, spaces around
    numbers, odd but valid ids, whole fields in quotes (as R's write.csv writes them)."""
    quote = draw(st.sampled_from(["none", "text", "all"]))  # which fields are in quotes

    def q(text: str, is_text: bool = True) -> str:
        return f'"{text}"' if quote == "all" or (quote == "text" and is_text) else text

    style = draw(st.sampled_from(["date", "datetime", "integer", "yyyymmdd", "quarter", "month", "offset"]))
    ids = draw(st.lists(st.sampled_from(["a", "b", " a", "01", "1", "M\u00fcnchen", "s 1"]), min_size=1,
                        max_size=4, unique_by=str.strip))
    lines = []
    for sid in ids:
        n = draw(st.integers(3, 14))
        gap = n // 2 if n >= 10 and draw(st.integers(0, 2)) == 0 else -1  # at most 10% missing
        for k in range(n):
            missing = k == gap
            value = draw(st.sampled_from(sorted(MISSING_TOKENS))) if missing else draw(NUMBERS)
            lines.append(f"{q(TIME_STYLES[style](k))};{q(sid)};{q(value, False)}")
    lines = draw(st.permutations(lines)) if draw(st.booleans()) else lines
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", "  "])))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join([";".join(map(q, ["t", "id", "value"]))] + lines) + (end if draw(st.booleans()) else "")
    data = (("\ufeff" if draw(st.booleans()) else "") + text).encode()
    return gzip.compress(data) if draw(st.booleans()) else data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=plain_files(), block=st.sampled_from([64, 1000, frame.FAST_BLOCK]))
def test_fast_path_takes_plain_files_and_equals_the_careful_path(tmp_path, data, block):
    path = write(tmp_path / "p.csv", data)
    kwargs = {"targets": ["value"], "id_col": "id", "time_col": "t", "sep": ";"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(frame, "FAST_BLOCK", block)
        _fast_only(mp)
        fast = read_series(path, **kwargs)
        piped = read_series("-", stdin=_Pipe(data), **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        _careful_only(mp)
        careful = read_series(path, **kwargs)
    assert_identical(fast, careful)
    assert_identical(piped, replace(careful, source="<stdin>",
                                    warnings=tuple(w.replace(path, "<stdin>") for w in careful.warnings)))


@pytest.mark.parametrize("name", sorted(REAL))
def test_fast_path_takes_the_real_data_sets(name):
    kwargs = REAL[name][0]
    with pytest.MonkeyPatch.context() as mp:
        _fast_only(mp)
        fast = read_series(str(DATA / name), **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        _careful_only(mp)
        careful = read_series(str(DATA / name), **kwargs)
    assert_identical(fast, careful)


@pytest.mark.parametrize("fixture,kwargs,exc,phrases", BAD_CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1])}" if c[1] else c[0] for c in BAD_CASES])
def test_bad_fixtures_same_error_on_both_paths(fixture, kwargs, exc, phrases):
    assert assert_paths_agree(lambda: read_series(str(BAD / fixture), **{"targets": ["sales"], **kwargs})) != "ok"


def test_number_automaton_is_the_number_regex():
    """Every string of up to 4 characters over the bytes that matter (and one that does not)."""
    import itertools

    alphabet = " \t\x0b\x0c+-.eE09x"
    table, accept = frame._NUMBER_TABLE, frame._NUMBER_ACCEPT
    for n in range(5):
        for chars in itertools.product(alphabet, repeat=n):
            s = "".join(chars)
            state = 0
            for byte in s.encode():
                state = table[state, byte]
            assert bool(accept[state]) == bool(frame._NUMBER.fullmatch(s)), repr(s)
