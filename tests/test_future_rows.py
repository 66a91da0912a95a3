"""Future rows (issue 16): DATA's trailing target-empty rows split off by read_series
(future_rows='split'|'refuse'), the --future FILE reader (read_future_file) and the choice of each
series' rows for the forecast steps (future_block)."""

from __future__ import annotations

import gzip
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_cli import frame
from lstm_cli.errors import DataError, InputMissingError, UsageError
from lstm_cli.frame import FutureRows, future_block, future_times, read_future_file, read_series
from tests.test_frame import _careful_only as careful_only
from tests.test_frame import _fast_only as fast_only

PANEL = """id,date,y,temp,promo
a,2024-01-01,1,5,0
a,2024-02-01,2,6,1
a,2024-03-01,3,8,0
a,2024-04-01,,,1
a,2024-05-01,,,0
b,2024-01-01,1,5,0
b,2024-02-01,2,6,1
b,2024-03-01,4,7,0
b,2024-04-01,,,1
c,2024-01-01,7,1,0
c,2024-02-01,8,2,0
c,2024-03-01,9,3,1
"""
PANEL_ARGS = {"targets": ["y"], "features": ["temp"], "future_features": ["promo"], "id_col": "id"}


def ns(*stamps: str) -> list[int]:
    return [pd.Timestamp(s).value for s in stamps]


def write(path: Path, text: str | bytes) -> str:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def split(path: str, **kwargs) -> frame.SeriesSet:
    return read_series(path, future_rows="split", **{**PANEL_ARGS, **kwargs})


def assert_same_future(a: FutureRows | None, b: FutureRows | None) -> None:
    assert (a is None) == (b is None)
    if a is None:
        return
    assert (a.source, a.ids) == (b.source, b.ids)
    for name in ("starts", "times", "values", "lines"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name


def assert_same_series(a: frame.SeriesSet, b: frame.SeriesSet) -> None:
    """Field by field, dtypes and bytes included, the future rows too."""
    for name in frame.SeriesSet.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if name == "future":
            assert_same_future(x, y)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name
        else:
            assert x == y, name


# ----------------------------------------------------------------------------------------------
# read_series(future_rows='split')


def test_split_one_series_takes_the_trailing_target_empty_rows(tmp_path):
    path = write(tmp_path / "one.csv", "date,y,promo\n2024-01-01,1,0\n2024-01-02,2,1\n2024-01-03,,1\n"
                                       "2024-01-04,,0\n2024-01-05,,1\n")
    s = read_series(path, targets=["y"], future_features=["promo"], future_rows="split")
    assert s.columns == ("y", "promo") and s.n_targets == 1 and s.ids == ("",)
    np.testing.assert_array_equal(s.values, [[1, 0], [2, 1]])
    np.testing.assert_array_equal(s.times, ns("2024-01-01", "2024-01-02"))
    assert s.starts.tolist() == [0, 2]
    f = s.future
    assert f.source == path and f.ids == ("",)
    assert f.starts.tolist() == [0, 3] and f.starts.dtype == np.int64
    np.testing.assert_array_equal(f.times, ns("2024-01-03", "2024-01-04", "2024-01-05"))
    assert f.values.dtype == np.float64 and f.values.tolist() == [[1.0], [0.0], [1.0]]
    assert f.lines.tolist() == [4, 5, 6] and f.lines.dtype == np.int64


def test_split_panel_with_uneven_future_rows_and_a_series_without_any(tmp_path):
    s = split(write(tmp_path / "p.csv", PANEL))
    assert s.columns == ("y", "temp", "promo") and s.ids == ("a", "b", "c")
    assert s.starts.tolist() == [0, 3, 6, 9] and s.freq == "MS" and s.warnings == ()
    np.testing.assert_array_equal(s.values[:, 0], [1, 2, 3, 1, 2, 4, 7, 8, 9])
    f = s.future
    assert f.ids == ("a", "b", "c") and f.starts.tolist() == [0, 2, 3, 3]
    np.testing.assert_array_equal(f.times, ns("2024-04-01", "2024-05-01", "2024-04-01"))
    assert f.values.tolist() == [[1.0], [0.0], [1.0]] and f.lines.tolist() == [5, 6, 10]


def test_split_with_rows_in_any_order_in_the_file(tmp_path):
    lines = PANEL.splitlines()
    shuffled = "\n".join([lines[0], *reversed(lines[1:])]) + "\n"
    a, b = split(write(tmp_path / "p.csv", PANEL)), split(write(tmp_path / "r.csv", shuffled))
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.future.times, b.future.times)
    np.testing.assert_array_equal(a.future.values, b.future.values)
    assert b.future.lines.tolist() == [10, 9, 5]  # the reversed file's own lines


def test_split_keeps_interior_empty_targets_interpolated_and_the_observed_frequency(tmp_path):
    text = ("date,y,promo\n2024-01-01,1,0\n2024-01-02,,0\n2024-01-03,3,0\n2024-01-04,4,0\n2024-01-05,5,0\n"
            "2024-01-06,6,0\n2024-01-07,7,0\n2024-01-08,8,0\n2024-01-09,9,0\n2024-01-10,10,0\n"
            "2024-01-12,,1\n2024-01-20,,1\n")  # future rows off the daily grid do not change the frequency
    s = read_series(write(tmp_path / "d.csv", text), targets=["y"], future_features=["promo"], future_rows="split")
    assert s.freq == "D" and s.values[1, 0] == 2.0 and len(s.times) == 10
    assert any("interpolated 1 missing value" in w for w in s.warnings)
    assert not any("gap" in w for w in s.warnings)
    assert len(s.future.times) == 2


def test_split_past_feature_cells_may_be_empty_in_future_rows_and_are_not_missing_values(tmp_path):
    s = split(write(tmp_path / "p.csv", PANEL), missing="refuse")
    assert s.future.starts.tolist() == [0, 2, 3, 3]
    with pytest.raises(DataError, match=r"line 4, column 'temp': missing value \(series 'a'\) at 2024-03-01"):
        split(write(tmp_path / "q.csv", PANEL.replace("a,2024-03-01,3,8,0", "a,2024-03-01,3,,0")), missing="refuse")


def test_split_without_future_rows_gives_empty_future_rows(tmp_path):
    text = "date,y,promo\n2024-01-01,1,0\n2024-01-02,2,1\n2024-01-03,3,1\n"
    s = read_series(write(tmp_path / "d.csv", text), targets=["y"], future_features=["promo"], future_rows="split")
    assert s.future.starts.tolist() == [0, 0] and s.future.values.shape == (0, 1) and len(s.times) == 3


def test_several_targets_make_a_future_row_only_when_all_are_empty(tmp_path):
    text = "date,y,z,promo\n2024-01-01,1,1,0\n2024-01-02,2,2,0\n2024-01-03,3,,1\n2024-01-04,,,1\n"
    path = write(tmp_path / "d.csv", text)
    with pytest.raises(DataError, match=r"line 4, column 'z': missing value in the last row"):
        read_series(path, targets=["y", "z"], future_features=["promo"], future_rows="split")
    ok = write(tmp_path / "e.csv", text.replace("2024-01-03,3,,1", "2024-01-03,3,3,1"))
    s = read_series(ok, targets=["y", "z"], future_features=["promo"], future_rows="split")
    assert len(s.times) == 3 and s.future.starts.tolist() == [0, 1]


def test_future_features_follow_the_features_and_the_no_policy_is_unchanged(tmp_path):
    path = write(tmp_path / "p.csv", PANEL.replace(",,,", ",9,9,"))  # no empty cells: the rows stay
    no = read_series(path, targets=["y"], features=["temp"], future_features=["promo"], id_col="id")
    plain = read_series(path, targets=["y"], features=["temp", "promo"], id_col="id")
    assert no.future is None and no.columns == plain.columns == ("y", "temp", "promo")
    np.testing.assert_array_equal(no.values, plain.values)
    with pytest.raises(DataError, match=r"missing value in the last row \(series 'a'\)"):
        read_series(write(tmp_path / "q.csv", PANEL), **PANEL_ARGS)  # 'no' (the default): missing values


@pytest.mark.parametrize("kwargs, phrase", [
    ({"features": ["promo"]}, "column 'promo' is named as --feature and as --future-features"),
    ({"targets": ["promo"]}, "column 'promo' is named as --target and as --future-features"),
    ({"future_features": ["promo", "promo"]}, "column 'promo' is named twice"),
    ({"future_features": ["date"], "time_col": "date"}, "named as --future-features and as --time-col"),
    ({"future_features": [" "]}, "future feature names must be non-empty strings"),
    ({"future_rows": "yes"}, "future_rows must be one of no, split, refuse"),
])
def test_bad_future_arguments_are_usage_errors(tmp_path, kwargs, phrase):
    path = write(tmp_path / "p.csv", PANEL)
    with pytest.raises(UsageError, match=phrase):
        read_series(path, **{"targets": ["y"], "future_features": ["promo"], "future_rows": "split", **kwargs})


def test_a_missing_future_feature_column_is_the_missing_column_error(tmp_path):
    with pytest.raises(DataError, match=r"p.csv: column 'Promo' not found; the header has .*did you mean 'promo'"):
        split(write(tmp_path / "p.csv", PANEL), future_features=["Promo"])


def test_an_empty_future_feature_in_a_future_row_names_line_column_series_and_time(tmp_path):
    path = write(tmp_path / "p.csv", PANEL.replace("a,2024-05-01,,,0", "a,2024-05-01,,,"))
    with pytest.raises(DataError) as e:
        split(path)
    assert str(e.value).startswith(f"{path}, line 6, column 'promo': empty in a future row (series 'a') "
                                   "(at 2024-05-01, after the last value of the target 'y'); future rows need "
                                   "every future feature")


def test_a_series_with_no_target_value_is_a_data_error(tmp_path):
    text = PANEL + "d,2024-01-01,,1,0\nd,2024-02-01,,1,0\n"
    for mode in ("split", "refuse"):
        with pytest.raises(DataError, match=r"line 14: series 'd' has no observed value \(every row from "
                                            r"2024-01-01 on has the target 'y' empty\)"):
            read_series(write(tmp_path / "p.csv", text), future_rows=mode, **PANEL_ARGS)


# ----------------------------------------------------------------------------------------------
# future_rows='refuse': the model reads no future features


def test_refuse_names_the_series_its_rows_and_the_first_time(tmp_path):
    path = write(tmp_path / "p.csv", PANEL)
    with pytest.raises(DataError) as e:
        read_series(path, targets=["y"], features=["temp"], id_col="id", future_rows="refuse")
    assert str(e.value) == (f"{path}, line 5: series 'a' has 2 rows after its last value (from 2024-04-01) with "
                            "the target 'y' empty (and 1 more series): future rows, but this model reads no future "
                            "features; drop those rows (or retrain with --future-features)")


def test_refuse_one_series_says_the_data_has(tmp_path):
    path = write(tmp_path / "d.csv", "date,y\n2024-01-01,1\n2024-01-02,2\n2024-01-03,3\n2024-01-04,\n")
    with pytest.raises(DataError, match=r"d.csv, line 5: the data has 1 row after its last value \(from "
                                        r"2024-01-04\) with the target 'y' empty: future rows"):
        read_series(path, targets=["y"], future_rows="refuse", missing="refuse")


def test_refuse_reads_data_without_future_rows_as_before(tmp_path):
    path = write(tmp_path / "p.csv", "\n".join(r for r in PANEL.splitlines() if ",,," not in r) + "\n")
    refused = read_series(path, targets=["y"], id_col="id", future_rows="refuse")
    plain = read_series(path, targets=["y"], id_col="id")
    assert_same_series(refused, plain)


# ----------------------------------------------------------------------------------------------
# the sources: csv, csv.gz, stdin; the fast path and the careful path


def test_split_is_the_same_from_gzip_and_stdin(tmp_path):
    ref = split(write(tmp_path / "p.csv", PANEL))
    gz = split(write(tmp_path / "p.csv.gz", gzip.compress(PANEL.encode())))
    piped = read_series("-", stdin=io.BytesIO(PANEL.encode()), future_rows="split", **PANEL_ARGS)
    for other in (gz, piped):
        np.testing.assert_array_equal(other.values, ref.values)
        np.testing.assert_array_equal(other.starts, ref.starts)
        assert_same_future(other.future, replace(ref.future, source=other.source))
    assert piped.source == piped.future.source == "<stdin>"


def test_fast_and_careful_paths_give_identical_future_rows(tmp_path):
    path = write(tmp_path / "p.csv", PANEL)
    with pytest.MonkeyPatch.context() as mp:
        fast_only(mp)
        fast = split(path)
    with pytest.MonkeyPatch.context() as mp:
        careful_only(mp)
        careful = split(path)
    assert_same_series(fast, careful)
    quoted = write(tmp_path / "q.csv", PANEL.replace("a,2024-05-01", '"a",2024-05-01').replace("id,", '"i,d",')
                   .replace("b,2024-01-01", 'b,"2024-01-01"'))
    expected = replace(careful, id_col="i,d", source=quoted, future=replace(careful.future, source=quoted))
    assert_same_series(split(quoted, id_col="i,d"), expected)  # quotes: the careful path alone


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("a,2024-05-01,,,0", "a,2024-05-01,,,"),  # an empty future feature
    lambda t: t.replace("id,date,y,temp,promo", "id,date,y,temp,promo2"),  # a missing column
    lambda t: t + "d,2024-01-01,,1,0\n",  # a series without a value
])
def test_errors_are_the_same_on_both_paths(tmp_path, edit):
    path = write(tmp_path / "p.csv", edit(PANEL))
    with pytest.raises(DataError) as auto:
        split(path)
    with pytest.MonkeyPatch.context() as mp:
        careful_only(mp)
        with pytest.raises(DataError) as careful:
            split(path)
    assert str(auto.value) == str(careful.value)


# ----------------------------------------------------------------------------------------------
# read_future_file: --future FILE

FUTURE = """date,id,promo,temp
2024-05-01,a,0,1
2024-04-01,b,1,2
2024-04-01,a,1,3
2024-05-01,b,0,4
2024-03-01,a,9,9
"""


def test_future_file_is_sorted_by_id_and_time_with_its_lines(tmp_path):
    path = write(tmp_path / "f.csv", FUTURE)
    f = read_future_file(path, future_features=["promo"], time_col="date", id_col="id")
    assert f.source == path and f.ids == ("a", "b") and f.starts.tolist() == [0, 3, 5]
    np.testing.assert_array_equal(f.times, ns("2024-03-01", "2024-04-01", "2024-05-01", "2024-04-01", "2024-05-01"))
    assert f.values.tolist() == [[9], [1], [0], [1], [0]] and f.lines.tolist() == [6, 4, 2, 3, 5]
    assert f.times.dtype == f.lines.dtype == f.starts.dtype == np.int64 and f.values.dtype == np.float64
    both = read_future_file(path, future_features=["temp", "promo"], time_col=None, id_col="id")
    assert both.values[:, 0].tolist() == [9, 3, 1, 2, 4]  # in the order asked; the time column found by name


def test_future_file_one_row_one_series_integer_times_and_stdin(tmp_path):
    f = read_future_file(write(tmp_path / "f.csv", "step,promo\n101,1\n"), future_features=["promo"],
                         time_col="step", id_col=None, time_kind="integer")
    assert f.ids == ("",) and f.times.tolist() == [101] and f.starts.tolist() == [0, 1]
    piped = read_future_file("-", future_features=["promo"], time_col="step", id_col=None,
                             stdin=io.BytesIO(b"step,promo\n102,1\n101,0\n"))
    assert piped.source == "<stdin>" and piped.times.tolist() == [101, 102] and piped.lines.tolist() == [3, 2]
    gz = read_future_file(write(tmp_path / "f.csv.gz", gzip.compress(FUTURE.encode())), future_features=["promo"],
                          time_col="date", id_col="id")
    assert gz.starts.tolist() == [0, 3, 5]


@pytest.mark.parametrize("text, kwargs, phrase", [
    (FUTURE + "2024-04-01,a,1,1\n", {}, r"f.csv, line 7, column 'date': time 2024-04-01 \(series 'a'\) also appears "
                                        r"on line 4; keep one row per time and series"),
    (FUTURE.replace("2024-04-01,b,1,2", "2024-04-01,b,,2"), {},
     r"f.csv, line 3, column 'promo': empty \(series 'b'\) at 2024-04-01; every row of the future file needs every "
     r"future feature"),
    (FUTURE.replace("2024-04-01,b,1,2", "2024-04-01,b,NA,2"), {}, r"line 3, column 'promo': empty"),
    (FUTURE.replace("2024-04-01,b,1,2", "2024-04-01,b,yes,2"), {}, r"line 3, column 'promo': 'yes' is not a number"),
    (FUTURE.replace("promo", "Promo"), {}, r"f.csv: column 'promo' not found; the header has 'date', 'id', 'Promo', "
                                           r"'temp'; did you mean 'Promo'\?"),
    (FUTURE.replace("2024-04-01,b", "2024-04-01,"), {}, r"line 3, column 'id': empty series id"),
    (FUTURE.replace("2024-05-01,a", "soon,a"), {}, r"line 2, column 'date': cannot read 'soon' as a date"),
    ("date,id,promo\n", {}, r"f.csv: a header \(line 1\) but no data rows"),
    (FUTURE, {"time_kind": "integer"}, r"f.csv, line 2, column 'date': the times are datetime values, but DATA's "
                                       r"are integers; write them as DATA does"),
    ("date,id,promo\n5,a,1\n", {"freq": "MS"}, r"the times are integer values, but DATA's are dates"),
])
def test_future_file_errors_name_the_file_line_and_column(tmp_path, text, kwargs, phrase):
    path = write(tmp_path / "f.csv", text)
    with pytest.raises(DataError, match=phrase):
        read_future_file(path, future_features=["promo"], time_col="date", id_col="id", **kwargs)


def test_future_file_missing_or_unnamed(tmp_path):
    with pytest.raises(InputMissingError, match=r"nope.csv: no such file"):
        read_future_file(str(tmp_path / "nope.csv"), future_features=["promo"], time_col="date", id_col=None)
    with pytest.raises(UsageError, match=r"none are named \(--future-features\)"):
        read_future_file(write(tmp_path / "f.csv", FUTURE), future_features=[], time_col="date", id_col=None)
    with pytest.raises(UsageError, match=r"column 'promo' is named as --future-features and as --id-col"):
        read_future_file(write(tmp_path / "f.csv", FUTURE), future_features=["promo"], time_col="date",
                         id_col="promo")


# ----------------------------------------------------------------------------------------------
# future_block: each series' rows for the forecast steps


def monthly(tmp_path) -> frame.SeriesSet:
    return split(write(tmp_path / "d.csv", PANEL))


def test_future_block_monthly_takes_the_calendar_stamps_and_skips_history(tmp_path):
    s = monthly(tmp_path)
    more = write(tmp_path / "f.csv", "date,id,promo\n" + "".join(
        f"{d},{sid},{k}\n" for sid in "abc" for k, d in enumerate(["2023-12-01", "2024-02-01", "2024-03-01",
                                                                   "2024-04-01", "2024-05-01", "2024-06-01"])))
    f = read_future_file(more, future_features=["promo"], time_col="date", id_col="id")
    times, values = future_block(s, f, 2, s.freq)
    assert times.dtype == np.int64 and times.shape == (3, 2) and values.shape == (3, 2, 1)
    for row in times:
        np.testing.assert_array_equal(row, ns("2024-04-01", "2024-05-01"))
        np.testing.assert_array_equal(row, future_times(s.times[2], s.step, "MS", "datetime", 2))
    assert values[:, :, 0].tolist() == [[3, 4]] * 3  # rows at or before the last value are ignored


def test_future_block_from_the_split_rows_and_too_few(tmp_path):
    s = monthly(tmp_path)
    only_a = replace(s, ids=("a",), starts=s.starts[:2])
    f = s.future
    future_a = replace(f, ids=("a",), starts=f.starts[:2], times=f.times[:2], values=f.values[:2], lines=f.lines[:2])
    times, values = future_block(only_a, future_a, 2, "MS")
    np.testing.assert_array_equal(times[0], ns("2024-04-01", "2024-05-01"))
    assert values[0, :, 0].tolist() == [1, 0]
    with pytest.raises(DataError) as e:
        future_block(s, s.future, 2, s.freq)
    assert str(e.value) == (f"{s.source}: series 'b' has 1 future row after its last value (2024-03-01), need 2 "
                            "(the forecast's steps): add rows up to 2024-05-01")
    with pytest.raises(DataError, match=r"series 'a' has 2 future rows after its last value \(2024-03-01\), need "
                                        r"12 \(the forecast's steps\): add rows up to 2025-03-01"):
        future_block(s, s.future, 12, s.freq)


def test_future_block_a_series_without_future_rows(tmp_path):
    s = monthly(tmp_path)
    f = read_future_file(write(tmp_path / "f.csv", "date,id,promo\n2024-04-01,a,1\n2024-04-01,b,1\n"),
                         future_features=["promo"], time_col="date", id_col="id")
    with pytest.raises(DataError, match=r"f.csv: series 'c' has no future rows after its last value \(2024-03-01\), "
                                        r"need 1 \(the forecast's steps\): add rows up to 2024-04-01"):
        future_block(s, f, 1, s.freq)


def test_future_block_other_series_in_the_future_file(tmp_path):
    s = monthly(tmp_path)
    f = read_future_file(write(tmp_path / "f.csv", "date,id,promo\n2024-04-01,a,1\n2024-04-01,zz,1\n"
                                                   "2024-04-01,zy,1\n"),
                         future_features=["promo"], time_col="date", id_col="id")
    with pytest.raises(DataError) as e:
        future_block(s, f, 1, s.freq)
    assert str(e.value).startswith(f"--future {f.source}: series 'zy' (and 1 more) is not in {s.source}; ")


def test_future_block_stamps_that_do_not_continue_a_calendar_series(tmp_path):
    s = monthly(tmp_path)
    f = read_future_file(write(tmp_path / "f.csv", "date,id,promo\n" + "".join(
        f"{d},{sid},1\n" for sid in "abc" for d in ["2024-04-01", "2024-05-15" if sid == "b" else "2024-05-01"])),
        future_features=["promo"], time_col="date", id_col="id")
    with pytest.raises(DataError) as e:
        future_block(s, f, 2, s.freq)
    assert str(e.value) == (f"{f.source}, line 5: time 2024-05-15 (series 'b') does not continue the series: step 2 "
                            "after its last value (2024-03-01) is 2024-05-01 (MS); give one row per step")


def test_future_block_integer_times(tmp_path):
    s = read_series(write(tmp_path / "d.csv", "t,y,promo\n1,1,0\n2,2,0\n3,3,1\n4,,1\n5,,0\n7,,1\n"),
                    targets=["y"], future_features=["promo"], time_col="t", future_rows="split")
    times, values = future_block(s, s.future, 2, None)
    assert times.tolist() == [[4, 5]] and values[0, :, 0].tolist() == [1, 0]
    with pytest.raises(DataError, match=r"d.csv, line 7: time 7 does not continue the series: it is 2 after 5, "
                                        r"one step of 1 is 6; give one row per step"):
        future_block(s, s.future, 3, None)  # a hole the history never had is not a step
    with pytest.raises(DataError, match=r"the data has 3 future rows after its last value \(3\), need 4 "
                                        r"\(the forecast's steps\): add rows up to 7"):
        future_block(s, s.future, 4, None)
    half = read_series(write(tmp_path / "e.csv", "t,y,promo\n10,1,0\n20,2,0\n30,3,1\n40,,1\n45,,0\n"),
                       targets=["y"], future_features=["promo"], time_col="t", future_rows="split")
    with pytest.raises(DataError, match=r"e.csv, line 6: time 45 does not continue the series: it is 5 after 40, "
                                        r"not a whole number of steps of 10; give one row per step"):
        future_block(half, half.future, 2, None)


def business_hours(tmp_path, first: str, name: str, shift_second=None) -> tuple[frame.SeriesSet, pd.DatetimeIndex]:
    """16 observed rows of 8 hours a day from `first`, then 3 future rows (the third day's first)."""
    hours = pd.date_range(first, periods=8, freq="h")
    days = hours.append(hours + pd.Timedelta(days=1)).append(hours + pd.Timedelta(days=2))
    observed, ahead = days[:16], days[16:19]
    written = ahead if shift_second is None else ahead.insert(1, ahead[1] + shift_second).delete(2)
    text = "time,y,promo\n" + "".join(f"{t},{k},0\n" for k, t in enumerate(observed))
    text += "".join(f"{t},,1\n" for t in written)
    path = write(tmp_path / name, text)
    return read_series(path, targets=["y"], future_features=["promo"], future_rows="split"), ahead


def test_future_block_business_hours_jump_overnight(tmp_path):
    s, ahead = business_hours(tmp_path, "2024-01-01 08:00", "b.csv")  # 08:00-15:00: no pandas alias
    assert s.freq is None and s.step == 3600 * 10**9
    times, _ = future_block(s, s.future, 3, s.freq)
    np.testing.assert_array_equal(times[0], ahead.as_unit("ns").asi8)  # 15:00 -> 08:00 next day: 17 whole hours
    s, _ = business_hours(tmp_path, "2024-01-01 08:00", "c.csv", pd.Timedelta(minutes=30))
    with pytest.raises(DataError, match=r"c.csv, line 19: time 2024-01-03 09:30:00 does not continue the series: "
                                        r"it is 1h 30min after 2024-01-03 08:00:00, not a whole number of steps of "
                                        r"1h; give one row per step"):
        future_block(s, s.future, 3, s.freq)


def test_future_block_business_hour_alias_is_exact(tmp_path):
    s, ahead = business_hours(tmp_path, "2024-01-01 09:00", "b.csv")  # 09:00-16:00: pandas' bh
    assert s.freq == "bh"
    np.testing.assert_array_equal(future_block(s, s.future, 3, s.freq)[0][0], ahead.as_unit("ns").asi8)
    s, _ = business_hours(tmp_path, "2024-01-01 09:00", "c.csv", pd.Timedelta(hours=2))
    with pytest.raises(DataError, match=r"line 20: time 2024-01-03 11:00:00 does not continue the series: step 2 "
                                        r"after its last value \(2024-01-02 16:00:00\) is 2024-01-03 10:00:00 \(bh\)"):
        future_block(s, s.future, 3, s.freq)


def test_future_block_fixed_frequency_is_exact(tmp_path):
    text = "time,y,promo\n" + "".join(f"2024-01-01 {h:02d}:00,{h},0\n" for h in range(6)) + \
        "2024-01-01 06:00,,1\n2024-01-01 08:00,,1\n"
    s = read_series(write(tmp_path / "h.csv", text), targets=["y"], future_features=["promo"], future_rows="split")
    assert s.freq == "h"
    assert future_block(s, s.future, 1, "h")[0].tolist() == [[pd.Timestamp("2024-01-01 06:00").value]]
    with pytest.raises(DataError, match=r"line 9: time 2024-01-01 08:00:00 does not continue the series: step 2 "
                                        r"after its last value \(2024-01-01 05:00:00\) is 2024-01-01 07:00:00 \(h\)"):
        future_block(s, s.future, 2, "h")


# ----------------------------------------------------------------------------------------------
# property: what is written comes back


@st.composite
def panels(draw):
    n_series = draw(st.integers(1, 4))
    out = []
    for k in range(n_series):
        n_obs = draw(st.integers(1, 6))
        n_future = draw(st.integers(0, 4))
        obs = draw(st.lists(st.integers(-1000, 1000), min_size=n_obs, max_size=n_obs))
        fut = draw(st.lists(st.integers(0, 9), min_size=n_obs + n_future, max_size=n_obs + n_future))
        out.append((f"s{k}", obs, fut))
    return out, draw(st.randoms(use_true_random=False)), draw(st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=panels())
def test_split_gives_back_exactly_the_observed_and_the_future_rows(tmp_path, case):
    series, rng, quote = case
    rows = []
    for sid, obs, fut in series:
        for k, v in enumerate(fut):
            y = str(obs[k]) if k < len(obs) else ""
            rows.append(f'{sid if not quote else chr(34) + sid + chr(34)},{100 + k},{y},{v}')
    rng.shuffle(rows)
    path = write(tmp_path / "g.csv", "id,t,y,promo\n" + "\n".join(rows) + "\n")
    s = read_series(path, targets=["y"], future_features=["promo"], id_col="id", time_col="t", future_rows="split")
    assert s.ids == tuple(sid for sid, _, _ in series)
    for i, (_, obs, fut) in enumerate(series):
        a, b = s.starts[i], s.starts[i + 1]
        assert s.values[a:b, 0].tolist() == obs and s.times[a:b].tolist() == list(range(100, 100 + len(obs)))
        assert s.values[a:b, 1].tolist() == fut[: len(obs)]
        fa, fb = s.future.starts[i], s.future.starts[i + 1]
        assert s.future.values[fa:fb, 0].tolist() == fut[len(obs):]
        assert s.future.times[fa:fb].tolist() == list(range(100 + len(obs), 100 + len(fut)))


def test_hourly_data_of_eight_hours_a_day_off_business_hours_reads_without_a_freq(tmp_path):
    """pandas infers 'bh' (09:00-17:00) for 08:00-15:00 stamps; the reader refused the first time as off
    that grid. The alias is taken only when the stamps lie on it."""
    hours = pd.date_range("2024-01-01 08:00", periods=8, freq="h")
    stamps = hours.append(hours + pd.Timedelta(days=1))
    path = write(tmp_path / "h.csv", "time,y\n" + "".join(f"{t},{k}\n" for k, t in enumerate(stamps)))
    s = read_series(path, targets=["y"])
    assert s.freq is None and s.step == 3600 * 10**9 and len(s.times) == 16


@settings(max_examples=200, deadline=None)
@given(masks=st.lists(st.lists(st.booleans(), min_size=1, max_size=12), min_size=1, max_size=6),
       walk=st.sampled_from([0, 1, 2, 64]))
def test_rows_after_last_value_walking_back_or_from_every_position(masks, walk):
    """The walk back from each series' end and the fallback over all rows agree with a plain loop."""
    has = np.array([b for m in masks for b in m], dtype=bool)
    starts = np.concatenate([[0], np.cumsum([len(m) for m in masks])]).astype(np.int64)
    expected = [len(m) - 1 - max(i for i, b in enumerate(m) if b) if any(m) else -1 for m in masks]
    assert frame._rows_after_last_value(has, starts, walk).tolist() == expected
