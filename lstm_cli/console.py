"""Everything for people goes to stderr: rich when stderr is a terminal, plain lines when it is
not (cron mails them), nothing but errors with --quiet. stdout is reserved for data."""

from __future__ import annotations

import os
import sys


def is_interactive(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class Console:
    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.rich = not quiet and is_interactive(self.stream)
        self._rich_console = None

    @property
    def rich_console(self):
        if self._rich_console is None:
            from rich.console import Console as RichConsole

            self._rich_console = RichConsole(file=self.stream, highlight=False)
        return self._rich_console

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A warning the user should read; shown even in plain mode, hidden by --quiet."""
        self.line(f"lstm: note: {text}")

    def table(self, title: str, rows: list[tuple[str, str]]) -> None:
        if self.quiet:
            return
        if self.rich:
            from rich.table import Table

            t = Table(title=title, show_header=False, title_justify="left")
            t.add_column(style="bold")
            t.add_column()
            for k, v in rows:
                t.add_row(k, v)
            self.rich_console.print(t)
        else:
            self.line(title)
            width = max(len(k) for k, _ in rows)
            for k, v in rows:
                self.line(f"  {k.ljust(width)}  {v}")


def _fmt_loss(x) -> str:
    return "-" if x is None else f"{x:.4g}"


class TrainProgress:
    """Turns training events into a rich progress bar, or a few plain lines when piped."""

    def __init__(self, console: Console):
        self.console = console
        self._progress = None
        self._task = None
        self._last_plain = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __call__(self, kind: str, payload) -> None:
        c = self.console
        if kind == "data":
            for w in payload["warnings"]:
                c.note(w)
            sampled = f" (training on a seeded sample of {payload['sampled']})" if payload.get("sampled") else ""
            c.line(f"lstm: {payload['series']} series{sampled}, {payload['rows']} rows, freq {payload['freq'] or '?'}, "
                   f"lookback {payload['lookback']}, horizon {payload['horizon']}, scaling {payload['scaling']}"
                   f"{' (auto)' if payload['scaling_option'] == 'auto' else ''}; "
                   f"{payload['train_windows']} training / {payload['val_windows']} validation windows, "
                   f"{payload['parameters']} parameters")
        elif kind == "epoch":
            self._epoch(payload)

    def _epoch(self, r) -> None:
        c = self.console
        if c.quiet:
            return
        if c.rich:
            if self._progress is None:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                )

                self._progress = Progress(
                    TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                    TimeRemainingColumn(), console=c.rich_console, transient=False)
                self._progress.start()
                self._task = self._progress.add_task("train", total=r.epochs, stats="")
            stats = (f"loss {_fmt_loss(r.train_loss)} val {_fmt_loss(r.val_loss)} best {r.best_epoch} "
                     f"lr {r.lr:.2g} {r.samples_per_s:,.0f} samples/s")
            self._progress.update(self._task, completed=r.epoch, stats=stats)
        else:
            step = max(1, r.epochs // 10)
            if r.epoch == 1 or r.epoch % step == 0 or r.epoch == r.epochs:
                c.line(f"epoch {r.epoch}/{r.epochs}  train {_fmt_loss(r.train_loss)}  val {_fmt_loss(r.val_loss)}  "
                       f"best {r.best_epoch}  lr {r.lr:.2g}  {r.samples_per_s:,.0f} samples/s")
