"""The `lstm` command: parse options, call one pipeline function, render the result.

Heavy modules (numpy, pandas, numba) are imported inside the commands, so `lstm --help`
answers at once. Library errors become one line on stderr and a documented exit code.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time

import click

from lstm_cli import __version__, limits
from lstm_cli.errors import (
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_IO,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    Interrupted,
    LstmError,
    shown,
)
from lstm_cli.runtime import (
    IO_ERRNOS,
    _ClosedStdout,
    discard_stdout,
    io_error_message,
    memory_error_message,
    one_line_click_error,
    say,
)
from lstm_cli.runtime import prepare_jit_cache as _prepare_runtime

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


def _debug_enabled(ctx: click.Context | None) -> bool:
    if os.environ.get("LSTM_DEBUG", "") not in ("", "0"):
        return True
    root = ctx.find_root() if ctx else None
    return bool(root and root.params.get("debug"))


class LstmGroup(click.Group):
    """Translates library errors into `lstm: message` and their exit codes, for every command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.ClickException as e:
            one_line_click_error(e, ctx)  # one line `lstm: train: ...; see lstm train --help`
            raise
        except LstmError as e:
            say(f"lstm: {e}")  # a stderr that fails drops the message: the exit code stays the error's
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            say("lstm: interrupted")
            ctx.exit(EXIT_SIGINT)
        except BrokenPipeError:
            discard_stdout()  # the reader of stdout went away (`| head`): not an error of ours
            ctx.exit(0)
        except MemoryError as e:  # whatever allocated it: too big a job more than a bug
            if _debug_enabled(ctx):
                raise
            say(memory_error_message(e))
            ctx.exit(EXIT_IO)
        except Exception as e:  # a bug: say so, and how to see it
            if isinstance(e, OSError) and e.errno in IO_ERRNOS and not _debug_enabled(ctx):
                # stdout (or another stream outside atomic writes) failed: disk full, /dev/full, EIO
                say(io_error_message(e))
                if not isinstance(sys.stdout, _ClosedStdout):
                    discard_stdout()
                ctx.exit(EXIT_IO)
            if _debug_enabled(ctx):
                raise
            say(f"lstm: internal error ({type(e).__name__}: {e}); this is a bug. "
                "Rerun with --debug or LSTM_DEBUG=1 to see the traceback")
            ctx.exit(EXIT_INTERNAL)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as e:  # the group's own options (--config PATH)
            one_line_click_error(e)
            raise

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """Also keeps the command's arguments: notes printed before it parses them follow its --quiet."""
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta["lstm.command"] = (name, command, list(rest))
        return name, command, rest


@click.group(cls=LstmGroup, epilog=EXIT_CODE_HELP, context_settings={"help_option_names": ["--help"]})
@click.version_option(__version__, "--version", prog_name="lstm", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors (or set LSTM_DEBUG=1).")
@click.option("--config", "config_file", envvar="LSTM_CONFIG", type=click.Path(dir_okay=False),
              help="TOML file of options, one [section] per command (or LSTM_CONFIG). "
                   "Precedence: flags > LSTM_<OPTION> variables > this file > defaults.")
@click.pass_context
def cli(ctx, debug, config_file):
    """Sequence prediction from the command line: train an LSTM on a CSV of time series,
    forecast the next steps, export the model.

    \b
    Example:
      lstm train sales.csv --target sales --horizon 12 --out sales.lstm
      lstm predict sales.lstm sales.csv > forecast.csv
    """
    import warnings

    if not debug and os.environ.get("LSTM_DEBUG", "") in ("", "0"):
        warnings.simplefilter("ignore")  # a successful cron run prints nothing unexpected
    from lstm_cli import config, memory, runtime
    from lstm_cli.errors import OutOfMemory

    try:
        name, _, args = ctx.meta.get("lstm.command", (None, None, []))
        if "--help" not in args and (problem := memory.address_space_problem(name)):
            raise OutOfMemory(problem)
        notes = _prepare_runtime()
        file_values = config.read_file(config_file) if config_file else {}
        ctx.default_map, sources = config.resolve(_configurable(), file_values, config_file)
    except LstmError as e:
        say(f"lstm: {e}")
        ctx.exit(e.exit_code)
    notes += config.unknown_variables(_configurable())
    if notes and not runtime.command_is_quiet(ctx):
        for note in notes:
            say(f"lstm: note: {note}")
    ctx.meta["lstm.config_sources"] = sources
    ctx.meta["lstm.config_file"] = config_file
    from lstm_cli import atomic  # no output of the command (--out, --plot, an export) may replace the config

    ctx.call_on_close(atomic.protect_inputs({config_file: " (the --config file)"} if config_file else {}))


def _configurable() -> dict[str, click.Command]:
    return {name: cmd for name, cmd in cli.commands.items() if not isinstance(cmd, click.Group)}


def _split_names(values: tuple[str, ...]) -> tuple[str, ...]:
    """--target a --target b and --target a,b mean the same."""
    names = []
    for v in values:
        names += [p.strip() for p in v.split(",") if p.strip()]
    return tuple(dict.fromkeys(names))


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf: every comparison with nan is false, so the range
    lets it through (and inf where there is no maximum), and the run fails after training, when the
    model header cannot store the value."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def _int_range(name: str) -> click.IntRange:
    """The option's range from lstm_cli.limits (the model header's training.params check uses it too)."""
    return click.IntRange(*limits.INTEGERS[name])


def _float_range(name: str) -> FiniteFloatRange:
    lo, hi, lo_open, hi_open = limits.FLOATS[name]
    return FiniteFloatRange(lo, hi, min_open=lo_open, max_open=hi_open)


class DurationType(click.ParamType):
    """A length of time with its unit (90s, 10m, 2h, 1.5d), in seconds. A bare number is refused,
    from the command line, LSTM_ variables or a config file alike: `--max-age 2` meant 2 hours as
    often as 2 seconds. At most MAX_YEARS, so deadlines and ns timestamps cannot overflow; at least
    MIN_SECONDS (a millisecond), as `0s` is refused: 1e-10 s passed as a zero that messages showed as 0s."""

    name = "duration"
    units = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    MAX_YEARS = 100
    MIN_SECONDS = 0.001

    def convert(self, value, param, ctx):
        if isinstance(value, (bool, int, float)):  # only a TOML file gives numbers
            self.fail(f"{value!r} has no unit; write it as a string with one, such as \"{value}s\" or "
                      f"\"{value}h\"", param, ctx)
        if not isinstance(value, str):  # a TOML date or time
            self.fail(f"{value} is a date or time, not a duration; write one as a string with a unit, such as "
                      "\"90s\" or \"2h\"", param, ctx)
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*", str(value), re.ASCII)
        if m and not m.group(2):
            self.fail(f"{value!r} has no unit; write {m.group(1)}s, {m.group(1)}m or {m.group(1)}h", param, ctx)
        if not m or float(m.group(1)) <= 0:
            self.fail(f"{value!r} is not a duration like 90s, 10m or 2h", param, ctx)
        seconds = float(m.group(1)) * self.units[m.group(2)]
        if seconds < self.MIN_SECONDS:
            self.fail(f"{value!r} is shorter than a millisecond; give at least 0.001s", param, ctx)
        if seconds > self.MAX_YEARS * 365.25 * 86400:
            self.fail(f"{value!r} is longer than {self.MAX_YEARS} years; give a shorter duration", param, ctx)
        return seconds


class QuantilesType(click.ParamType):
    name = "quantiles"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            qs = tuple(float(p) for p in str(value).split(",") if p.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers like 0.1,0.5,0.9", param, ctx)
        if not qs or any(not 0.0 < q < 1.0 for q in qs) or list(qs) != sorted(set(qs)):
            self.fail(f"{value!r}: quantiles must be increasing numbers strictly between 0 and 1", param, ctx)
        return qs


class StopFlag:
    """should_stop for training, and what a SIGINT/SIGTERM does at each phase of a run.

    While the epochs run (`deferring`), the first signal asks to stop after the current batch
    (the checkpoint of the last finished epoch stays; nothing is saved) and a second one raises
    Interrupted at once. Before (reading the data, waiting for the lock) and while the model is
    saved, a signal raises Interrupted at once: nothing was written yet, or the atomic write
    leaves the previous file. Once the model is saved (`done`) a signal is only recorded.
    --time-limit stops cleanly and keeps the best model. `out` (--out) lets the messages say
    whether a previous model was kept or none was written."""

    def __init__(self, time_limit: float | None, epochs: int | None = None, out: str | None = None):
        self.signum = None
        self.deadline = time.monotonic() + time_limit if time_limit else None
        self.epochs = epochs
        self.out = out
        self.epoch = 0  # last finished epoch (counting resumed ones)
        self.phase = "start"  # start -> training -> saving -> done
        self._previous = {}

    def __enter__(self):
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def deferring(self) -> bool:
        return self.phase == "training"

    def kept(self) -> str:
        """What a stopped run left at --out: a stop never writes it, so whatever was there before.
        Asked when the run stops (another run may have written --out while this one waited)."""
        if self.out is not None and not os.path.exists(self.out):
            return "no model was written"
        return "previous model kept"

    def message(self) -> str:
        if self.phase == "start":
            return f"interrupted before training started; {self.kept()}"
        resume = "; resume with --resume" if self.epoch else ""  # a checkpoint exists after epoch 1
        if self.phase == "saving" or (self.epochs and self.epoch >= self.epochs):
            return f"interrupted at epoch {self.epoch}/{self.epochs} while saving the model; {self.kept()}{resume}"
        return f"interrupted at epoch {self.epoch + 1}/{self.epochs}; {self.kept()}{resume}"

    def interrupted(self) -> Interrupted:
        return Interrupted(self.message(), self.signum or 2)

    def _handle(self, signum, frame):
        first = self.signum is None
        self.signum = signum
        if self.phase == "done" or (self.deferring and first):
            return
        raise self.interrupted()

    def __call__(self):
        if self.signum is not None:
            return "signal"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "time_limit"
        return None


COMMON_DATA = [
    click.option("--time-col", help="Time column (default: detected: date, time, datetime, year, ...)."),
    click.option("--id-col", help="Series id column, for many series in long format."),
    click.option("--sep", default=",", show_default=True, help="Field separator, e.g. ';'."),
    click.option("--missing", type=click.Choice(["interpolate", "refuse"]), default="interpolate", show_default=True,
                 help="Missing values: interpolate short interior gaps (with a note) or refuse them."),
]


def data_options(f):
    for option in reversed(COMMON_DATA):
        f = option(f)
    return f


def _train_interval_levels(text, quantiles, calibration_windows, warm_start) -> tuple | None:
    """train --intervals: the levels to calibrate, None for the model's default (80,95 for point
    models, the grid's central levels for quantile models: intervals.train_levels, resolved in
    train_from_csv once a warm start's quantiles are known). Levels off a --quantiles grid: exit 2 now."""
    from lstm_cli import intervals
    from lstm_cli.errors import UsageError

    levels = None if text is None else intervals.parse_levels(text, "--intervals")
    if levels and quantiles and not warm_start:  # before any work (a warm start keeps the old model's grid)
        intervals.train_levels(levels, quantiles)
    if calibration_windows is not None and levels == ():
        raise UsageError("--calibration-windows calibrates intervals, and this run calibrates none; leave it out "
                         "or give --intervals")
    return levels


def _calendar_option(text: str):
    """--calendar's text checked before any work (calendar.parse_option: exit 2 on a bad name)."""
    from lstm_cli import calendar

    return None if text is None else calendar.parse_option(text)


@cli.command()
@click.argument("data")
@click.option("--target", "targets", multiple=True, required=True, help="Column(s) to forecast; repeat or comma-separate.")
@click.option("--horizon", type=click.IntRange(1, limits.MAX_STEPS), required=True, help="Steps to forecast.")
@click.option("--out", required=True, help="Model file to write (atomically).")  # checked by atomic: exit 73
@click.option("--features", "features", multiple=True,
              help="Extra input columns known only up to the last row (past covariates), comma-separated.")
@click.option("--future-features", "future_features", multiple=True, metavar="A,B",
              help="Input columns whose values are known for the forecast steps too (planned prices, "
                   "promotions, weather forecasts), comma-separated; predict needs their future rows.")
@click.option("--calendar", "calendar_option", metavar="auto|none|LIST",
              help="Inputs derived from the timestamps for history and forecast steps alike, sin/cos pairs of "
                   "hour (time of day), dayofweek, dayofyear, month: a comma list, auto (those the step and the "
                   "history allow), or none [default: none; a warm start keeps the old model's].")
@click.option("--holidays", metavar="CODE",
              help="A 0/1 input (a count per step for weekly or longer steps): the public holidays of CODE "
                   "(US, DE-BY, ...), from the optional `holidays` package (pip install 'lstm-cli[holidays]').")
@data_options
@click.option("--freq", help="Frequency alias (MS, W-MON, D, h, 5min, ...); default: inferred.")
@click.option("--lookback", type=click.IntRange(1, limits.MAX_STEPS), help="Input window length [default: 2 seasons or 2 horizons].")
@click.option("--cell", type=click.Choice(["lstm", "gru"]), default="lstm", show_default=True,
              help="Recurrent cell: LSTM, or GRU (3 gates instead of 4: fewer weights, faster).")
@click.option("--hidden", type=_int_range("hidden"), default=64, show_default=True, help="Hidden size of the cell.")
@click.option("--layers", type=_int_range("layers"), default=1, show_default=True, help="Stacked recurrent layers.")
@click.option("--dropout", type=_float_range("dropout"), default=0.0, show_default=True,
              help="Dropout between layers (training only).")
@click.option("--epochs", type=_int_range("epochs"), default=100, show_default=True, help="Maximum epochs.")
@click.option("--batch-size", type=_int_range("batch_size"), default=32, show_default=True)
@click.option("--lr", type=_float_range("lr"), default=1e-2, show_default=True, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--momentum", type=_float_range("momentum"), default=0.0, show_default=True,
              help="SGD momentum.")
@click.option("--weight-decay", type=_float_range("weight_decay"), default=0.0, show_default=True)
@click.option("--clip", type=FiniteFloatRange(0.0), default=1.0, show_default=True,
              help="Clip the gradient's global norm (0: off).")
@click.option("--val-frac", type=_float_range("val_frac"), default=0.1, show_default=True,
              help="Last part of each series (in time) held out for early stopping.")
@click.option("--patience", type=_int_range("patience"), default=15, show_default=True,
              help="Stop after this many epochs without improvement; the best weights are kept.")
@click.option("--quantiles", type=QuantilesType(), help="Train for these quantiles, e.g. 0.1,0.5,0.9 (pinball loss).")
@click.option("--seed", type=_int_range("seed"), default=0, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--scaling", type=click.Choice(["auto", "level", "seasonal", "series"]),
              help="level: forecast changes from the window's last row (follows trends); seasonal: forecast "
                   "departures from the values one season back (seasonal naive); auto: seasonal where seasonal "
                   "naive beats naive on the training rows, else level; series: per-series scaling only. "
                   "[default: level, or series when the data gives fewer than 120 training windows]")
@click.option("--strategy", type=click.Choice(["direct", "recursive"]), default="direct", show_default=True,
              help="Multi-step forecasts: direct: the network outputs all --horizon steps at once; recursive: it "
                   "forecasts one step and is fed its own forecast as the newest row, --horizon times "
                   "(not with --features).")
@click.option("--forget-bias", type=_float_range("forget_bias"), default=1.0, show_default=True,
              help="Initial bias of the gate that keeps the state (LSTM forget gate, GRU update gate): "
                   "higher remembers longer at the start of training.")
@click.option("--calibrate", type=click.Choice(["val", "none"]), default="val", show_default=True,
              help="val: after training, scale the network's output (a departure from the anchor) by the "
                   "factor in [0, 1] that fits the validation windows best, shrinking noise toward naive; "
                   "quantile models are left as trained.")
@click.option("--blend", type=_float_range("blend"), metavar="W",
              help="Forecast (1 - W) x the network's forecast + W x seasonal naive (naive without a season, "
                   "or when the season is longer than --lookback): the combination beat the network alone "
                   "on real data (docs/accuracy.md). 0: the network alone; quantile models are not blended. "
                   "[default: 0.5]")
@click.option("--sample-series", type=_int_range("sample_series"), metavar="N",
              help="Train on a seeded random sample of N series (with --id-col; every series keeps its own "
                   "scaler, so predict serves all of them): one global model learns from a few thousand.")
@click.option("--warm-start", type=click.Path(dir_okay=False),
              help="Fine-tune this model on DATA instead of starting from scratch: its architecture, lookback, "
                   "scalers and weights are kept; DATA must continue its training range.")
@click.option("--threads", type=_int_range("threads"), help="Worker threads [default: CPUs, at most 8].")
@click.option("--ensemble", type=_int_range("ensemble"), default=1, show_default=True, metavar="N",
              help="Train N networks that differ in what they see (lookback 1x, 1.5x, 2x; level, seasonal and "
                   "per-series anchors; seeds) and forecast their median per step; members train in parallel "
                   "threads. Not with --resume.")
@click.option("--time-limit", type=DurationType(),
              help="Stop cleanly after this long (90s, 10m, 2h; counted from the start, waiting for --wait "
                   "included); keeps the best model.")
@click.option("--intervals", "interval_levels", metavar="LEVELS",
              help="Calibrate conformal intervals at these levels in percent (80,95) on the last origins of "
                   "the training data, for predict --intervals; none: off. Quantile models conformalize their "
                   "band (CQR): level L needs (1-L/100)/2 and its mirror on the --quantiles grid. "
                   "[default: 80,95 for point models, every central level of the grid for quantile models]")
@click.option("--calibration-windows", type=click.IntRange(1, 100_000), metavar="N",
              help="Calibrate the intervals on N origins [default: those whose horizon lies in the validation "
                   "rows, at least 1].")
@click.option("--resume", is_flag=True,
              help="Continue from the checkpoint a stopped or killed run left beside --out (same data and "
                   "options); without one, train from the start.")
@click.option("--wait", is_flag=True, help="If another run is writing --out, wait for it instead of exiting 75.")
@click.option("--max-input-bytes", type=click.IntRange(1), default=2_000_000_000, show_default=True,
              help="Refuse a CSV larger than this (gzip: counted decompressed).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def train(data, targets, horizon, out, features, future_features, calendar_option, holidays, time_col, id_col, sep, missing, freq, lookback, cell, hidden, layers,
          dropout, epochs, batch_size, lr, optimizer, momentum, weight_decay, clip, val_frac, patience, quantiles,
          seed, dtype, scaling, strategy, forget_bias, calibrate, blend, sample_series, warm_start, threads, ensemble, time_limit,
          interval_levels, calibration_windows, resume, wait, max_input_bytes, quiet):
    """Train a model on DATA (a .csv or .csv.gz file, or - for stdin) and write it to --out.

    The model is one file with everything predict needs. Progress goes to stderr; nothing is
    written to stdout. Same data, options and --threads give a byte-identical model.

    Safe to run from cron: --out is replaced atomically and only by a complete model; a second
    run on the same --out exits 75 (or waits, with --wait); SIGINT/SIGTERM stop within a batch,
    keep the previous --out and exit 130/143. Finished epochs leave a checkpoint .NAME.ckpt
    beside --out (removed once the model is saved): after any kill, --resume continues from it
    and writes the model the uninterrupted run would have written.

    \b
    Example:
      lstm train sample_data/a10_monthly.csv --target cost_million_aud --horizon 12 --out a10.lstm
      lstm train sample_data/departures_monthly_panel.csv --id-col series_id \\
          --target departures_thousands --horizon 12 --out departures.lstm
    """
    import contextlib

    if warm_start == "-":  # (--out - is refused by check_output_path)
        from lstm_cli.errors import UsageError

        raise UsageError("--warm-start -: the old model is read from a file, not stdin; give its path "
                         "(./- for a file named -)")
    from lstm_cli import intervals

    levels = _train_interval_levels(interval_levels, quantiles, calibration_windows, warm_start)
    stop = StopFlag(time_limit, epochs, out)
    with stop, contextlib.ExitStack() as held:  # from here on a signal gives one line and 130/143
        from lstm_cli import atomic

        atomic.check_output_path(out, inputs=() if data == "-" else (data,))  # before any work
        # before the heavy imports: a 2nd run exits 75 at once; --wait gives up when --time-limit runs out
        held.enter_context(atomic.output_lock(out, wait=wait, deadline=stop.deadline))
        from lstm_cli import windows
        from lstm_cli.console import Console, TrainProgress
        from lstm_cli.pipeline import TrainRequest, train_from_csv
        from lstm_cli.train import TrainConfig

        console = Console(quiet)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                             weight_decay=weight_decay, clip=clip, patience=patience, dropout=dropout, seed=seed)
        req = TrainRequest(data=data, out=out, targets=_split_names(targets), horizon=horizon,
                           features=_split_names(features), future_features=_split_names(future_features),
                           calendar=_calendar_option(calendar_option), holidays=holidays,
                           time_col=time_col, id_col=id_col, sep=sep, freq=freq,
                           missing=missing, lookback=lookback, cell=cell, hidden=hidden, layers=layers, dtype=dtype,
                           quantiles=quantiles or (), val_frac=val_frac, threads=threads, train=config,
                           scaling=scaling, strategy=strategy, forget_bias=forget_bias, calibrate=calibrate, blend=blend,
                           sample_series=sample_series, ensemble=ensemble,
                           warm_start=warm_start)

        with TrainProgress(console) as progress:
            def on_event(kind, payload):
                if kind == "data":
                    stop.phase = "training"
                elif kind == "resume":
                    stop.epoch = payload["epoch"]
                    if payload["problem"]:
                        console.note(f"{payload['problem']}; training from epoch 1")
                    elif payload["epoch"] == 0:
                        console.line(f"lstm: no checkpoint for {shown(out)}; training from epoch 1")
                    else:
                        console.line(f"lstm: resuming after epoch {payload['epoch']}/{epochs} "
                                     f"(checkpoint {payload['path']})")
                elif kind == "epoch" and stop.signum is None:
                    stop.epoch = payload.epoch
                elif kind == "fitted" and payload.stopped_by != "signal":
                    stop.phase = "saving"
                    if stop.signum is not None:
                        raise stop.interrupted()  # arrived after the last batch: do not save
                elif kind == "saved":
                    stop.phase = "done"
                try:
                    progress(kind, payload)
                except OSError:  # stderr is gone (`2>&1 | head`): train on silently, save the model
                    console.quiet = True

            model, result = train_from_csv(req, on_event=on_event, should_stop=stop, resume=resume,
                                           max_input_bytes=max_input_bytes, intervals=levels,
                                           calibration_windows=calibration_windows)
    if result.stopped_by == "signal":
        stop.epoch = result.epochs_run
        raise stop.interrupted()
    if model is None:  # the time limit ran out before the first epoch finished
        from lstm_cli.errors import UsageError

        raise UsageError(f"--time-limit ran out before the first epoch finished; {stop.kept()} ({shown(out)}); "
                         "raise --time-limit")
    ran = f"{result.epochs_run} of {epochs}: "
    reason = {None: f"ran all {epochs} epochs",
              "early_stop": f"{ran}early stopping (no improvement for {patience} epochs)",
              "time_limit": f"{ran}stopped by time limit (--time-limit {time_limit:g}s)" if time_limit else "",
              "diverged": f"{ran}stopped: the loss diverged (nan or inf); the best epoch's weights were kept",
              }[result.stopped_by]
    best_val = result.val_loss[result.best_epoch - 1] if result.best_epoch else None
    best_train = result.train_loss[result.best_epoch - 1] if result.best_epoch else None
    console.table(f"lstm: trained {shown(out)}", [
        ("epochs", ("member 1: " if hasattr(model, "members") else "") + reason +
         (f", resumed after epoch {result.resumed_from}" if result.resumed_from else "")),
        ("best epoch", f"{result.best_epoch}  train loss {best_train:.4g}" +
         (f"  val loss {best_val:.4g}" if best_val is not None else "")),
        ("window", f"lookback {model.spec.lookback}, horizon {model.spec.horizon}, {model.spec.strategy}, "
                   f"scaling {model.spec.scaling}") if not hasattr(model, "members") else
        ("ensemble", f"median of {len(model.members)} members: "
                     + ", ".join(f"lookback {m.spec.lookback} {m.spec.scaling}" for m in model.members)
                     + f"; horizon {model.spec.horizon}, {model.spec.strategy}"),
        ("network", f"{model.network.arch.num_layers} x {model.network.arch.cell.upper()}({model.network.arch.hidden_size}), "
                    f"{model.network.layout.size} parameters, {dtype}"),
        *([("calibrated", f"output x {scale:.3g} (fitted on the validation windows)")]
          if (scale := model.training["params"].get("output_scale")) is not None else []),
        *([("blended", blended)] if (blended := windows.blend_summary(model.spec.blend, model.spec.lookback,
                                                                     model.spec.season)) else []),
        *([("known ahead", ", ".join(model.spec.future_features + model.spec.derived_columns))]
          if model.spec.has_known else []),
        *([("intervals", band)] if (band := intervals.summary(model.intervals)) else []),
        ("time", f"{result.seconds:.1f} s"),
    ])


@cli.command()
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx", "json", "npz"]), required=True,
              help="onnx: a runnable graph (needs lstm-cli[onnx]); json / npz: weights under PyTorch "
                   "state_dict names, scaler and metadata.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write (atomically), or - for stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def export(model, fmt, out, quiet):
    """Export MODEL for use without lstm: ONNX, JSON or NPZ (docs/export.md).

    The ONNX graph takes the last lookback raw rows (targets, then features) and returns the
    forecast for the trained horizon in original units; scaling happens inside. A model with
    inputs known in advance (--future-features, --calendar, --holidays) also takes `future`:
    each forecast step's future features, then its calendar and holiday columns (the metadata
    and docs/export.md give the columns and formulas). MODEL is only read; --out is replaced
    atomically, or left as it was if the export fails.

    \b
    Example:
      lstm export a10.lstm --format onnx --out a10.onnx
      lstm export a10.lstm --format json --out a10.json
    """
    from lstm_cli.console import Console
    from lstm_cli.export import export_model

    done = export_model(model, fmt, out)
    console = Console(quiet)
    for note in done["notes"]:
        console.note(note)
    console.line(f"lstm: exported {shown(model)} to {'stdout' if out == '-' else shown(out)} ({fmt}, {done['bytes']:,} bytes)")


def _parse_now(text: str | None) -> int | None:
    """--now as nanoseconds since the epoch (UTC; naive values are taken as UTC), exactly: no float
    timestamp, and the fraction of a second read to the nanosecond (datetime stops at microseconds),
    so the bounds are pandas' own, pd.Timestamp.min .. max."""
    if text is None:
        return None
    import datetime as dt

    # the fraction after HH:MM:SS (or HHMMSS) is read here; datetime parses the rest
    m = re.search(r"[0-9]{2}:?[0-9]{2}:?[0-9]{2}([.,]([0-9]+))", text)
    fraction = m.group(2) if m else ""
    if len(fraction) > 9:
        raise click.BadParameter(f"{text!r} has more than 9 digits after the second; nanoseconds are the "
                                 "finest lstm holds", param_hint="--now")
    try:
        moment = dt.datetime.fromisoformat((text[: m.start(1)] + text[m.end(1) :] if m else text).strip()
                                           .replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or (fraction and moment.microsecond):  # 00:00:00.5.5: a second fraction
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time like 2026-11-28T06:00:00Z",
                                 param_hint="--now")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    try:  # year 1 or 9999 with an offset is outside what datetime holds in UTC
        ns = (moment - epoch) // dt.timedelta(microseconds=1) * 1000 + int(fraction.ljust(9, "0") or 0)
    except OverflowError:
        ns = None
    lo, hi = -(2**63) + 1, 2**63 - 1  # pd.Timestamp.min.value and .max.value (-2**63 is NaT)
    if ns is None or not lo <= ns <= hi:
        raise click.BadParameter(f"{text!r} is outside the times lstm can hold (1677-09-21 00:12:43.145224193 "
                                 "to 2262-04-11 23:47:16.854775807 UTC); check the year", param_hint="--now")
    return ns


def _write_output(text: str, out: str | None) -> None:
    if out is None or out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from lstm_cli import atomic

    atomic.check_output_path(out)
    with atomic.output_lock(out):
        atomic.atomic_write(out, text.encode())


@cli.command()
@click.argument("model")
@click.argument("data")
@click.option("--out", type=click.Path(), help="Write here (atomically) instead of stdout ('-'); --engine dask: "
                                               "a directory of part files, or one FILE.csv.")
@click.option("--horizon", type=click.IntRange(1, 100_000),
              help="Steps to forecast [default: the trained horizon]; beyond it the model rolls forward "
                   "on its own forecasts (recursive).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--future", "future_path", metavar="FILE",
              help="Models with --future-features: a CSV of the time column (and id column) and the future "
                   "features for the forecast steps, instead of future rows at the end of DATA (read with "
                   "--sep too; not with --engine dask).")
@click.option("--sep", default=",", show_default=True, help="Field separator of DATA.")
@click.option("--missing", type=click.Choice(["interpolate", "refuse"]), default="interpolate", show_default=True)
@click.option("--threads", type=click.IntRange(1, 256))
@click.option("--max-input-bytes", type=click.IntRange(1), default=2_000_000_000, show_default=True,
              help="Refuse a CSV larger than this (gzip: counted decompressed).")
@click.option("--intervals", "interval_levels", metavar="LEVELS|all",
              help="Add the conformal intervals the model was calibrated for (train --intervals) at these levels: "
                   "columns TARGET_lo80, TARGET_hi80, ... after each target's (a quantile model's: its "
                   "conformalized band, after its quantile columns, which stay as the network gives them). "
                   "Trained horizon only. [default: none]")
@click.option("--max-age", type=DurationType(),
              help="Exit 4 when DATA's newest row is older than this (2h, 1d) before now: a stalled feed.")
@click.option("--now", "now", help="The 'now' of --max-age, ISO 8601 (default: the clock; UTC if no offset).")
@click.option("--provenance", is_flag=True,
              help="Add origin, step, model_sha256 and model_created columns to every forecast row "
                   "(lstm_origin, ... when the forecast has a column of that name).")
@click.option("--precision", type=click.IntRange(1, 17), metavar="DIGITS",
              help="Round forecasts to this many significant digits [default: the shortest text that "
                   "reads back as the model's float32 (float64 models: every digit)].")
@click.option("--excel-safe", is_flag=True,
              help="CSV for spreadsheets: put ' before ids and names that start with = + - @ (or a tab), "
                   "so they are never run as formulas; numbers are unchanged. Ids then no longer join back.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: all series in one pass in this process. dask: split the input (CSV, gzip, "
                   "globs, Parquet) by series over a dask cluster; needs --out and lstm-cli[dask].")
@click.option("--scheduler", help="--engine dask: address of a running scheduler (tcp://host:8786) "
                                  "[default: a local cluster, one worker per core].")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def predict(model, data, out, horizon, fmt, future_path, sep, missing, threads, max_input_bytes, interval_levels, max_age,
            now, provenance, precision, excel_safe, engine, scheduler, quiet):
    """Forecast the steps after the end of every series in DATA with MODEL.

    DATA needs the model's columns and at least its lookback rows per series. Output: the time
    column, the id column (if any), one column per target (per quantile for quantile models).

    A model trained with --future-features needs their values for every step forecast: after
    each series' last value, one row per step with the target empty and the future features
    filled (or the same rows in --future FILE). Calendar and holiday inputs need nothing: they
    come from the timestamps. Forecast past the trained horizon in whole blocks of it.

    \b
    DATA of a model with --future-features promo, --horizon 2:
      date,sales,promo
      2024-05-01,120,0
      2024-06-01,135,1      <- the last value: the forecast starts after it
      2024-07-01,,1         <- future rows: target empty, promo planned
      2024-08-01,,0

    \b
    Example:
      lstm predict a10.lstm sample_data/a10_monthly.csv > forecast.csv
      cat new.csv | lstm predict a10.lstm - --format json
      lstm predict m.lstm 'data/*.csv.gz' --engine dask --scheduler tcp://host:8786 --out forecast/
    """
    import json

    from lstm_cli import modelfile

    os.close(modelfile._open_model(model)[0])  # a missing model: exit 66 before pandas and numba load
    if scheduler and engine != "dask":
        raise click.UsageError("--scheduler needs --engine dask")
    if excel_safe and fmt != "csv":
        raise click.UsageError("--excel-safe changes CSV cells for spreadsheets; JSON is not opened in one, "
                               "so leave out --excel-safe or use --format csv")
    from lstm_cli import intervals

    levels = () if interval_levels is None else intervals.parse_levels(interval_levels, "--intervals", allow_all=True)
    if engine == "dask":
        if future_path is not None:
            raise click.UsageError("--engine dask reads future rows from DATA itself (after each series' last "
                                   "value); leave out --future")
        _predict_dask(model, data, out, horizon, fmt, sep, missing, threads, max_age, now, provenance, scheduler,
                      quiet, precision=precision, excel_safe=excel_safe, intervals=levels)
        return
    if out and out != "-":  # before any work; never over the model or the input
        from lstm_cli import atomic

        atomic.check_output_path(out, inputs=(model,) + (() if data == "-" else (data,)))
    from lstm_cli import frame
    from lstm_cli.console import Console
    from lstm_cli.pipeline import predict_from_csv

    console = Console(quiet)
    columns, rows, notes, meta = predict_from_csv(model, data, horizon=horizon, sep=sep, missing=missing,
                                                  threads=threads, max_bytes=max_input_bytes, max_age=max_age,
                                                  now_ns=_parse_now(now), provenance=provenance,
                                                  precision=precision, future_path=future_path, intervals=levels)
    for n in notes:
        console.note(n)
    if fmt == "json":
        from lstm_cli import memory
        from lstm_cli.errors import UsageError

        n = len(rows[columns[0]])
        memory.require(memory.json_rows_bytes(n, len(columns)), f"--format json of {n:,} forecast rows",
                       "use --format csv (a fraction of the memory), or forecast fewer steps or series", UsageError)
        records = [{c: rows[c][i] for c in columns} for i in range(n)]
        text = json.dumps({"header": meta, "columns": columns, "forecast": records}, allow_nan=False) + "\n"
    else:
        text = frame.write_csv_text(rows, columns, excel_safe=excel_safe)
    _write_output(text, out)


def _predict_dask(model, data, out, horizon, fmt, sep, missing, threads, max_age, now, provenance, scheduler, quiet,
                  precision=None, excel_safe=False, intervals=()):
    from lstm_cli import engine_dask
    from lstm_cli.console import Console

    if fmt != "csv":
        raise click.UsageError("--engine dask writes CSV part files; leave out --format json")
    if not out or out == "-":
        raise click.UsageError("--engine dask writes files: give --out DIR (part files) or --out FILE.csv")
    console = Console(quiet)

    def progress(done, total, series):
        end = "\n" if done == total or not console.rich else ""
        if not console.quiet:
            prefix = "\r" if console.rich else ""
            console.write(f"{prefix}lstm: partition {done}/{total} done ({series:,} series){end}")

    notes, meta = engine_dask.predict_dask(model, data, out, scheduler=scheduler, horizon=horizon, sep=sep,
                                           missing=missing, threads=threads, max_age=max_age,
                                           now_ns=_parse_now(now), provenance=provenance, precision=precision,
                                           excel_safe=excel_safe, intervals=intervals, on_progress=progress)
    for n in notes:
        console.note(n)
    console.line(f"lstm: {meta['series']:,} series forecast in {meta['seconds']:.1f}s -> {shown(out)}")


@cli.command()
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def info(model, fmt):
    """Show what is inside a model file: architecture, data contract, training history.

    \b
    Example:
      lstm info a10.lstm
      lstm info a10.lstm --format json | jq .data
    """
    import json

    from lstm_cli import intervals, modelfile, windows
    from lstm_cli.console import Console

    header = dict(modelfile.load_header(model))  # the payload is checked as it streams, never held
    header["sha256"] = modelfile.file_sha256(model)
    if fmt == "json":
        click.echo(json.dumps(header, indent=2, sort_keys=True))
        return
    a, d, t = header["arch"], header["data"], header["training"]
    season = d.get("season", 1)  # files written before it have no season: 1
    val = [v for v in t["history"]["val_loss"] if v is not None]
    Console(stream=sys.stdout).table(f"lstm model {shown(model)}", [  # the answer: stdout, so `| grep` finds it
        ("created", f"{header['created']} by lstm {header['lstm_version']}"),
        ("network", f"{a['num_layers']} x {a['cell'].upper()}({a['hidden_size']}) -> {a['output_size']} outputs, {a['dtype']}"),
        ("targets", ", ".join(d["targets"])),
        ("features", ", ".join(d["features"]) or "-"),
        ("future features", ", ".join(d.get("future_features", ())) or "-"),
        ("calendar", ", ".join(d.get("calendar", ())) or "-"),
        ("holidays", d.get("holidays") or "-"),
        ("time", f"{d['time_col']} ({d['time_kind']}, freq {d['freq'] or '?'})"),
        ("series", f"{len(header['series']['ids'])}" + (f" by {d['id_col']}" if d["id_col"] else "")),
        ("window", f"lookback {d['lookback']}, horizon {d['horizon']}, {d['strategy']}, scaling {d['scaling']}, "
                   f"season {season}"),
        *([("ensemble", f"median of {len(header['members']) + 1} members: lookback {d['lookback']} {d['scaling']}, "
                        + ", ".join(f"lookback {m['data']['lookback']} {m['data']['scaling']}"
                                    for m in header["members"]))] if header.get("members") else []),
        ("blend", windows.blend_summary(d.get("blend", 0.0), d["lookback"], season) or "-"),
        ("quantiles", ", ".join(f"{q:g}" for q in d["quantiles"]) or "-"),
        ("intervals", intervals.summary(header.get("intervals")) or "-"),
        ("training", f"{t['epochs_run']} epochs, best {t['best_epoch']}, seed {t['seed']}, {t['threads']} threads"
                     if not header.get("members") else
                     "epochs (best) per member: " + ", ".join(f"{m['epochs_run']} ({m['best_epoch']})" for m in
                                                             [t] + [m["training"] for m in header["members"]])
                     + f"; seeds from {t['seed']}, {t['threads']} threads"),
        ("best val loss", f"{min(val):.4g}" if val else "-"),
        ("sha256", header["sha256"]),
    ])


@cli.command()
@click.argument("model")
@click.argument("data")
@click.option("--backtest", "backtests", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Rolling origins: the last horizon, and N-1 earlier ones --step apart.")
@click.option("--step", type=click.IntRange(1, 100_000), help="Steps between origins [default: the horizon].")
@click.option("--season", type=click.IntRange(1, 100_000), help="Season length for seasonal naive and MASE [default: from the frequency].")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="table: the overall scores, on stdout; json/csv: per-series scores on stdout (and the "
                   "table on stderr).")
@click.option("--fail-if-worse-than", "gate", type=click.Choice(["naive", "seasonal_naive", "theta"]),
              help="Exit 3 when the model's MASE is worse than this baseline's (a retrain gate for cron).")
@click.option("--fail-if-coverage-below", "coverage_gates", multiple=True, metavar="LEVEL[:MIN]",
              help="Exit 3 when the model's LEVEL% interval covers less than MIN% of the actuals overall "
                   "[MIN: LEVEL], e.g. 80 or 95:90; repeatable. Exit 2 (before any work) for a level the model "
                   "has no interval of. With --fail-if-worse-than both are checked, the MASE gate's failure "
                   "named first.")
@click.option("--refit", is_flag=True,
              help="At every origin, train a new model on the rows before it only (the options recorded in "
                   "MODEL), then forecast: an honest backtest of the training, one origin at a time.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write a picture (atomically) in the format its suffix names: .png, .pdf or .svg. History, "
                   "actuals, forecasts and seasonal naive, one panel per series and target (at most 12). "
                   "Needs matplotlib: pip install 'lstm-cli[plot]'.")
@click.option("--sep", default=",", show_default=True, help="Field separator of DATA.")
@click.option("--missing", type=click.Choice(["interpolate", "refuse"]), default="interpolate", show_default=True)
@click.option("--threads", type=click.IntRange(1, 256))
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: all series in this process. dask: split DATA (CSV, gzip, globs, Parquet) by series "
                   "over a dask cluster, as predict does; the same scores. Needs lstm-cli[dask].")
@click.option("--scheduler", help="--engine dask: address of a running scheduler (tcp://host:8786) "
                                  "[default: a local cluster, one worker per core].")
@click.option("--excel-safe", is_flag=True,
              help="--format csv for spreadsheets: put ' before ids and names that start with = + - @ (or a tab).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (and the data on stdout).")
def evaluate(model, data, backtests, step, season, fmt, gate, coverage_gates, refit, plot_path, sep, missing, threads,
             engine, scheduler, excel_safe, quiet):
    """Score MODEL on the end of every series in DATA, next to the naive baselines.

    Holds out the last horizon of each series (or --backtest N rolling origins), forecasts it
    from the rows before, and reports MAE, RMSE, MAPE, sMAPE and MASE per method: lstm, naive
    (last value), seasonal naive (last season) and theta (exponential smoothing with drift on
    seasonally adjusted data). MASE is scaled by the in-sample seasonal-naive
    error, so below 1 beats it in-sample; skill = 1 - MASE(lstm) / MASE(baseline).

    A model with intervals (train --intervals, on by default) has its conformal bands scored
    at every level (coverage_80, width_80, winkler_80), next to the seasonal naive's band from
    its own past errors; a quantile model without a table, its central quantile pairs.

    \b
    Example:
      lstm evaluate a10.lstm sample_data/a10_monthly.csv --backtest 3
      lstm evaluate a10.lstm new.csv --format json --fail-if-worse-than seasonal_naive
      lstm evaluate a10.lstm new.csv --backtest 6 --fail-if-coverage-below 80:75 --fail-if-coverage-below 95
      lstm evaluate a10.lstm sample_data/a10_monthly.csv --backtest 3 --refit --plot a10.png
      lstm evaluate m.lstm 'data/*.csv.gz' --engine dask --scheduler tcp://host:8786 --format json
    """
    import json
    import math

    if scheduler and engine != "dask":
        raise click.UsageError("--scheduler needs --engine dask")
    if excel_safe and fmt != "csv":
        raise click.UsageError("--excel-safe changes CSV cells for spreadsheets; use it with --format csv")
    if engine == "dask" and (refit or plot_path):
        raise click.UsageError(f"{'--refit' if refit else '--plot'} needs --engine local ("
                               + ("--refit trains one model on all series per origin" if refit else
                                  "the plot draws history rows kept in this process") + ")")
    from lstm_cli import modelfile
    from lstm_cli.evaluate import parse_coverage_gate

    coverage_gates = tuple(parse_coverage_gate(text) for text in coverage_gates)  # bad text: exit 2 at once
    os.close(modelfile._open_model(model)[0])  # a missing model (or MODEL -): refused before any work
    if plot_path:  # before any work: a hopeless path, suffix or a missing matplotlib fail at once
        from lstm_cli import atomic
        from lstm_cli.plot import plot_format, require_matplotlib

        atomic.check_output_path(plot_path, inputs=(model,) + (() if data == "-" else (data,)), option="--plot")
        plot_format(plot_path)
        require_matplotlib()
    from lstm_cli import frame
    from lstm_cli.console import Console
    from lstm_cli.errors import DataError, WorseThanBaseline
    from lstm_cli.evaluate import INTERVAL_SCORES, METRIC_NAMES, evaluate_from_csv, known_inputs_text
    from lstm_cli.intervals import level_name
    from lstm_cli.plot import PANEL_LIMIT

    console = Console(quiet)

    def progress(p):
        if p["mode"] == "refit":
            console.line(f"lstm: origin {p['origin']}/{p['origins']} (held out from {p['cut']}): refit "
                         f"{p['epochs_run']} epochs (best {p['best_epoch']}), {p['seconds']:.1f} s")

    def partitions(done, total, series):
        if not console.quiet:
            end = "\n" if done == total or not console.rich else ""
            console.write(f"{chr(13) if console.rich else ''}lstm: partition {done}/{total} scored "
                          f"({series:,} series){end}")

    if engine == "dask":
        from lstm_cli import engine_dask

        ev = engine_dask.evaluate_dask(model, data, backtests=backtests, step=step, season=season, sep=sep,
                                       missing=missing, threads=threads, scheduler=scheduler,
                                       coverage_gates=coverage_gates, on_progress=partitions)
    else:
        ev = evaluate_from_csv(model, data, backtests=backtests, step=step, season=season, sep=sep,
                               missing=missing, threads=threads, refit=refit,
                               plot_panels=PANEL_LIMIT if plot_path else 0, coverage_gates=coverage_gates,
                               on_progress=progress)
    for n in ev.notes:
        console.note(n)
    overall = ev.overall()
    mode_text = "refit at every origin" if ev.mode == "refit" else "fixed model (no refit)"

    def num(x):
        return None if x is None or not math.isfinite(x) else x

    if fmt == "json":
        doc = {"header": {"model": model, "data": data, "horizon": ev.horizon, "origins": ev.origins,
                          "step": ev.step, "season": ev.season, "mode": ev.mode,
                          "in_sample_series": ev.in_sample_series(), "known_inputs": ev.known_inputs,
                          "future_rows_not_scored": ev.future_rows, "intervals": ev.intervals_header()},
               "overall": {m: {k: num(v) for k, v in d.items()} for m, d in overall.items()},
               "skill": {b: num(ev.skill(b)) for b in ("naive", "seasonal_naive", "theta")},
               "records": [{k: (num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in ev.records]}
        click.echo(json.dumps(doc, allow_nan=False))
    elif fmt == "csv":
        columns = list(dict.fromkeys(k for r in ev.records for k in r))
        rows = {c: [r.get(c, "") for r in ev.records] for c in columns}
        sys.stdout.write(frame.write_csv_text(rows, columns, excel_safe=excel_safe))
    rows = []
    levels = ev.interval_labels()
    level_keys = {f"{name}_{label}" for label in levels for name in INTERVAL_SCORES}
    for method, scores in overall.items():
        shown_value = lambda v: "-" if v != v else f"{v:.4g}"  # noqa: E731 - nan (undefined): '-', as JSON's null
        cells = "  ".join(f"{k} {shown_value(scores[k])}" for k in METRIC_NAMES)
        extra = "  ".join(f"{k} {shown_value(v)}" for k, v in scores.items()
                          if k not in METRIC_NAMES and k not in level_keys)
        rows.append((method, cells + ("  " + extra if extra else "")))
    for label in levels:  # one line per interval level: the model's band next to the baseline's own
        rows.append((f"{label}% interval", "   ".join(
            f"{method} " + "  ".join(f"{name} {shown_value(scores[f'{name}_{label}'])}" for name in INTERVAL_SCORES)
            for method, scores in overall.items() if f"coverage_{label}" in scores)))
    if levels:
        band = ("conformal (each origin's model calibrated as train does)" if ev.mode == "refit" else
                "conformal (the model file's calibration)") if ev.interval_kind == "conformal" else \
            "its quantile pairs (q, 1 - q)"
        rows.append(("intervals", f"lstm: {band}; seasonal_naive: its own past errors"))
    for b in ("naive", "seasonal_naive", "theta"):
        skill = ev.skill(b)
        rows.append((f"skill vs {b}", "-  (undefined: a MASE is undefined or 0)" if skill != skill
                     else f"{skill:+.1%}  (1 - MASE ratio; > 0 beats it)"))
    rows.append(("mode", mode_text))
    if ev.known_inputs:
        rows.append(("known inputs", known_inputs_text(ev.known_inputs)))
    # --format table: the table is the answer (stdout); beside json/csv it is a summary for people (stderr)
    table_console = Console(quiet, stream=sys.stdout) if fmt == "table" else console
    table_console.table(f"lstm: evaluation of {shown(model)} on {shown(data)}: horizon {ev.horizon}, {ev.origins} origin(s), "
                  f"season {ev.season}, {len({r['series'] for r in ev.records})} series", rows)
    if plot_path:  # written before the gate: a failed gate is a verdict, and the picture helps judge it
        from lstm_cli import atomic
        from lstm_cli.plot import label, plot_format, render

        if ev.panels_total > len(ev.panels):
            console.note(f"--plot: {len(ev.panels)} of {ev.panels_total} series x target panels drawn, "
                         f"{ev.panels_total - len(ev.panels)} left out (at most {PANEL_LIMIT})")
        picture = render(ev, f"{label(os.path.basename(model))} on {label(os.path.basename(data))}: horizon {ev.horizon}, "
                             f"{ev.origins} origin(s), {mode_text}", plot_format(plot_path))
        with atomic.output_lock(plot_path):
            atomic.atomic_write(plot_path, picture)
        console.line(f"lstm: plot written to {shown(plot_path)}")
    failed = []  # every gate is checked: the MASE gate first, then each coverage gate as given
    if gate:
        m_model, m_base = overall["lstm"]["mase"], overall[gate]["mase"]
        if m_model != m_model or m_base != m_base:  # nan: MASE's scale, the in-sample naive error, is 0
            raise DataError(f"{'<stdin>' if data == '-' else data}: --fail-if-worse-than {gate}: MASE is undefined "
                            "(the history of every series is constant or repeats exactly, so the naive error MASE "
                            "divides by is 0); gate on data that varies, or without --fail-if-worse-than")
        if not (m_model <= m_base):
            failed.append(f"MASE {m_model:.4g} of the model is worse than {m_base:.4g} of {gate}")
    for level, minimum in coverage_gates:
        name = level_name(level)
        found = overall["lstm"].get(f"coverage_{name}", float("nan"))
        if found != found:  # nan: no origin gave a band (a refit origin not calibrated, a forecast that overflows)
            raise DataError(f"{'<stdin>' if data == '-' else data}: --fail-if-coverage-below {name}: the coverage of "
                            f"the {name}% interval is undefined (no origin gave the model a finite {name}% band: see "
                            "the notes); gate on data the model forecasts, or without --fail-if-coverage-below")
        if found < minimum - 1e-9:  # a mean of per-record percentages: rounding must not fail 80.0
            failed.append(f"the {name}% interval covered {found:.4g}% of the actuals, below the minimum "
                          f"{minimum:g}%")
    if failed:
        raise WorseThanBaseline("; ".join(failed))


@cli.command()
@click.option("-q", "--quiet", is_flag=True)
def warmup(quiet):
    """Compile and cache every kernel train and predict use (float32 and float64), so later runs
    start in about a second. Run once after installing; `make demo` does.

    \b
    Example:
      lstm warmup
    """
    from lstm_cli.console import Console
    from lstm_cli.pipeline import warm_up

    t0 = time.perf_counter()
    warm_up()
    Console(quiet).line(f"lstm: kernels ready ({time.perf_counter() - t0:.1f} s)")


@cli.command()
@click.argument("data")
@click.option("--target", "targets", multiple=True, help="Target column(s) (or take them from --model).")
@click.option("--features", "features", multiple=True, help="Feature columns, comma-separated.")
@click.option("--future-features", "future_features", multiple=True, metavar="A,B",
              help="Columns known for the forecast steps too: the rows after each series' last value with the "
                   "target empty are future rows, counted (and checked against --horizon).")
@data_options
@click.option("--freq", help="Expected frequency alias; default: inferred.")
@click.option("--model", "model_path", help="Check DATA against this model's contract instead of options.")
@click.option("--lookback", type=click.IntRange(1, 100_000), help="Require this many rows per series (+ --horizon).")
@click.option("--horizon", type=click.IntRange(1, 100_000))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (json still goes to stdout).")
def validate(data, targets, features, future_features, time_col, id_col, sep, missing, freq, model_path, lookback,
             horizon, fmt, quiet):
    """Check DATA before training or forecasting: unreadable values, duplicates, unsorted or
    irregular times, gaps, missing values, series too short, a mismatch with a model's columns,
    future rows too few, off the grid or with a future feature empty (--model, --future-features).

    Exits 0 when the data is usable (notes may remain) and 65 when it is not.

    \b
    Example:
      lstm validate sales.csv --target sales --lookback 24 --horizon 12
      lstm validate new.csv --model sales.lstm --format json
    """
    import json

    from lstm_cli.console import Console
    from lstm_cli.errors import EXIT_DATA, UsageError
    from lstm_cli.validate import validate_csv

    if not model_path and not targets:
        raise UsageError("validate needs --target (the columns to check) or --model")
    report = validate_csv(data, targets=_split_names(targets), features=_split_names(features), time_col=time_col,
                          id_col=id_col, sep=sep, freq=freq, missing=missing, model_path=model_path,
                          lookback=lookback, horizon=horizon, future_features=_split_names(future_features))
    if fmt == "json":
        click.echo(json.dumps({"data": data, "usable": report.usable, "summary": report.summary,
                               "checks": [c.__dict__ for c in report.checks]}))
    else:  # the report is the answer: stdout; -q leaves the exit code (and the line below) alone
        Console(quiet, stream=sys.stdout).table(f"lstm: {shown(data)} is {'usable' if report.usable else 'NOT usable'}",
                                                [(f"{c.status:4} {c.name}", c.detail) for c in report.checks])
    if not report.usable:
        failed = [c for c in report.checks if c.status == "fail"]
        source = "<stdin>" if data == "-" else data
        first = failed[0].detail if failed[0].detail.startswith(source) else f"{source}: {failed[0].detail}"
        say(f"lstm: {first}" + (f" (and {len(failed) - 1} more failed check(s))" if len(failed) > 1 else ""))
        click.get_current_context().exit(EXIT_DATA)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def version(fmt):
    """Versions of lstm and what it runs on, the CPU, and the JIT cache: what a bug report needs.

    \b
    Example:
      lstm version --format json
    """
    import json

    from lstm_cli.diagnostics import jit_cache_summary, version_info

    info = version_info()
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    cache = info.pop("jit_cache")
    for key, value in info.items():
        click.echo(f"{key:10} {value}")
    click.echo(f"{'jit cache':10} {jit_cache_summary(cache)}")


def _plain_default(option: click.Option):
    """The default as a plain value: None for 'no default' (click 8.2+ marks it with a sentinel)."""
    default = option.default
    if callable(default) or type(default).__name__ == "Sentinel" or default == ():
        return None
    return default


@cli.group("config")
def config_group():
    """Inspect the configuration that commands would run with.

    \b
    Example:
      lstm --config job.toml config show
    """


@config_group.command("show")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def config_show(ctx, fmt):
    """Print every command's options as resolved from LSTM_<OPTION> variables, the --config
    file and the defaults, and where each value came from.

    \b
    Example:
      LSTM_EPOCHS=50 lstm --config job.toml config show --format json
    """
    import json

    from lstm_cli import config

    root = ctx.find_root()
    default_map = root.default_map or {}
    sources = root.meta.get("lstm.config_sources", {})
    resolved = {}
    for name, command in _configurable().items():
        resolved[name] = {}
        for flag, option in config.options_of(command).items():
            if option.name in default_map.get(name, {}):
                value, source = default_map[name][option.name], sources[name][option.name]
            else:
                value, source = _plain_default(option), "default"
            resolved[name][flag] = {"value": value, "source": source}
    if fmt == "json":
        click.echo(json.dumps({"config_file": root.meta.get("lstm.config_file"), "commands": resolved},
                              default=str, indent=2))
        return
    for name, opts in resolved.items():
        click.echo(f"[{name}]")
        for opt, d in opts.items():
            if d["source"] != "default" or d["value"] is not None:
                click.echo(f"  {opt:18} = {d['value']!r:24} ({d['source']})")


def main() -> None:
    from lstm_cli.runtime import run

    run(lambda: cli.main(prog_name="lstm"))  # streams made safe first; exits with the command's code


__all__ = ["cli", "main", "EXIT_SIGTERM"]
