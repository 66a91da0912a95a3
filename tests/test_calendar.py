"""lstm_cli.calendar: the --calendar option, which components each step allows, the derived sin/cos
and holiday columns (hand-checked dates, and pandas as the oracle of the phases), --holidays codes
and the missing-package path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_cli import calendar
from lstm_cli.errors import EXIT_MISSING_DEPENDENCY, DataError, MissingDependencyError, UsageError

DAY = calendar.DAY_NS
HOUR = 3600 * 10**9
MINUTE = 60 * 10**9
# most common differences, as frame.SeriesSet.step holds them per frequency
STEPS = {"5min": 5 * MINUTE, "hourly": HOUR, "daily": DAY, "weekly": 7 * DAY, "monthly": 31 * DAY,
         "quarterly": 92 * DAY, "yearly": 365 * DAY}


def ns(*stamps: str) -> np.ndarray:
    return np.array(stamps, dtype="datetime64[ns]").astype(np.int64)


def phases(out: np.ndarray, column: int) -> np.ndarray:
    """The phase in [0, 1) back from the sin/cos pair of the column-th component."""
    return np.mod(np.arctan2(out[:, 2 * column], out[:, 2 * column + 1]) / (2 * np.pi), 1.0)


# ----------------------------------------------------------------------------------------------
# parse_option


def test_parse_option_gives_auto_none_and_lists_in_component_order():
    assert calendar.parse_option("auto") == "auto"
    assert calendar.parse_option(" NONE ") == "none"
    assert calendar.parse_option("month,hour") == ("hour", "month")
    assert calendar.parse_option(" Hour , MONTH") == ("hour", "month")
    assert calendar.parse_option("dayofyear") == ("dayofyear",)


@pytest.mark.parametrize("text, named", [
    ("hours", "'hours' (did you mean hour?)"),
    ("weekday", "'weekday'"),
    ("hour,,month", "empty item"),
    ("hour,", "empty item"),
    ("", "empty item"),
    ("hour,HOUR", "lists hour twice"),
    ("auto,hour", "auto stands alone"),
    ("none,month", "none stands alone"),
])
def test_parse_option_refuses_bad_items_naming_them_and_the_valid_names(text, named):
    with pytest.raises(UsageError) as e:
        calendar.parse_option(text)
    message = str(e.value)
    assert named in message
    assert "hour, dayofweek, dayofyear, month" in message or "twice" in message
    assert "\n" not in message


def test_parse_option_message_stays_one_line_for_control_characters():
    with pytest.raises(UsageError) as e:
        calendar.parse_option("hour\n,x\x1b[31m")
    assert str(e.value).isprintable()


@settings(max_examples=200, deadline=None)
@given(picked=st.lists(st.sampled_from(calendar.COMPONENTS), min_size=1, unique=True).flatmap(st.permutations),
       data=st.data())
def test_parse_option_any_order_case_and_spacing_of_valid_names_gives_the_same_tuple(picked, data):
    spaces = st.text(alphabet=" \t", max_size=2)
    items = [data.draw(spaces) + "".join(c.upper() if data.draw(st.booleans()) else c for c in name)
             + data.draw(spaces) for name in picked]
    assert calendar.parse_option(",".join(items)) == tuple(c for c in calendar.COMPONENTS if c in picked)


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_parse_option_anything_else_raises_only_usage_error(text):
    items = [item.strip().lower() for item in text.split(",")]
    valid = (len(items) == 1 and items[0] in ("auto", "none")) or (
        all(item in calendar.COMPONENTS for item in items) and len(set(items)) == len(items))
    try:
        result = calendar.parse_option(text)
    except UsageError as e:
        assert not valid
        assert str(e).isprintable()
    else:
        assert valid
        assert result in ("auto", "none") or set(result) <= set(calendar.COMPONENTS)


# ----------------------------------------------------------------------------------------------
# allowed and resolve


@pytest.mark.parametrize("frequency, components", [
    ("5min", ("hour", "dayofweek", "dayofyear")),
    ("hourly", ("hour", "dayofweek", "dayofyear")),
    ("daily", ("dayofweek", "dayofyear")),
    ("weekly", ("dayofyear",)),
    ("monthly", ("month",)),
    ("quarterly", ("month",)),
    ("yearly", ()),
])
def test_allowed_components_per_frequency(frequency, components):
    assert calendar.allowed(STEPS[frequency], "datetime") == components


def test_allowed_edges_of_the_three_steps_per_period_rule():
    assert "hour" in calendar.allowed(8 * HOUR, "datetime")
    assert "hour" not in calendar.allowed(8 * HOUR + 1, "datetime")
    assert "dayofweek" in calendar.allowed(56 * HOUR, "datetime")
    assert "dayofweek" not in calendar.allowed(56 * HOUR + 1, "datetime")
    assert calendar.allowed(27 * DAY, "datetime") == ("dayofyear",)
    assert calendar.allowed(28 * DAY, "datetime") == ("month",)
    assert calendar.allowed(123 * DAY, "datetime") == ("month",)  # 4 months: 3 steps a year
    assert calendar.allowed(184 * DAY, "datetime") == ()  # half-yearly: 2 steps a year


def test_integer_time_and_unknown_step_allow_nothing():
    assert calendar.allowed(1, "integer") == ()
    assert calendar.allowed(DAY, "integer") == ()
    assert calendar.allowed(0, "datetime") == ()
    assert calendar.resolve("auto", step=1, time_kind="integer", span=10**6) == ()
    assert calendar.resolve("none", step=HOUR, time_kind="datetime", span=10 * calendar.YEAR_NS) == ()


@pytest.mark.parametrize("frequency, rows, expected", [
    ("hourly", 47, ()),
    ("hourly", 48, ("hour",)),
    ("hourly", 24 * 14, ("hour", "dayofweek")),
    ("5min", 288 * 2, ("hour",)),
    ("daily", 13, ()),
    ("daily", 14, ("dayofweek",)),
    ("daily", 729, ("dayofweek",)),
    ("daily", 730, ("dayofweek", "dayofyear")),  # 2022-01-01..2023-12-31
    ("weekly", 103, ()),
    ("weekly", 104, ("dayofyear",)),  # the closest a weekly grid gets to two years
    ("yearly", 50, ()),
])
def test_auto_keeps_the_components_whose_period_the_history_covers_twice(frequency, rows, expected):
    step = STEPS[frequency]
    assert calendar.resolve("auto", step=step, time_kind="datetime", span=(rows - 1) * step) == expected


@pytest.mark.parametrize("freq, rows, expected", [
    ("MS", 23, ()), ("MS", 24, ("month",)), ("ME", 24, ("month",)),
    ("QS", 7, ()), ("QS", 8, ("month",)), ("QE-DEC", 8, ("month",)),
])
def test_auto_on_calendar_months_counts_months_not_days(freq, rows, expected):
    stamps = pd.date_range("2019-01-01", periods=rows, freq=freq).as_unit("ns").asi8
    step = int(pd.Series(np.diff(stamps)).mode().iloc[0])
    span = int(stamps[-1] - stamps[0])
    assert calendar.resolve("auto", step=step, time_kind="datetime", span=span) == expected


def test_a_list_is_kept_whatever_the_span_in_component_order():
    assert calendar.resolve(("dayofyear", "hour"), step=HOUR, time_kind="datetime", span=HOUR) == (
        "hour", "dayofyear")


@pytest.mark.parametrize("component, frequency, says", [
    ("hour", "daily", ["hour", "1 day", "at most 8 hours", "supports dayofweek, dayofyear"]),
    ("dayofweek", "weekly", ["dayofweek", "1 week", "at most 56 hours", "supports dayofyear"]),
    ("dayofyear", "monthly", ["dayofyear", "1 month", "shorter than 28 days", "supports month"]),
    ("dayofyear", "quarterly", ["dayofyear", "3 months", "supports month"]),
    ("month", "daily", ["month", "1 day", "28 days or more"]),
    ("month", "yearly", ["month", "1 year", "at most 4 months", "--calendar none"]),
    ("hour", "5min", None),
])
def test_a_listed_component_the_step_does_not_support_is_a_usage_error_naming_step_and_why(component,
                                                                                          frequency, says):
    run = lambda: calendar.resolve((component,), step=STEPS[frequency], time_kind="datetime", span=0)  # noqa: E731
    if says is None:
        assert run() == (component,)
        return
    with pytest.raises(UsageError) as e:
        run()
    for part in says:
        assert part in str(e.value)


def test_a_list_with_integer_times_says_calendar_needs_dates():
    with pytest.raises(UsageError, match="--calendar hour needs dates in the time column"):
        calendar.resolve(("hour",), step=1, time_kind="integer", span=1000)


def test_a_list_without_a_step_says_so():
    with pytest.raises(UsageError, match="no series has two rows"):
        calendar.resolve(("dayofweek",), step=0, time_kind="datetime", span=0)


@pytest.mark.parametrize("step, text", [
    (5 * MINUTE, "5 minutes"), (HOUR, "1 hour"), (36 * HOUR, "36 hours"), (DAY, "1 day"), (14 * DAY, "2 weeks"),
    (31 * DAY, "1 month"), (30 * DAY, "1 month"), (92 * DAY, "3 months"), (366 * DAY, "1 year"),
    (1500 * 10**6, "1500 milliseconds"), (7, "7 nanoseconds"),
])
def test_steps_are_described_as_people_say_them(step, text):
    assert calendar.describe_step(step) == text


# ----------------------------------------------------------------------------------------------
# derive: the phases


def test_column_names_are_sin_cos_per_component_then_holiday():
    assert calendar.column_names(("hour", "month"), None) == ("hour_sin", "hour_cos", "month_sin", "month_cos")
    assert calendar.column_names((), "US") == ("holiday",)
    assert calendar.column_names(calendar.COMPONENTS, "DE-BY")[-3:] == ("month_sin", "month_cos", "holiday")


def test_hand_checked_phases():
    times = ns("2024-01-01T00:00", "2024-01-01T06:00", "2024-07-04T00:00", "2023-12-31T12:00",
               "1969-12-29T18:00")
    out = calendar.derive(calendar.COMPONENTS, None, times, HOUR)
    assert out.shape == (5, 8) and out.dtype == np.float64
    np.testing.assert_allclose(out[0], [0, 1, 0, 1, 0, 1, 0, 1], atol=1e-12)  # a Monday 00:00, Jan 1: all 0
    np.testing.assert_allclose(phases(out, 0), [0, 0.25, 0, 0.5, 0.75], atol=1e-12)
    np.testing.assert_allclose(phases(out, 1), [0, 0.25 / 7, 3 / 7, 6.5 / 7, 0.75 / 7], atol=1e-12)
    np.testing.assert_allclose(phases(out, 2)[:4], [0, 0.25 / 366, 185 / 366, 364.5 / 365], atol=1e-12)
    np.testing.assert_allclose(phases(out, 3), [0, 0, 6 / 12, 11 / 12, 11 / 12], atol=1e-12)


def test_phases_match_pandas_for_random_stamps_before_and_after_the_epoch():
    rng = np.random.default_rng(7)
    times = rng.integers(pd.Timestamp("1700-01-01").value, pd.Timestamp("2260-01-01").value, 5000)
    idx = pd.DatetimeIndex(times)
    tod = (idx - idx.normalize()).as_unit("ns").asi8 / DAY
    out = calendar.derive(calendar.COMPONENTS, None, times, HOUR)
    expected = [tod, (idx.day_of_week + tod) / 7, (idx.day_of_year - 1 + tod) / (365 + idx.is_leap_year),
                (idx.month - 1) / 12]
    for column, phase in enumerate(expected):
        angle = 2 * np.pi * np.asarray(phase)
        np.testing.assert_allclose(out[:, 2 * column], np.sin(angle), atol=1e-9)
        np.testing.assert_allclose(out[:, 2 * column + 1], np.cos(angle), atol=1e-9)


def test_month_phase_is_the_same_for_month_starts_and_month_ends():
    starts = pd.date_range("2024-01-01", periods=12, freq="MS").as_unit("ns").asi8
    ends = pd.date_range("2024-01-31", periods=12, freq="ME").as_unit("ns").asi8
    np.testing.assert_array_equal(calendar.derive(("month",), None, starts, 31 * DAY),
                                  calendar.derive(("month",), None, ends, 31 * DAY))


def test_derive_with_nothing_and_with_no_rows():
    assert calendar.derive((), None, ns("2024-01-01"), DAY).shape == (1, 0)
    assert calendar.derive(("hour",), "US", np.zeros(0, dtype=np.int64), HOUR).shape == (0, 3)


def test_a_million_stamps_are_derived_quickly():
    import time

    times = pd.Timestamp("2000-01-01").value + np.arange(10**6, dtype=np.int64) * HOUR // 2  # to 2057
    start = time.perf_counter()
    out = calendar.derive(calendar.COMPONENTS, "US", times, HOUR)
    assert time.perf_counter() - start < 10
    assert out.shape == (10**6, 9) and np.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# derive: holidays


def test_independence_day_is_a_us_holiday_and_epiphany_is_one_in_bavaria_only():
    days = ns("2024-07-04", "2024-07-05", "2024-01-06")
    np.testing.assert_array_equal(calendar.derive((), "US", days, DAY)[:, 0], [1, 0, 0])
    np.testing.assert_array_equal(calendar.derive((), "DE-BY", days, DAY)[:, 0], [0, 0, 1])
    np.testing.assert_array_equal(calendar.derive((), "DE", days, DAY)[:, 0], [0, 0, 0])


def test_intraday_rows_are_one_on_a_holiday_date():
    times = ns("2024-07-03T23:00", "2024-07-04T00:00", "2024-07-04T23:59", "2024-07-05T00:00")
    np.testing.assert_array_equal(calendar.derive((), "US", times, HOUR)[:, 0], [0, 1, 1, 0])


def test_weekly_rows_count_the_holidays_of_their_seven_days():
    times = ns("2024-12-23", "2024-12-30", "2025-01-06")  # Christmas; New Year's Day; none
    np.testing.assert_array_equal(calendar.derive((), "US", times, 7 * DAY)[:, 0], [1, 1, 0])
    np.testing.assert_array_equal(calendar.derive((), "DE", times, 7 * DAY)[:, 0], [2, 1, 0])  # 25, 26 Dec


def test_monthly_rows_count_their_calendar_month_whether_month_start_or_end():
    # US 2024: January has New Year's Day and MLK Day, February Washington's Birthday, March none
    for stamps in (("2024-01-01", "2024-02-01", "2024-03-01"), ("2024-01-31", "2024-02-29", "2024-03-31")):
        np.testing.assert_array_equal(calendar.derive((), "US", ns(*stamps), 31 * DAY)[:, 0], [2, 1, 0])


def test_quarterly_and_yearly_rows_count_their_calendar_period():
    quarters = ns("2024-01-01", "2024-03-31")  # QS and QE of the same quarter
    np.testing.assert_array_equal(calendar.derive((), "US", quarters, 92 * DAY)[:, 0], [3, 3])
    years = ns("2024-01-01", "2024-12-31")  # YS and YE of 2024: eleven federal holidays
    np.testing.assert_array_equal(calendar.derive((), "US", years, 365 * DAY)[:, 0], [11, 11])


def test_daily_holidays_match_the_package_day_by_day_across_years():
    import holidays

    times = pd.date_range("1999-06-01", "2003-06-01", freq="D").as_unit("ns").asi8
    known = holidays.country_holidays("DE", subdiv="BY", years=range(1999, 2004))
    expected = [float(d in known) for d in pd.DatetimeIndex(times).date]
    np.testing.assert_array_equal(calendar.derive((), "de-by", times, DAY)[:, 0], expected)


# ----------------------------------------------------------------------------------------------
# check_holidays and the optional package


@pytest.mark.parametrize("code, normal", [("US", "US"), ("us", "US"), (" de-by ", "DE-BY"), ("De-By", "DE-BY"),
                                          ("GB-sct", "GB-SCT"), ("fr-zone a", "FR-Zone A")])
def test_holiday_codes_are_case_insensitive_and_normalized(code, normal):
    assert calendar.check_holidays(code) == normal


@pytest.mark.parametrize("code, says", [
    ("XX", ["unknown country 'XX'", "such as US"]),
    ("Germany", ["unknown country 'Germany'"]),
    ("DE-ZZ", ["DE has no subdivision 'ZZ'", "BY"]),
    ("US-", ["empty subdivision"]),
    ("AX-1", ["AX has no subdivision '1'", "no subdivisions"]),
    ("", ["needs a country code"]),
    ("  ", ["needs a country code"]),
    ("-BY", ["unknown country ''"]),
    ("U\nS", ["unknown country 'U\\nS'"]),
])
def test_unknown_holiday_codes_are_usage_errors_naming_them(code, says):
    with pytest.raises(UsageError) as e:
        calendar.check_holidays(code)
    message = str(e.value)
    assert message.isprintable()
    for part in says:
        assert part in message


@pytest.fixture
def without_holidays_package(monkeypatch):
    """As if the optional extra were not installed: `import holidays` raises ImportError."""
    monkeypatch.setitem(sys.modules, "holidays", None)


def test_missing_holidays_package_is_exit_69_saying_what_to_install(without_holidays_package):
    for call in (lambda: calendar.check_holidays("US"),
                 lambda: calendar.derive((), "US", ns("2024-07-04"), DAY)):
        with pytest.raises(MissingDependencyError) as e:
            call()
        assert e.value.exit_code == EXIT_MISSING_DEPENDENCY == 69
        assert str(e.value) == "--holidays needs the holidays package: pip install 'lstm-cli[holidays]'"


@pytest.mark.parametrize("version", ["0.49", "0.9.1", "weird"])
def test_a_holidays_package_older_than_the_extra_asks_is_exit_69_with_its_version(monkeypatch, version):
    import holidays

    monkeypatch.setattr(holidays, "__version__", version)
    with pytest.raises(MissingDependencyError, match=rf"needs holidays>=0.50 \(found {version}\): pip install"):
        calendar.check_holidays("US")


def test_calendar_without_holidays_needs_no_package(without_holidays_package):
    out = calendar.derive(("dayofweek",), None, ns("2024-07-04"), DAY)
    assert out.shape == (1, 2)


def test_importing_the_module_loads_neither_numpy_nor_holidays():
    code = "import sys, lstm_cli.calendar; print('numpy' in sys.modules, 'holidays' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_holiday_dates_are_built_for_every_year_the_steps_reach():
    import holidays

    # a year-end row of 2001 reaches back to January 2001; a year-start row of 2010 ends in 2010
    out = calendar.derive((), "US", ns("2001-12-31", "2010-01-01"), 365 * DAY)
    np.testing.assert_array_equal(out[:, 0], [len(holidays.country_holidays("US", years=year))
                                              for year in (2001, 2010)])
    out = calendar.derive((), "US", ns("2000-12-31"), DAY)  # the next day, 2001-01-01, is not in the step
    assert out[0, 0] == 0


@pytest.mark.parametrize("code, stamps, step, says", [
    ("DE-BY", ("1985-01-01", "1995-01-01"), DAY, "knows them for 1991..2100 only, and the rows reach 1985"),
    ("US", ("2099-01-01", "2101-03-01"), 31 * DAY, "knows them for 1777..2100 only, and the rows reach 2101"),
    ("US", ("2100-06-01",), 244 * DAY, "knows them for 1777..2100 only, and the rows reach 2101"),  # June..January
])
def test_years_the_package_has_no_holidays_for_are_a_data_error_not_zeros(code, stamps, step, says):
    with pytest.raises(DataError, match=f"^--holidays {code}: the holidays package {says}; "):
        calendar.derive((), code, ns(*stamps), step)
