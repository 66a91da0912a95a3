"""Calendar inputs (`lstm train --calendar`, `--holidays`): features derived from the timestamps, so
the model sees the time of day, the weekday, the season and the public holidays for the lookback
AND for the forecast steps without the user supplying future values.

Times are int64 ns since the epoch (naive or UTC), as frame.SeriesSet.times holds them. Each
component is a phase in [0, 1) given to the model as its sine and cosine, so that the end of a
period meets its start (23:00 is next to 00:00, December to January):

    hour       time of day / 1 day                                      period 1 day
    dayofweek  (weekday, Monday = 0, + time of day) / 7                 period 7 days
    dayofyear  (day of year - 1 + time of day) / days in that year      period 1 year
    month      (month - 1) / 12                                         period 12 months

A component is offered only when its period is at least 3 steps (a phase sampled less often than
that cannot be told from noise). Steps of 28 days or more (monthly, quarterly) are counted in
calendar months: they get `month`, shorter steps `dayofyear`, as day of year on a month grid is
the month again with the calendar's jitter. `auto` keeps the components whose period the shortest
series covers at least twice, the least a model can learn a cycle from.

The holiday column counts the days that are public holidays of a country (the `holidays` package,
the optional extra `lstm-cli[holidays]`; observed days off included, as the package lists them) in
each row's step: the dates of [t, t + step) for steps of a day or more, the calendar months of the
row for steps of 28 days or more (a February row counts February's; a row in the second half of
its month, as month, quarter and year ends are, ends its period, one in the first half starts it),
and 1.0 when t's date is a holiday for shorter steps. A step is whole days rounded (36 hours: 2).
"""

from __future__ import annotations

import difflib
import warnings
from typing import TYPE_CHECKING

from lstm_cli.errors import DataError, MissingDependencyError, UsageError, shown

COMPONENTS: tuple[str, ...] = ("hour", "dayofweek", "dayofyear", "month")  # order = column order
HOLIDAY_COLUMN = "holiday"
HOLIDAYS_INSTALL = "pip install 'lstm-cli[holidays]'"
HOLIDAYS_MIN_VERSION = (0, 50)  # as pyproject's extra asks

if TYPE_CHECKING:  # numpy is imported where arrays are made, so that the CLI can parse options first
    import numpy as np

SECOND_NS = 10**9
DAY_NS = 86_400 * SECOND_NS
YEAR_NS = 31_556_952 * SECOND_NS  # the mean Gregorian year, 365.2425 days
MONTH_NS = YEAR_NS // 12
MONTHLY_FROM_NS = 28 * DAY_NS  # steps from here on are counted in calendar months
MIN_STEPS_PER_PERIOD = 3
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)

_MEANING = {"hour": "time of day", "dayofweek": "day of week", "dayofyear": "day of year",
            "month": "month of year"}
_PERIOD_NS = {"hour": DAY_NS, "dayofweek": 7 * DAY_NS, "dayofyear": YEAR_NS}  # month: 12 months
_VALID = f"auto, none or a comma list of {', '.join(COMPONENTS)}"
_UNITS = (("week", 7 * DAY_NS), ("day", DAY_NS), ("hour", 3600 * SECOND_NS), ("minute", 60 * SECOND_NS),
          ("second", SECOND_NS), ("millisecond", 10**6), ("microsecond", 10**3), ("nanosecond", 1))


def _quoted(item: str, limit: int = 40) -> str:
    """An item of the user's text for a one-line message: escaped when unprintable, cut when long."""
    return repr(item) if len(item) <= limit else f"{item[:limit]!r}... ({len(item)} characters)"


def parse_option(text: str) -> str | tuple[str, ...]:
    """The --calendar text as "auto", "none" or the listed components in COMPONENTS order, so that
    "month,hour" and "hour, MONTH" make the same model."""
    items = [item.strip().lower() for item in str(text).split(",")]
    if len(items) == 1 and items[0] in ("auto", "none"):
        return items[0]
    seen = set()
    for item in items:
        if not item:
            raise UsageError(f"--calendar {_quoted(str(text))} has an empty item; give {_VALID}")
        if item in ("auto", "none"):
            raise UsageError(f"--calendar {item} stands alone, it cannot be part of a list; give {_VALID}")
        if item not in COMPONENTS:
            close = difflib.get_close_matches(item, COMPONENTS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"--calendar: unknown component {_quoted(item)}{hint}; give {_VALID}")
        if item in seen:
            raise UsageError(f"--calendar lists {item} twice; give each component once")
        seen.add(item)
    return tuple(c for c in COMPONENTS if c in seen)


def _months(step: int) -> int:
    """The calendar months in one step of 28 days or more (31 days: 1, 92 days: 3, 365 days: 12)."""
    return max(1, (int(step) + MONTH_NS // 2) // MONTH_NS)


def describe_step(step: int) -> str:
    """A step as people say it: "1 month", "3 months", "1 year", "5 minutes", "36 hours"."""
    def plural(n: int, unit: str) -> str:
        return f"{n} {unit}" + ("" if n == 1 else "s")

    if step >= MONTHLY_FROM_NS:
        k = _months(step)
        return plural(k // 12, "year") if k % 12 == 0 else plural(k, "month")
    unit, ns = next((unit, ns) for unit, ns in _UNITS if step % ns == 0)  # ns divides every step
    return plural(step // ns, unit)


def _why_not(component: str, step: int, time_kind: str) -> str | None:
    """Why `component` cannot be derived at this step, or None when it can."""
    if time_kind != "datetime":
        return "needs dates in the time column, and it holds integers"
    if step <= 0:
        return "needs the data's step, and no series has two rows"
    monthly = step >= MONTHLY_FROM_NS
    if component == "dayofyear" and monthly:
        return f"is for steps shorter than 28 days, and the data's step is {describe_step(step)}"
    if component == "month":
        if not monthly:
            return (f"is for steps of 28 days or more (monthly, quarterly), and the data's step is "
                    f"{describe_step(step)}")
        if 12 < MIN_STEPS_PER_PERIOD * _months(step):
            return (f"(month of year) needs at least {MIN_STEPS_PER_PERIOD} steps a year, a step of at most "
                    f"{12 // MIN_STEPS_PER_PERIOD} months, and the data's step is {describe_step(step)}")
        return None
    period = _PERIOD_NS[component]
    if period < MIN_STEPS_PER_PERIOD * step:
        return (f"({_MEANING[component]}) needs at least {MIN_STEPS_PER_PERIOD} steps per period, a step of "
                f"at most {describe_step(period // MIN_STEPS_PER_PERIOD)}, and the data's step is "
                f"{describe_step(step)}")
    return None


def allowed(step: int, time_kind: str) -> tuple[str, ...]:
    """The components this step supports (period >= 3 steps; dayofyear below 28 days, month from
    there); none for integer times, which have no calendar."""
    return tuple(c for c in COMPONENTS if _why_not(c, int(step), time_kind) is None)


def _covered_twice(component: str, step: int, span: int) -> bool:
    """Whether a history of `span` ns (first to last row) holds two periods of the component, counted
    in steps and rounded, as the grid allows: 104 weeks are two years, 729 days are not."""
    if component == "month":
        months = _months(step)
        return (span + months * MONTH_NS // 2) // (months * MONTH_NS) + 1 >= 24 // months
    period = _PERIOD_NS[component]
    return (span + step // 2) // step + 1 >= (2 * period + step // 2) // step


def resolve(option, *, step: int, time_kind: str, span: int) -> tuple[str, ...]:
    """The components a model gets for the parsed --calendar option: "auto" picks the allowed ones
    whose period the shortest series (`span` ns from first to last row) covers twice; a list must
    be allowed at this step, whatever the span (the user asked for it)."""
    step, span = int(step), int(span)
    if option == "none":
        return ()
    if option == "auto":
        return tuple(c for c in allowed(step, time_kind) if _covered_twice(c, step, span))
    for component in option:
        why = _why_not(component, step, time_kind)
        if why:
            usable = allowed(step, time_kind)
            fix = f"this step supports {', '.join(usable)} (or give auto)" if usable else "use --calendar none"
            raise UsageError(f"--calendar {component} {why}; {fix}")
    return tuple(c for c in COMPONENTS if c in option)


def column_names(components, holidays: str | None) -> tuple[str, ...]:
    """The derived columns in the order derive returns them, as info and export show them."""
    names = tuple(f"{c}_{f}" for c in components for f in ("sin", "cos"))
    return names + ((HOLIDAY_COLUMN,) if holidays else ())


def _phases(component: str, days: np.ndarray, time_of_day: np.ndarray) -> np.ndarray:
    """The component's phase in [0, 1) for day numbers since the epoch and fractions of a day."""
    import numpy as np

    if component == "hour":
        return time_of_day
    if component == "dayofweek":
        return (np.mod(days + _EPOCH_WEEKDAY, 7) + time_of_day) / 7.0
    date = days.view("datetime64[D]")
    if component == "month":
        return np.mod(date.astype("datetime64[M]").astype(np.int64), 12) / 12.0
    year = date.astype("datetime64[Y]")
    year_start = year.astype("datetime64[D]").astype(np.int64)
    year_days = (year + 1).astype("datetime64[D]").astype(np.int64) - year_start
    return (days - year_start + time_of_day) / year_days


def derive(components, holidays: str | None, times: np.ndarray, step: int) -> np.ndarray:
    """float64 (len(times), len(column_names(components, holidays))): sin and cos of 2 pi phase per
    component, then the holiday count of each row's step. Vectorized numpy, no pandas."""
    import numpy as np

    times = np.asarray(times, dtype=np.int64)
    days = np.floor_divide(times, DAY_NS)
    time_of_day = np.mod(times, DAY_NS) / DAY_NS
    out = np.empty((len(times), len(column_names(components, holidays))), dtype=np.float64)
    for i, component in enumerate(components):
        angle = 2.0 * np.pi * _phases(component, days, time_of_day)
        out[:, 2 * i] = np.sin(angle)
        out[:, 2 * i + 1] = np.cos(angle)
    if holidays:
        out[:, -1] = _holiday_counts(holidays, days, int(step))
    return out


def _step_days(days: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's step as day numbers [first, end): calendar months from 28 days, whole days from
    1 day, the row's date below."""
    import numpy as np

    if step >= MONTHLY_FROM_NS:
        months = _months(step)
        date = days.view("datetime64[D]")
        month = date.astype("datetime64[M]")
        ends_period = (date - month.astype("datetime64[D]")).astype(np.int64) >= 15  # day 16 or later
        first = month - np.where(ends_period, months - 1, 0)
        return (first.astype("datetime64[D]").astype(np.int64),
                (first + months).astype("datetime64[D]").astype(np.int64))
    return days, days + max(1, (step + DAY_NS // 2) // DAY_NS)


def _holiday_counts(code: str, days: np.ndarray, step: int) -> np.ndarray:
    """The public holidays of `code` in each row's step, by binary search in the sorted holiday
    dates of the years the steps span (the package builds a year at a time)."""
    import numpy as np

    if len(days) == 0:
        return np.zeros(0)
    first, end = _step_days(days, step)
    years = np.array([first.min(), end.max() - 1]).view("datetime64[D]").astype("datetime64[Y]")
    first_year, last_year = (int(y) + 1970 for y in years.astype(np.int64))
    known = _holiday_days(check_holidays(code), first_year, last_year)
    return (np.searchsorted(known, end) - np.searchsorted(known, first)).astype(np.float64)


def _import_holidays():
    """The optional `holidays` package, or MissingDependencyError (exit 69) saying what to install
    (also for a version older than the extra asks, whose API differs)."""
    try:
        import holidays
    except ImportError:
        raise MissingDependencyError(f"--holidays needs the holidays package: {HOLIDAYS_INSTALL}") from None
    version = str(getattr(holidays, "__version__", "0"))
    if tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:2]) < HOLIDAYS_MIN_VERSION:
        raise MissingDependencyError(f"--holidays needs holidays>={'.'.join(map(str, HOLIDAYS_MIN_VERSION))} "
                                     f"(found {shown(version)}): {HOLIDAYS_INSTALL}")
    return holidays


def _holiday_days(code: str, first_year: int, last_year: int) -> np.ndarray:
    """Sorted day numbers since the epoch of the public holidays of a checked code in those years.
    Years outside those the package knows for the code are a DataError: it lists no holidays there,
    and zeros would tell the model that those years had none."""
    import numpy as np

    country, _, subdiv = code.partition("-")
    with warnings.catch_warnings():  # deprecation notes of the package are not the user's business
        warnings.simplefilter("ignore")
        found = _import_holidays().country_holidays(country, subdiv=subdiv or None,
                                                     years=range(first_year, last_year + 1))
    known_from, known_to = getattr(found, "start_year", first_year), getattr(found, "end_year", last_year)
    if first_year < known_from or last_year > known_to:
        reach = first_year if first_year < known_from else last_year
        raise DataError(f"--holidays {code}: the holidays package knows them for {known_from}..{known_to} "
                        f"only, and the rows reach {reach}; give rows within those years or drop --holidays")
    return np.array(sorted(found), dtype="datetime64[D]").astype(np.int64)


def _some(names, limit: int = 8) -> str:
    names = list(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_holidays(code: str) -> str:
    """The --holidays code ("US", "de-by": country, then an optional subdivision after '-') in the
    package's spelling ("DE-BY"), checked against what the installed package supports."""
    text = str(code).strip()
    if not text:
        raise UsageError("--holidays needs a country code such as US, GB, DE or DE-BY (country-subdivision)")
    supported = _import_holidays().list_supported_countries()
    country, dash, subdiv = (part.strip() for part in text.partition("-"))
    countries = {name.upper(): name for name in supported}
    if country.upper() not in countries:
        close = difflib.get_close_matches(country.upper(), countries, n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UsageError(f"--holidays: unknown country {_quoted(country)}{hint}; give an ISO 3166 code "
                         f"such as US, GB, DE, FR, JP, optionally with a subdivision: DE-BY")
    country = countries[country.upper()]
    if not dash:
        return country
    if not subdiv:
        raise UsageError(f"--holidays {shown(text)} has an empty subdivision; give {country} alone or "
                         f"{country}-SUBDIVISION")
    subdivs = {name.upper(): name for name in supported[country]}
    if subdiv.upper() not in subdivs:
        known = f"its subdivisions are {_some(supported[country])}" if subdivs else "it has no subdivisions"
        raise UsageError(f"--holidays: {country} has no subdivision {_quoted(subdiv)}; {known} "
                         f"(or give {country} alone)")
    return f"{country}-{subdivs[subdiv.upper()]}"
