"""`lstm evaluate --plot FILE.png|.pdf|.svg`: one panel per (series, target), up to PANEL_LIMIT,
with the recent history, the held-out actuals, the model's forecast at every backtest origin (its
widest conformal interval shaded for a model with intervals, else the quantile interval of a quantile
model) and the seasonal-naive forecast faintly for reference.

matplotlib is the optional extra `lstm-cli[plot]`, imported only here and only when a plot is
asked for, through its object API and the Agg canvas: no pyplot, no display, no global backend
switch. The file's suffix picks the format (plot_format, checked before any work: a PNG under a
.pdf name would open nowhere); render returns the file's bytes; the caller writes them atomically.
No creation date, tool name or random ids are embedded (SVG ids are salted with a constant), so
the same evaluation gives the same bytes."""

from __future__ import annotations

import io
import math
import os

import numpy as np

from lstm_cli.errors import MissingDependencyError, UsageError, shown

PANEL_LIMIT = 12
DPI = 100
PANEL_WIDTH = 7.2  # inches per panel column
PANEL_HEIGHT = 3.4  # inches per panel row
HEADER_HEIGHT = 0.9  # inches for the figure title and the legend
INSTALL = "pip install 'lstm-cli[plot]'"
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}  # suffix -> matplotlib format
# what each format must not embed for reproducible bytes (matplotlib's metadata keys per format)
_NO_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
                "svg": {"Creator": None, "Date": None}}

FORECAST_COLOR = "#1f77b4"
ACTUAL_COLOR = "#222222"
NAIVE_COLOR = "#888888"
IN_SAMPLE_LABEL = "actual (in-sample: seen in training)"


def require_matplotlib() -> None:
    """MissingDependencyError (exit 69) naming the extra to install when matplotlib is missing."""
    try:
        _import_matplotlib_away_from_cwd()
    except ImportError:
        raise MissingDependencyError(f"--plot needs matplotlib: {INSTALL}") from None


def _import_matplotlib_away_from_cwd() -> None:
    """Import matplotlib with a private empty directory as the working directory, and come back at
    once: at import it reads ./matplotlibrc first, which in a shared folder is anyone's file (a FIFO
    hangs the import, /dev/zero behind a symlink fills the memory, bad keys print on stderr). The
    user's own $MATPLOTLIBRC and ~/.config/matplotlib are still read (render ignores them too)."""
    import sys

    if sys.modules.get("matplotlib") is not None:  # read its matplotlibrc already: the rest reads none
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
        return
    import shutil
    import tempfile

    try:  # a descriptor: back even to a folder renamed meanwhile or one we may only enter (O_PATH)
        back = os.open(".", getattr(os, "O_PATH", os.O_RDONLY)) if hasattr(os, "fchdir") else os.getcwd()
    except OSError:  # a working directory removed: it holds no matplotlibrc
        back = None
    private = tempfile.mkdtemp(prefix="lstm-cli-matplotlib-")
    try:
        if back is not None:
            os.chdir(private)
        try:
            import matplotlib  # noqa: F401
            from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
            from matplotlib.figure import Figure  # noqa: F401
        finally:
            if isinstance(back, int):
                os.fchdir(back)
            elif back is not None:
                os.chdir(back)
    finally:
        if isinstance(back, int):
            os.close(back)
        shutil.rmtree(private, ignore_errors=True)


def plot_format(path) -> str:
    """The format --plot PATH asks for by its suffix (case-insensitive); UsageError (exit 2) for
    another or no suffix, before any work."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in FORMATS:
        names = ", ".join(list(FORMATS)[:-1]) + f" or {list(FORMATS)[-1]}"
        got = f"not {suffix}" if suffix else "it has no suffix"
        raise UsageError(f"--plot {os.fspath(path)}: the file name must end in {names}, the format written "
                         f"({got}); rename the plot file")
    return FORMATS[suffix]


def grid(n_panels: int) -> tuple[int, int]:
    """(rows, columns) of the panel grid: one column up to 2 panels, two up to 8, then three."""
    cols = 1 if n_panels <= 2 else 2 if n_panels <= 8 else 3
    return math.ceil(max(n_panels, 1) / cols), cols


def figure_pixels(n_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG for n panels."""
    rows, cols = grid(n_panels)
    return round(cols * PANEL_WIDTH * DPI), round((rows * PANEL_HEIGHT + HEADER_HEIGHT) * DPI)


def _x(times: np.ndarray, time_kind: str) -> np.ndarray:
    return times.astype("datetime64[ns]") if time_kind == "datetime" else times


def label(text) -> str:
    """A user's string (an id, a column or file name) as the plot shows it: quoted as messages quote
    it when it holds control or bidi characters (U+202E would reverse the figures beside it), and
    with '$' escaped so that matplotlib does not parse it as math."""
    return shown(text).replace("$", r"\$")


def _fmt(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.3g}"


def band_label(ev) -> str | None:
    """The legend's name of the shaded band (evaluate.PanelOrigin lo/hi): the widest conformal level,
    else the quantile model's outermost quantiles, else None (nothing is shaded)."""
    if getattr(ev, "interval_kind", None) == "conformal" and ev.interval_levels:
        return f"{max(ev.interval_levels):g}% conformal interval"
    return f"interval q{ev.quantiles[0]:g}–q{ev.quantiles[-1]:g}" if len(ev.quantiles) > 1 else None


def render(ev, title: str, fmt: str = "png") -> bytes:
    """The evaluation's panels (ev.panels, see evaluate.Panel) as the bytes of a `fmt` file
    (a value of FORMATS), drawn with matplotlib's built-in defaults: a matplotlibrc in the working
    directory or the user's config (anyone's file, in a shared folder) changes nothing, and the
    same evaluation gives the same bytes on every host."""
    require_matplotlib()
    import matplotlib

    defaults = {k: v for k, v in matplotlib.rcParamsDefault.items() if k != "backend"}
    with matplotlib.rc_context(defaults):
        return _render(ev, title, fmt)


def _render(ev, title: str, fmt: str) -> bytes:
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = ev.panels
    rows, cols = grid(len(panels))
    width, height = figure_pixels(len(panels))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    q_label = band_label(ev)
    handles: dict[str, object] = {}
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_visible(False)
            continue
        p = panels[i]
        x = _x(p.times, ev.time_kind)
        cut = p.first_origin
        (h,) = ax.plot(x[: cut], p.values[: cut], color=ACTUAL_COLOR, lw=1.2)
        handles.setdefault("history", h)
        # the actuals after the first origin, joined to the last history point: those up to the model's
        # last training time (seen_until) are in-sample, hollow markers; only the rest are held out
        seen = min(max(p.seen_until, cut), len(x))
        if seen > cut:
            (h,) = ax.plot(x[max(cut - 1, 0) : seen], p.values[max(cut - 1, 0) : seen], color=ACTUAL_COLOR,
                           lw=1.2, ls="-", marker="o", ms=3, markerfacecolor="white")
            handles.setdefault(IN_SAMPLE_LABEL, h)
        if seen < len(x):
            (h,) = ax.plot(x[max(seen - 1, 0):], p.values[max(seen - 1, 0):], color=ACTUAL_COLOR, lw=1.2, ls="-",
                           marker="o", ms=2.5)
            handles.setdefault("actual (held out)", h)
        for o in p.origins:
            xs = x[o.start : o.start + len(o.lstm)]
            if len(xs) < len(o.lstm):  # never: every origin's horizon has actuals
                continue
            ax.axvline(x[o.start], color=NAIVE_COLOR, lw=0.8, ls=":", alpha=0.8)
            if o.lo is not None and q_label:
                h = ax.fill_between(xs, o.lo, o.hi, color=FORECAST_COLOR, alpha=0.18, lw=0)
                handles.setdefault(q_label, h)
            (h,) = ax.plot(xs, o.seasonal_naive, color=NAIVE_COLOR, lw=1.0, ls="--", alpha=0.7)
            handles.setdefault("seasonal naive", h)
            (h,) = ax.plot(xs, o.lstm, color=FORECAST_COLOR, lw=1.8)
            handles.setdefault("lstm forecast" if len(p.origins) == 1 else "lstm forecast (each origin)", h)
        name = f"{label(p.series)} · {label(p.target)}" if ev.id_col else label(p.target)
        ax.set_title(f"{name}   MASE lstm {_fmt(p.mase.get('lstm', float('nan')))}, "
                     f"seasonal naive {_fmt(p.mase.get('seasonal_naive', float('nan')))}", fontsize=10, loc="left")
        ax.grid(True, color="#dddddd", lw=0.6)
        ax.tick_params(labelsize=8)
        ax.margins(x=0.01)
        if ev.time_kind == "datetime":
            locator = AutoDateLocator(minticks=4, maxticks=9)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=9, integer=True))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    if ev.origins > 1:
        title += f"\nMASE in the panel titles: mean over the {ev.origins} origins"
    fig.suptitle(title, fontsize=11)
    order = ["history", IN_SAMPLE_LABEL, "actual (held out)", "lstm forecast", "lstm forecast (each origin)", q_label, "seasonal naive"]
    labels = [k for k in order if k in handles]
    fig.legend([handles[k] for k in labels], labels, loc="outside lower center", ncols=len(labels) if cols > 1 else 3,
               fontsize=9,
               frameon=False)
    buf = io.BytesIO()
    with rc_context({"svg.hashsalt": "lstm"}):  # else random element ids in every SVG
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=_NO_METADATA[fmt])
    return buf.getvalue()
