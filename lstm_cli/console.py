"""Everything for people goes to stderr: rich when stderr is a terminal, plain lines when it is
not (cron mails them), nothing but errors with --quiet. stdout is reserved for data."""

from __future__ import annotations

import os
import sys
import time

from lstm_cli.errors import one_line


def scaling_chosen_by(option: str, scaling: str) -> str:
    """The data line's note on a scaling the data chose: --scaling auto, or the size rule's series."""
    if option == "auto":
        return " (auto)"
    if option == "default" and scaling == "series":
        from lstm_cli.pipeline import SHORT_DATA_WINDOWS  # train has imported it already

        return f" (the default for fewer than {SHORT_DATA_WINDOWS} training windows)"
    return ""


def is_interactive(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class Console:
    """Messages on stderr, or (with `stream`) a report that is the command's answer on stdout. A
    message that cannot be written (`2>/dev/full`, a reader gone) never stops the work: stderr is
    dropped from then on, as a closed one is. The answer failing is an error (exit 74)."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.for_messages = stream is None or stream is sys.stderr
        self.stream = stream or sys.stderr
        self.rich = not quiet and is_interactive(self.stream)
        self._rich_console = None

    def _emit(self, show) -> None:
        try:
            show()
        except (OSError, ValueError):  # ValueError: a closed file object
            if not self.for_messages:
                raise
            from lstm_cli.runtime import discard_stderr

            discard_stderr()
            self.quiet = True

    def write(self, text: str) -> None:
        """Text as given (a progress line that a carriage return redraws on a terminal), unless --quiet."""
        if not self.quiet:
            self._emit(lambda: (self.stream.write(text), self.stream.flush()))

    @property
    def rich_console(self):
        if self._rich_console is None:
            from rich.console import Console as RichConsole

            self._rich_console = RichConsole(file=self.stream, highlight=False)
        return self._rich_console

    def line(self, text: str) -> None:
        if self.quiet:
            return
        text = one_line(text)  # a path's newline or ESC spelled out
        if self.rich:  # through rich, so a live bar or spinner stays below the line instead of tearing
            self._emit(lambda: self.rich_console.print(text, markup=False, highlight=False, emoji=False,
                                                       soft_wrap=True))
        else:
            self._emit(lambda: print(text, file=self.stream, flush=True))

    def note(self, text: str) -> None:
        """A warning the user should read; shown even in plain mode, hidden by --quiet."""
        self.line(f"lstm: note: {text}")

    def table(self, title: str, rows: list[tuple[str, str]]) -> None:
        if self.quiet:
            return
        if self.rich:
            from rich.table import Table
            from rich.text import Text

            # Text, not markup: a column named '[link=...]x' or '[red]' is shown, not obeyed
            t = Table(title=Text(one_line(title)), show_header=False, title_justify="left")
            t.add_column(style="bold")
            t.add_column()
            for k, v in rows:
                t.add_row(Text(one_line(k)), Text(one_line(v)))
            self._emit(lambda: self.rich_console.print(t))
        else:
            self.line(title)
            width = max(len(k) for k, _ in rows)
            for k, v in rows:
                self.line(f"  {k.ljust(width)}  {v}")


def _fmt_loss(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _best(r) -> str:
    """'best 12 (val 0.0931)': the epoch and the loss it is best by (validation, else training)."""
    return f"best {r.best_epoch} ({'val' if r.val_loss is not None else 'train'} {_fmt_loss(r.best_loss)})"


PHASES = {
    "reading": lambda p: f"reading {p['source']}",
    "windows": lambda p: f"scaling and cutting windows: {p['series']} series, {p['rows']} rows",
    "compiling": lambda p: "loading the kernels (the first run on a machine compiles them; "
                           "`lstm warmup` does it ahead)",
}
# Piped (cron), a run that fails on its data prints its one-line error and nothing else: the phases
# before the data summary are shown on a terminal only.
TERMINAL_ONLY_PHASES = {"reading", "windows"}


class TrainProgress:
    """Turns training events into what people see: on a terminal a spinner for each phase before
    training (reading, windows, kernels), then a bar that moves batch by batch, with the last
    epoch's losses, the best epoch and its loss, and a labelled ETA; when piped a line per phase
    and a few epoch lines (cron mails them); with --quiet nothing."""

    def __init__(self, console: Console):
        self.console = console
        self._status = None
        self._progress = None
        self._task = None
        self._stats = ""
        self._phase_text, self._phase_start = None, 0.0  # the phase the spinner shows, on a terminal
        self._resumed_from = 0  # epochs done before this run: its pace counts the others only

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop_status()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, kind: str, payload) -> None:
        c = self.console
        if c.quiet:
            return
        if kind == "phase":
            self._phase(payload)
        elif kind == "resume":
            self._resumed_from = payload["epoch"]
        elif kind == "data":
            for w in payload["warnings"]:
                c.note(w)
            sampled = f" (training on a seeded sample of {payload['sampled']})" if payload.get("sampled") else ""
            c.line(f"lstm: {payload['series']} series{sampled}, {payload['rows']} rows, freq {payload['freq'] or '?'}, "
                   f"lookback {payload['lookback']}, horizon {payload['horizon']}, scaling {payload['scaling']}"
                   f"{scaling_chosen_by(payload['scaling_option'], payload['scaling'])}; "
                   f"{payload['train_windows']} training / {payload['val_windows']} validation windows, "
                   f"{payload['parameters']} parameters")
        elif kind == "batch" and c.rich:
            p = payload
            self._bar(p["epochs"], p["epoch"] - 1 + p["batch"] / p["batches"], p["seconds"],
                      f"epoch {p['epoch']}/{p['epochs']} batch {p['batch']}/{p['batches']}")
        elif kind == "epoch":
            self._epoch(payload)
        elif kind == "note":
            self._stop_status()
            c.note(payload)
        elif kind == "member":  # an ensemble member finished (pipeline.train_ensemble)
            p, r = payload, payload["result"]
            best = r.val_loss[r.best_epoch - 1] if r.best_epoch and r.val_loss else None
            self._stop_status()
            c.line(f"lstm: member {p['index']}/{p['members']} (lookback {p['lookback']}, {p['scaling']}): "
                   f"{r.epochs_run} epochs, best {r.best_epoch}"
                   + (f" (val {_fmt_loss(best)})" if best is not None else "")
                   + ("; left out of the model: no epoch finished before --time-limit"
                      if r.epochs_run == 0 and r.stopped_by == "time_limit" else ""))
        elif kind == "fitted":  # the summary follows: the bar ends here
            self.__exit__()

    def _phase(self, p) -> None:
        text = "lstm: " + (PHASES[p["phase"]](p) if p["phase"] in PHASES else p["phase"])
        c = self.console
        if not c.rich:
            if p["phase"] not in TERMINAL_ONLY_PHASES:
                c.line(text)
            return
        from rich.text import Text

        self._phase_done()
        self._phase_text, self._phase_start = text, time.monotonic()
        shown_text = Text(one_line(text))  # a file name's '[...]' is text, not rich markup
        if self._status is None:
            self._status = c.rich_console.status(shown_text)
            self._status.start()
        else:
            self._status.update(shown_text)

    def _phase_done(self) -> None:
        """On a terminal a finished phase stays as a line with its time; the spinner moves on."""
        if self._phase_text is not None:
            self.console.line(f"{self._phase_text}: {time.monotonic() - self._phase_start:.1f} s")
            self._phase_text = None

    def _stop_status(self) -> None:
        self._phase_done()
        if self._status is not None:
            self._status.stop()
            self._status = None

    def eta(self, epochs: int, completed: float, seconds: float) -> str:
        """'ETA (at most) 0:01:23' at this run's pace so far (seconds count from its first batch:
        the kernels are loaded before); early stopping may end sooner, hence 'at most'."""
        done = completed - self._resumed_from
        if done <= 0 or seconds <= 0:
            return ""
        return f"ETA (at most) {_fmt_seconds((epochs - completed) * seconds / done)}"

    def _bar(self, epochs: int, completed: float, seconds: float, where: str) -> None:
        self._stop_status()
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), TextColumn("{task.fields[where]}"),
                TextColumn("{task.fields[stats]}"), TextColumn("{task.fields[eta]}"),
                console=self.console.rich_console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task("train", total=epochs, where="", stats="", eta="")
        self._progress.update(self._task, completed=completed, where=where, stats=self._stats,
                              eta=self.eta(epochs, completed, seconds))

    def _epoch(self, r) -> None:
        c = self.console
        if c.rich:
            self._stats = (f"loss {_fmt_loss(r.train_loss)} val {_fmt_loss(r.val_loss)} {_best(r)} "
                           f"lr {r.lr:.2g} {r.samples_per_s:,.0f} samples/s")
            self._bar(r.epochs, r.epoch, r.seconds, f"epoch {r.epoch}/{r.epochs}")
        else:
            step = max(1, r.epochs // 10)
            if r.epoch == 1 or r.epoch % step == 0 or r.epoch == r.epochs:
                c.line(f"epoch {r.epoch}/{r.epochs}  train {_fmt_loss(r.train_loss)}  val {_fmt_loss(r.val_loss)}  "
                       f"{_best(r)}  lr {r.lr:.2g}  {r.samples_per_s:,.0f} samples/s")
