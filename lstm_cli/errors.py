"""Typed errors the library raises; the CLI turns each into one line on stderr and an exit code.

The codes follow BSD sysexits so that cron wrappers can tell "fix the data" from "retry later".
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_WORSE_THAN_BASELINE = 3
EXIT_STALE_INPUT = 4
EXIT_DATA = 65
EXIT_NO_INPUT = 66
EXIT_MISSING_DEPENDENCY = 69
EXIT_INTERNAL = 70
EXIT_CANNOT_CREATE = 73
EXIT_IO = 74
EXIT_LOCKED = 75
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_USAGE: "usage error: a bad option or value",
    EXIT_WORSE_THAN_BASELINE: "evaluate gate failed: --fail-if-worse-than (the model's MASE is worse than the "
                              "baseline's) or --fail-if-coverage-below (an interval covers less than asked)",
    EXIT_STALE_INPUT: "predict --max-age: the newest row of the input is older than allowed (a stalled feed)",
    EXIT_DATA: "bad data: the CSV is unusable, or the model file is invalid, corrupt or of an unsupported version",
    EXIT_NO_INPUT: "an input file is missing, unreadable or not a regular file",
    EXIT_MISSING_DEPENDENCY: "an optional dependency is missing",
    EXIT_INTERNAL: "internal error (a bug): rerun with --debug or LSTM_DEBUG=1 for the traceback",
    EXIT_CANNOT_CREATE: "the output cannot be created",
    EXIT_IO: "I/O error (disk full, ...) or out of memory",
    EXIT_LOCKED: "the output is locked by another run; retry later",
    EXIT_SIGINT: "interrupted by SIGINT",
    EXIT_SIGTERM: "terminated by SIGTERM",
}


def shown(text) -> str:
    """A user-supplied string (a path, a name) as messages show it: as typed when it is printable,
    else quoted with its newlines, carriage returns and escapes spelled out, so that a crafted name
    cannot add or overwrite a line of the log."""
    text = os.fsdecode(text) if isinstance(text, (bytes, os.PathLike)) else str(text)
    return text if text.isprintable() else repr(text)


def one_line(message: str) -> str:
    """The last line of defence where messages are printed: every control character (newline, CR,
    ESC, ...) spelled out, so that one message is one line whatever it quotes."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in message)


class LstmError(Exception):
    """Base of every error meant for the user: its message is one line that says what to do."""

    exit_code = EXIT_INTERNAL


class UsageError(LstmError):
    exit_code = EXIT_USAGE


class FreqNotApplicable(UsageError):
    """A frequency was given for integer times. The reader cannot tell whether it came from --freq
    or from a model trained on dates; a caller that knows says which."""


class WorseThanBaseline(LstmError):
    """The quality gate of `evaluate --fail-if-worse-than` failed: retrain, or keep the old model."""

    exit_code = EXIT_WORSE_THAN_BASELINE


class StaleInputError(LstmError):
    """predict --max-age: the feed stopped; forecasting from old data would hide it."""

    exit_code = EXIT_STALE_INPUT


class DataError(LstmError):
    """The input data cannot be used as it is."""

    exit_code = EXIT_DATA


class ModelFileError(LstmError):
    """A model file is corrupt, invalid or of a version this build does not read."""

    exit_code = EXIT_DATA


class InputMissingError(LstmError):
    exit_code = EXIT_NO_INPUT


class MissingDependencyError(LstmError):
    exit_code = EXIT_MISSING_DEPENDENCY


class OutputError(LstmError):
    """The output path cannot be created (a directory, a read-only folder, the input itself...)."""

    exit_code = EXIT_CANNOT_CREATE


class WriteError(LstmError):
    """Writing failed part-way (disk full, I/O error); nothing the user had was replaced."""

    exit_code = EXIT_IO


class OutOfMemory(LstmError):
    """The process cannot get the memory the command needs (a limit set by ulimit, cgroups)."""

    exit_code = EXIT_IO


class LockedError(LstmError):
    exit_code = EXIT_LOCKED


class Interrupted(LstmError):
    """SIGINT or SIGTERM arrived; the run stopped cleanly."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = EXIT_SIGINT if signum == 2 else EXIT_SIGTERM
