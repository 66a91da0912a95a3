"""Training checkpoints: a run killed at any moment (SIGKILL, power loss) continues with
`lstm train ... --resume` and ends with the model an uninterrupted run writes, bit for bit.

One file per output, beside it: `.{basename}.ckpt` (e.g. `.sales.lstm.ckpt` for `sales.lstm`;
symlinks resolved like the lock). It uses the model file's container (modelfile: magic, version,
checksummed JSON header, aligned arrays; no pickle) with its own header:

    format "lstm-checkpoint", checkpoint_version, lstm_version,
    fingerprint   sha256 of the data and of every setting that changes the result (below),
    data_sha256, settings    what the fingerprint covers, to say what changed on a mismatch,
    epoch, best_epoch, best_loss (null = inf), optimizer {name, step, lr},
    plateau {best (null = inf), bad_epochs}, rng_state (the numpy bit generator's state: a dict
    of str and int), history {train_loss, val_loss}

and arrays params, best_params and the optimizer's own (optim.m/optim.v or optim.velocity).

It is written atomically (atomic.atomic_output: temp file, fsync, rename, fsync of the
directory) after every finished epoch (Writer skips epochs only while checkpoints would cost more
than a tenth of the run), so it is always a complete, checksummed state; the final model is
saved before the checkpoint is removed. All of this runs under atomic.output_lock(out), which
is also what makes remove_stale_temps safe. What is at the checkpoint path when a run starts is
claimed first (claim): a file lstm did not write there is refused, never replaced or removed.

Resuming is exact because the loop's whole state is in the file and the kernels are
deterministic for a given thread count (which the fingerprint covers). A damaged checkpoint
only costs time (training starts over and reaches the same model); one of another run (other
data or settings) is refused with a DataError that says what differs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import time

import numpy as np

from lstm_cli import atomic, modelfile
from lstm_cli.errors import DataError, InputMissingError, ModelFileError, OutputError
from lstm_cli.errors import shown as quoted
from lstm_cli.train import TrainState

FORMAT = "lstm-checkpoint"
VERSION = 1
_OPTIMIZER_ARRAYS = {"adam": ("optim.m", "optim.v"), "sgd": ("optim.velocity",)}


def checkpoint_path_for(out) -> str:
    """`.{basename}.ckpt` beside the (symlink-resolved) output, like its `.lock`."""
    lock = atomic.lock_path_for(out)
    return lock[: -len(".lock")] + ".ckpt"


def fingerprint(settings: dict, data_sha256: str) -> str:
    """sha256 of the canonical JSON of the settings and the data digest."""
    text = json.dumps({"settings": settings, "data_sha256": data_sha256, "checkpoint_version": VERSION},
                      sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _float_or_none(x: float):
    return float(x) if math.isfinite(x) else None


def save(path: str, state: TrainState, *, settings: dict, data_sha256: str) -> bool:
    """Write `state` to `path` atomically. False (and the previous checkpoint kept) when the state
    holds a value a checkpoint cannot store (a non-finite weight or loss): resuming from the
    previous epoch reaches the same result, only later."""
    history = {"train_loss": [float(x) for x in state.train_loss],
               "val_loss": [None if v is None else float(v) for v in state.val_loss]}
    header = {
        "format": FORMAT,
        "checkpoint_version": VERSION,
        "lstm_version": _version(),
        "fingerprint": fingerprint(settings, data_sha256),
        "data_sha256": data_sha256,
        "settings": settings,
        "epoch": int(state.epoch),
        "best_epoch": int(state.best_epoch),
        "best_loss": _float_or_none(state.best_loss),
        "optimizer": {"name": state.optimizer, "step": int(state.optimizer_step), "lr": float(state.lr)},
        "plateau": {"best": _float_or_none(state.plateau_best), "bad_epochs": int(state.plateau_bad_epochs)},
        "rng_state": state.rng_state,
        "history": history,
    }
    arrays = {"params": state.params, "best_params": state.best_params, **state.optimizer_arrays}
    try:
        modelfile.save(path, header, arrays, schema=False)
    except ValueError:  # non-finite numbers: refused by the container
        return False
    return True


def _version() -> str:
    from lstm_cli import __version__

    return __version__


def _bad(path: str, problem: str) -> ModelFileError:
    return ModelFileError(f"checkpoint {quoted(path)} is unusable ({problem})")


def _describe_difference(path: str, ours: dict, theirs, data_ours: str, data_theirs) -> str:
    if not isinstance(theirs, dict):
        theirs = {}
    changed = [k for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
    parts = [f"{k} {json.dumps(theirs.get(k))} there, {json.dumps(ours.get(k))} here" for k in changed[:4]]
    if len(changed) > 4:
        parts.append(f"{len(changed) - 4} more")
    if data_ours != data_theirs:
        parts.insert(0, "the data changed")
    what = "; ".join(parts) or "a different lstm version"
    return (f"checkpoint {quoted(path)} belongs to another training run ({what}); rerun with the same data and "
            "options, or without --resume to train from the start")


class _Refused(Exception):
    """Carries load's error out of the header check, past modelfile's wrapping of it."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def load(path: str, *, settings: dict, data_sha256: str, params: int | None = None,
         dtype: str | None = None) -> TrainState | None:
    """The TrainState stored at `path`, or None when there is no checkpoint. A checkpoint of
    another run (different data or settings) is a DataError; a damaged one a ModelFileError;
    params/dtype: the size and dtype of this run's network, when known, which the arrays must
    have. All of it is decided from the header, before the payload is read: another run's (or
    a planted) checkpoint is refused without reading its arrays. The state's arrays are
    read-only views of the payload (fit copies them into its own buffers)."""
    if not os.path.lexists(path):
        return None
    fields: dict = {}

    def check(header: dict) -> None:
        fields.update(_check_header(path, header, settings, data_sha256, params, dtype))

    try:
        _, arrays = modelfile.load(path, schema=False, header_check=check)
    except _Refused as e:
        raise e.error from None
    except ModelFileError as e:
        raise _bad(path, str(e)) from None
    names = _OPTIMIZER_ARRAYS[fields["optimizer"]]
    return TrainState(params=arrays["params"], best_params=arrays["best_params"],
                      optimizer_arrays={k: arrays[k] for k in names}, **fields)


def _check_header(path: str, header: dict, settings: dict, data_sha256: str, params: int | None,
                  dtype: str | None) -> dict:
    """The TrainState fields of a checkpoint's header, after its format, fingerprint and array
    table are checked (raises _Refused)."""
    if header.get("format") != FORMAT:
        raise _Refused(_bad(path, f"format {header.get('format')!r} is not {FORMAT!r}"))
    if header.get("checkpoint_version") != VERSION:
        raise _Refused(_bad(path, f"checkpoint version {header.get('checkpoint_version')!r}; this lstm reads "
                                  f"{VERSION}"))
    if header.get("fingerprint") != fingerprint(settings, data_sha256):
        raise _Refused(DataError(_describe_difference(path, settings, header.get("settings"), data_sha256,
                                                      header.get("data_sha256"))))
    try:
        fields = _fields_from(header)
        _check_arrays(header["arrays"], fields["optimizer"], params, dtype)
    except (KeyError, TypeError, ValueError) as e:
        raise _Refused(_bad(path, f"bad field: {type(e).__name__}: {e}")) from None
    return fields


def _int(value, lo: int = 0) -> int:
    if type(value) is not int or value < lo:
        raise ValueError(f"expected an integer >= {lo}, got {value!r}")
    return value


def _loss(value) -> float:
    if value is None:
        return math.inf
    if type(value) not in (int, float):
        raise ValueError(f"expected a number or null, got {value!r}")
    return float(value)


def _finite(value) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _fields_from(header: dict) -> dict:
    """TrainState's fields other than the arrays, checked."""
    opt = header["optimizer"]
    name = opt["name"]
    if name not in _OPTIMIZER_ARRAYS:
        raise ValueError(f"unknown optimizer {name!r}")
    epoch = _int(header["epoch"])
    history = header["history"]
    train_loss = [float(_loss(x)) for x in history["train_loss"]]
    val_loss = [None if v is None else _loss(v) for v in history["val_loss"]]
    if len(train_loss) != epoch or len(val_loss) != epoch:
        raise ValueError(f"history of {len(train_loss)} epochs for epoch {epoch}")
    rng_state = header["rng_state"]
    probe = np.random.default_rng(0)
    probe.bit_generator.state = rng_state  # refuses a state of another generator or a bad shape
    return dict(epoch=epoch, best_loss=_loss(header["best_loss"]), best_epoch=_int(header["best_epoch"]),
                optimizer=name, optimizer_step=_int(opt["step"]), lr=_finite(opt["lr"]),
                plateau_best=_loss(header["plateau"]["best"]),
                plateau_bad_epochs=_int(header["plateau"]["bad_epochs"]), rng_state=rng_state,
                train_loss=train_loss, val_loss=val_loss)


def _check_arrays(table: list[dict], optimizer: str, params: int | None, dtype: str | None) -> None:
    """The array table (modelfile checked its form): params, best_params and the optimizer's
    arrays, all one-dimensional of one length and dtype (this run's network's, when given)."""
    expected = {"params", "best_params", *_OPTIMIZER_ARRAYS[optimizer]}
    names = {entry["name"] for entry in table}
    if names != expected:
        raise ValueError(f"arrays {sorted(names)}, expected {sorted(expected)}")
    shapes = {(tuple(entry["shape"]), entry["dtype"]) for entry in table}
    if len(shapes) != 1 or len(next(iter(shapes))[0]) != 1:
        raise ValueError("arrays differ in shape or dtype, or are not one-dimensional")
    (size,), code = next(iter(shapes))
    if params is not None and size != params:
        raise ValueError(f"arrays of {size:,} parameters; this run's network has {params:,}")
    if dtype is not None and code != np.dtype(dtype).str:
        raise ValueError(f"arrays of dtype {code}; this run's network is {dtype}")


def resume_state(path: str, *, settings: dict, data_sha256: str, params: int | None = None,
                 dtype: str | None = None) -> tuple[TrainState | None, str | None]:
    """(state, None) from the checkpoint at `path`; (None, None) when there is none; (None, why) when
    it is damaged or unreadable: training from the start reaches the same model (only later), so a
    damaged checkpoint (power loss, disk error) costs time, never the run. A checkpoint of another
    run (other data or settings) is refused: DataError. params/dtype: as load's."""
    try:
        return load(path, settings=settings, data_sha256=data_sha256, params=params, dtype=dtype), None
    except (ModelFileError, InputMissingError) as e:
        return None, str(e)


class Writer:
    """fit's on_state: writes a checkpoint after an epoch, unless the time since the last one is
    less than `1 / max_overhead` times what that one took to write (so checkpoints cost at most
    about max_overhead of the run; with epochs of a few ms an fsync'ed write of ~10 ms every
    epoch would otherwise triple the time). The first finished epoch is always written.
    max_overhead None: every epoch."""

    def __init__(self, path: str, *, settings: dict, data_sha256: str, max_overhead: float | None = 0.1,
                 clock=time.monotonic):
        self.path, self.settings, self.data_sha256 = path, settings, data_sha256
        self.max_overhead, self.clock = max_overhead, clock
        self.last_epoch = 0  # the epoch of the last checkpoint written
        self.writes = 0
        self._last_end: float | None = None
        self._last_cost = 0.0

    def __call__(self, state: TrainState) -> None:
        start = self.clock()
        if (self.max_overhead is not None and self._last_end is not None
                and start - self._last_end < self._last_cost / self.max_overhead):
            return
        if save(self.path, state, settings=self.settings, data_sha256=self.data_sha256):
            self.last_epoch = state.epoch
            self.writes += 1
        self._last_end = self.clock()
        self._last_cost = self._last_end - start


def _not_ours(path: str, what: str) -> OutputError:
    return OutputError(f"{quoted(path)} exists and {what}, so lstm did not write it (lstm keeps its training "
                       "checkpoint there); move it away or choose another --out")


def claim(path: str) -> int | None:
    """Before any work: the epoch of the lstm checkpoint at `path` (0 for a damaged one, which
    only costs time), or None when there is none. Whatever else is there (a symlink, a FIFO, a
    directory, a hard link, a file lstm did not write, such as a user's model or notes named
    like the checkpoint) is refused with OutputError (exit 73): it is never replaced or removed.
    So is a checkpoint another user could have written (runtime.file_problem): never loaded.
    An lstm checkpoint is an lstm container (modelfile.MAGIC) whose header, when it still reads,
    names the checkpoint format."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OutputError(f"cannot use the checkpoint path {quoted(path)}: {e.strerror or e}; choose another --out") from e
    if stat.S_ISLNK(st.st_mode):
        raise _not_ours(path, "is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise _not_ours(path, "is not a regular file")
    if st.st_nlink != 1:
        raise _not_ours(path, "has other hard links")
    from lstm_cli.runtime import file_problem

    problem = file_problem(path, st)  # --resume would load its weights and optimizer state
    if problem:
        raise OutputError(f"checkpoint {quoted(path)} {problem}; lstm never loads a checkpoint another user "
                          "could have written: remove it (training starts again from epoch 1) or choose an --out "
                          "in a folder only you can write")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            head = os.pread(fd, len(modelfile.MAGIC), 0)
        finally:
            os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot read the checkpoint {quoted(path)}: {e.strerror or e}; move it away or "
                          "choose another --out") from e
    if head != modelfile.MAGIC:
        raise _not_ours(path, "is not an lstm checkpoint")
    try:  # the payload is checked as it streams by, never held
        header = modelfile.load_header(path, schema=False)
    except (ModelFileError, InputMissingError):
        return 0  # an lstm container that no longer reads: a damaged checkpoint
    if header.get("format") != FORMAT:
        raise _not_ours(path, f"is an lstm file of format {header.get('format')!r}, not a checkpoint")
    epoch = header.get("epoch")
    return epoch if type(epoch) is int and epoch >= 0 else 0


def kept_note(path: str, epoch: int) -> str:
    """The note of a run without --resume that finds a checkpoint (claim's epoch): the checkpoint
    stays until this run's first one replaces it, so a rerun with --resume can still use it."""
    found = (f"checkpoint {quoted(path)} of a stopped run after epoch {epoch}" if epoch
             else f"a damaged checkpoint {quoted(path)}")
    return (f"found {found}; training from epoch 1 without it (pass --resume to continue from it); "
            "this run's first checkpoint replaces it")


def remove(path: str) -> None:
    """Best effort: a leftover checkpoint of a finished run is harmless (ignored without
    --resume; with it, the last epoch is redone and gives the same model). Only a regular file
    is removed: claim() checked at the start that it is lstm's."""
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's process, or not a pid at all
    return True


def remove_stale_temps(out) -> list[str]:
    """Delete temporary files a killed run left beside `out` and its checkpoint
    (`.{name}.tmp-{pid}-{random}`). Only call it holding atomic.output_lock(out): every writer of
    these paths holds that lock, so such a file is an orphan. What is deleted is only what an
    lstm run created: the exact mkstemp name, a regular file (not a symlink) with one link, owned
    by us, whose pid is no running process (a live one may be another output's writer whose
    name happens to match: `--out .m.lstm.ckpt` writes `..m.lstm.ckpt.tmp-*`). Returns the removed paths."""
    directory = os.path.dirname(atomic.resolve_target(out))
    prefixes = []
    for target in (atomic.resolve_target(out), checkpoint_path_for(out)):
        prefix = atomic.temp_prefix_for(target)  # `.{base}.tmp-{our pid}-`
        prefixes.append(prefix[: prefix.rindex(".tmp-") + len(".tmp-")])
    pattern = re.compile("(?:" + "|".join(re.escape(p) for p in prefixes) + r")(\d+)-[a-z0-9_]{8}")  # mkstemp's names
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m is None or _running(int(m.group(1))):  # (our own pid is running: never ours in progress)
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.geteuid():
                os.unlink(path)
                removed.append(path)
        except OSError:
            pass
    return removed


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def settings_for(req, **resolved) -> dict:
    """What the fingerprint covers besides the data: every field of the TrainRequest and of its
    TrainConfig except the paths and the parsing options whose effect the data digest already
    covers (sep, missing), with the values the run resolved (lookback, threads, columns, freq)
    in place of the defaults, and the lstm version."""
    import dataclasses

    skip = {"data", "out", "sep", "missing", "train"}
    settings = {f.name: _plain(getattr(req, f.name)) for f in dataclasses.fields(req) if f.name not in skip}
    for f in dataclasses.fields(req.train):
        settings[f"train.{f.name}"] = _plain(getattr(req.train, f.name))
    settings.update({k: _plain(v) for k, v in resolved.items()})
    settings["lstm_version"] = _version()
    return settings
