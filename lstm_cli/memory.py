"""Memory estimates before large allocations: a run that would not fit is refused at once, with
the figure and a remedy, instead of being killed by the kernel's OOM killer (no message, no
cleanup) or dying half-way with a MemoryError.

`available_bytes()` is what this process may still allocate: the smallest of the system's
MemAvailable, the cgroup (v2 or v1) memory limit minus its usage, and RLIMIT_AS / RLIMIT_DATA
minus what the process already maps. The estimators are plain arithmetic (no numpy), so cli.py
may use them before the heavy imports; they are deliberately a little generous: a refusal names
the remedy, a kill names nothing.
"""

from __future__ import annotations

import os

from lstm_cli.errors import DataError, LstmError

_CGROUP_ROOT = "/sys/fs/cgroup"
SMALL = 64 * 2**20  # smaller requests are not checked
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)


class NotEnoughMemory(LstmError):
    """Mixed into the typed error `require` raises: callers that retry a failure another way
    (the reader's fast path falls back to the careful one) must not retry this one."""


_SHORTAGE: dict[type, type] = {}


def _shortage_of(error: type) -> type:
    """The subclass of `error` (DataError, UsageError, ...) that is also a NotEnoughMemory."""
    if error not in _SHORTAGE:
        _SHORTAGE[error] = type(f"NotEnough{error.__name__}", (error, NotEnoughMemory), {})
    return _SHORTAGE[error]


# The address space (`ulimit -v`) a command needs just to load what it imports. Below it nothing
# fails cleanly: OpenBLAS spins forever in blas_thread_init or exits 1, LLVM aborts, jemalloc
# segfaults, an import fails half-way. Measured on this build: predict ran from 650 MB (numba,
# LLVM, the kernels); info, validate and export from about 450 MB (numpy, pandas, onnx). With room
# for worker threads' stacks:
_KERNELS, _ARRAYS = 800 * 2**20, 512 * 2**20
ADDRESS_SPACE_NEEDED = {"train": _KERNELS, "predict": _KERNELS, "evaluate": _KERNELS, "warmup": _KERNELS,
                        "version": _KERNELS, "info": _ARRAYS, "validate": _ARRAYS, "export": _ARRAYS}


def address_space_problem(command: str | None) -> str | None:
    """Why the address-space limit is too small for `command` to load (None when it is not),
    checked before the heavy imports: what happens below it is a hang or an abort, not a
    MemoryError the tool could report."""
    need = ADDRESS_SPACE_NEEDED.get(command or "")
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if need is None or soft == resource.RLIM_INFINITY or soft >= need:
        return None
    return (f"the address-space limit (ulimit -v) is {fmt(soft)}, and lstm {command} needs about {fmt(need)} to load "
            f"its libraries: raise it (ulimit -v {need // 1024} or more)")


def fmt(nbytes: float) -> str:
    """A size for people: 38 GB, 1.2 GB, 350 MB, 12 kB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            value = nbytes / size
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read(64).strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _UNLIMITED else value


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_dirs() -> list[tuple[str, str, str]]:
    """(directory, limit file, usage file) of this process's memory cgroup and its ancestors."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2 unified hierarchy
            bases = [(_CGROUP_ROOT, "memory.max", "memory.current"),
                     (os.path.join(_CGROUP_ROOT, "unified"), "memory.max", "memory.current")]
        elif "memory" in controllers.split(","):
            bases = [(os.path.join(_CGROUP_ROOT, "memory"), "memory.limit_in_bytes", "memory.usage_in_bytes")]
        else:
            continue
        for base, limit, usage in bases:
            rel = path.strip("/")
            while True:  # the leaf, then each parent: any level's limit applies
                found.append((os.path.join(base, rel) if rel else base, limit, usage))
                if not rel:
                    break
                rel = os.path.dirname(rel)
    return found


def _cgroup_available() -> int | None:
    best = None
    for directory, limit_file, usage_file in _cgroup_dirs():
        limit = _read_int(os.path.join(directory, limit_file))
        if limit is None:
            continue
        usage = _read_int(os.path.join(directory, usage_file)) or 0
        room = max(0, limit - usage)
        best = room if best is None else min(best, room)
    return best


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rlimit_available() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    best = None
    for name, used_field in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        limit_id = getattr(resource, name, None)
        if limit_id is None:
            continue
        try:
            soft, _ = resource.getrlimit(limit_id)
        except (OSError, ValueError):
            continue
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        used = _status_kb(used_field) or 0
        room = max(0, soft - used)
        best = room if best is None else min(best, room)
    return best


def available_bytes() -> int | None:
    """Bytes this process can still allocate (None when nothing says: not Linux)."""
    figures = [v for v in (_meminfo_available(), _cgroup_available(), _rlimit_available()) if v is not None]
    return min(figures) if figures else None


def require(nbytes: float, what: str, remedy: str, error: type = DataError) -> None:
    """Refuse (raise `error`, which is also a NotEnoughMemory) when `what` would need more than
    the memory available: '<what> needs about 38 GB of memory (1.2 GB available); <remedy>'.
    error: DataError for sizes the data decides, ModelFileError for the model file's,
    UsageError for the options'. Below SMALL bytes nothing is probed: not worth reading /proc."""
    if nbytes < SMALL:
        return
    available = available_bytes()
    if available is None or nbytes <= available:
        return
    raise refusal(nbytes, available, what, remedy, error)


def refusal(nbytes: float, available: int, what: str, remedy: str, error: type = DataError) -> LstmError:
    """The error `require` raises, for a caller that compares its whole need with a figure it
    measured before it began allocating (a reader's budget), not with what is left now."""
    return _shortage_of(error)(f"{what} needs about {fmt(nbytes)} of memory ({fmt(available)} available); "
                               f"{remedy}")


# ---------------------------------------------------------------------------------------------
# Estimates (bytes). Each counts the arrays alive together at the peak of the step it guards.


def parameter_count(input_size: int, hidden: int, layers: int, outputs: int, gates: int) -> int:
    """Weights of the recurrent stack and the dense head (network.ParamLayout, in arithmetic)."""
    g = gates * hidden
    count = g * (input_size + hidden) + 2 * g
    count += (layers - 1) * (g * 2 * hidden + 2 * g)
    return count + outputs * hidden + outputs


def model_state_bytes(params: int, itemsize: int, shards: int, optimizer: str = "adam") -> int:
    """Training state: weights, the loop's gradient, the best weights, the optimizer's moments
    (Adam 2, SGD 1), one gradient buffer per batch shard, and the float64 draw of the
    initialisation (init_params). Per shard: two gradient buffers (the last, shorter batch of an
    epoch gets its own) and the kernels' scratch copies of the weights (the inference kernel
    copies all of them, the backward pass a layer's gradient parts): four copies in all."""
    moments = 2 if optimizer == "adam" else 1
    return params * (itemsize * (3 + moments + 4 * shards) + 8)


def batch_bytes(batch: int, lookback: int, input_size: int, hidden: int, layers: int, outputs: int, gates: int,
                itemsize: int, dropout: bool) -> int:
    """The forward/backward caches of one batch over all its shards (network._TrainBuffers),
    plus the batch copy and the dropout masks."""
    g = gates * hidden
    per_window_step = layers * (g + 3 * hidden) + max(layers - 1, 1) * hidden + 2 * g + 2 * hidden
    total = batch * lookback * (per_window_step + input_size) * itemsize + batch * (g + 2 * outputs) * itemsize
    if dropout and layers > 1:
        total += batch * (layers - 1) * lookback * hidden * (8 + 1 + itemsize)
    return total


def windows_bytes(n_windows: int, lookback: int, input_size: int, outputs: int, itemsize: int) -> int:
    """Training and validation windows: built in float64 (chunks per series, then joined: two
    copies at the peak), then converted to the network's dtype."""
    per_window = lookback * input_size + outputs
    return n_windows * per_window * (2 * 8 + itemsize)


def forecast_bytes(n_series: int, horizon: int, n_values: int, lookback: int, n_columns: int) -> int:
    """Model.forecast: the (S, horizon, values) float64 forecast as steps, joined, and rescaled
    (about four copies), and the input windows."""
    return n_series * (horizon * n_values * 8 * 4 + lookback * n_columns * 8 * 3)


def output_rows_bytes(n_rows: int, n_values: int, has_id: bool, provenance: bool, origins_x_horizon: int) -> int:
    """The rows predict renders, as Python lists (a float object and a pointer per value, a
    pointer per time and id), the formatted stamps, and the CSV text (the rows as strings, then
    joined: about three times the text)."""
    per_row = 8 + (8 if has_id else 0) + 32 * n_values
    text = 20 + 16 * n_values + (8 if has_id else 0)
    if provenance:
        per_row += 8 + 36 + 8 + 8
        text += 24 + 8 + 66 + 22
    return n_rows * (per_row + 3 * text) + origins_x_horizon * 80


def json_rows_bytes(n_rows: int, n_columns: int) -> int:
    """--format json: a dict per row, then the JSON text (about twice the rows)."""
    return n_rows * (240 + 40 * n_columns + 2 * (30 * n_columns))


def evaluation_bytes(origins: int, n_series: int, horizon: int, n_targets: int, n_quantiles: int) -> int:
    """Backtest records: one dict per (origin, series, target, method), three methods, of about
    ten scores each, and one origin's forecast."""
    records = origins * n_series * n_targets * 3 * 1400
    return records + n_series * horizon * n_targets * max(1, n_quantiles) * 8 * 4
