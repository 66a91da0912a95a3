"""`lstm predict --engine dask`: the same forecast, with the input split over a dask cluster.

    input (CSV, .csv.gz, globs, Parquet)  --dask.dataframe-->  partitions of rows
    shuffle on the id column              --> every series lies whole in one partition
    map_partitions(_forecast_partition)   --> each partition: rows -> CSV text -> frame.read_series
                                              -> pipeline.predict_series (the local engine's own
                                              partition function) -> forecast CSV text
    the client writes each result as a part file in a temporary directory as it arrives, and
    renames the directory to --out once every partition has succeeded (or joins the parts into
    one file when --out ends in .csv). A failure leaves no partial output and an existing --out
    as it was.

`lstm evaluate --engine dask` (evaluate_dask) reads and shuffles the same way and runs
_evaluate_partition: frame.read_series -> evaluate.score_series (the local engine's own scoring
of a set of series) -> the records as JSON text; the client sorts them into the local order
and builds the same Evaluation.

Each partition's rows go through frame.read_series, so both engines validate, sort and refuse
data by the same rules (line numbers in messages then count within the partition's text).

The model travels inside the task graph as the bytes of its file (one graph key, fetched once
per worker) and is loaded with modelfile.loads, the safe loader; a WorkerPlugin warms the JIT on
every worker as it joins. Tasks are retried (`retries`); a worker that dies mid-job has its
tasks rerun elsewhere by the scheduler.

Inputs must be readable by every worker, by the same path (a shared filesystem, or a URL that
fsspec reads); the output is written by this process only.

Only this module imports dask; the local engine never does. Without dask and distributed
installed, MissingDependencyError (exit 69) says what to install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

from lstm_cli import atomic, errors, frame, modelfile, pipeline
from lstm_cli.errors import (
    DataError,
    InputMissingError,
    LstmError,
    MissingDependencyError,
    OutputError,
    UsageError,
)

PIP_INSTALL = "pip install 'lstm-cli[dask]'"
PART_NAME = "part-{:05d}.csv"


def _import_dask():
    try:
        import dask
        import dask.dataframe as dd
        import distributed
    except ImportError as e:
        missing = e.name or "dask"
        raise MissingDependencyError(f"--engine dask needs dask and distributed ({missing} is not installed); "
                                     f"install them with: {PIP_INSTALL}") from None
    return dask, dd, distributed


# ----------------------------------------------------------------------------------------------
# on the workers


_MODELS: dict[tuple[str, int], object] = {}  # (sha256, threads) -> Forecaster, per worker process


def _model_from_bytes(model_bytes: bytes, source: str, threads: int):
    key = (hashlib.sha256(model_bytes).hexdigest(), threads)
    model = _MODELS.get(key)
    if model is None:
        from lstm_cli.model import forecaster_of

        header, arrays = modelfile.loads(model_bytes, source)
        model = forecaster_of(header, arrays, threads=threads)
        _MODELS.clear()  # one model per job: do not keep old ones alive
        _MODELS[key] = model
    return model


def _read_partition(part, spec, missing: str, source: str) -> frame.SeriesSet:
    """A partition's rows (a pandas DataFrame) through the model's reader, as the local engine reads
    a file; messages name `source` instead of <stdin>."""
    # '\r\n': the csv module quotes a field holding '\r' (an id) only when the terminator holds one
    buf = io.BytesIO(part.to_csv(index=False, lineterminator="\r\n").encode("utf-8"))
    try:
        return pipeline.read_like_model("-", spec, missing=missing, max_bytes=2**62, stdin=buf)
    except DataError as e:
        raise DataError(str(e).replace("<stdin>", source, 1)) from None


def _named(series: frame.SeriesSet, source: str) -> frame.SeriesSet:
    """series (and its future rows, whose file the future-row checks name) as read from `source`."""
    future = None if series.future is None else dataclasses.replace(series.future, source=source)
    return dataclasses.replace(series, source=source, future=future)


def _reported(func):
    """A partition function whose refusals (bad data, a series too short, ...) come back as a row
    (`error`, `error_class`) instead of an exception: the worker logs no traceback on the user's
    stderr and the scheduler does not retry what is not transient; the client raises it again."""

    @functools.wraps(func)
    def run(part, model_bytes: bytes, opts: dict, partition_info=None):
        import pandas as pd

        try:
            out = func(part, model_bytes, opts, partition_info)
        except LstmError as e:
            return pd.DataFrame({**{k: [v] for k, v in _blank_row(opts["meta"]).items()},
                                 "error": [str(e)], "error_class": [type(e).__name__]})
        return out.assign(error="", error_class="")

    return run


def _blank_row(meta: dict) -> dict:
    return {k: (0 if dtype == "int64" else "") for k, dtype in meta.items()}


def _raise_reported(row) -> None:
    """The partition's refusal, as the class it was raised with (DataError when unknown)."""
    if row["error"]:
        cls = getattr(errors, str(row["error_class"]), None)
        if not (isinstance(cls, type) and issubclass(cls, LstmError)) or cls is errors.Interrupted:
            cls = DataError
        raise cls(str(row["error"]))


@_reported
def _forecast_partition(part, model_bytes: bytes, opts: dict, partition_info=None):
    """One partition (a pandas DataFrame of whole series) -> a one-row frame with the forecast as
    CSV text, the notes, the number of series and the newest time."""
    import pandas as pd

    number = partition_info["number"] if partition_info else -1
    empty = pd.DataFrame({"number": [number], "text": [""], "notes": [""], "series": [0],
                          "newest": [np.iinfo(np.int64).min]})
    if len(part) == 0:
        return empty
    model = _model_from_bytes(model_bytes, opts["model_source"], opts["threads"])
    source = f"{opts['source']} (partition {number})"
    series = _read_partition(part, model.spec, opts["missing"], source)
    series = _named(series, opts["source"])  # messages as the local engine words them
    prov = pipeline.Provenance(*opts["provenance"]) if opts["provenance"] else None
    columns, rows, notes = pipeline.predict_series(series, model, horizon=opts["horizon"], provenance=prov,
                                                   precision=opts.get("precision"), intervals=opts.get("intervals", ()))
    notes = [n.replace("<stdin>", source) for n in notes]
    newest = int(series.times[series.starts[1:] - 1].max())
    text = frame.write_csv_text(rows, columns, excel_safe=opts.get("excel_safe", False))
    return pd.DataFrame({"number": [number], "text": [text],
                         "notes": ["\n".join(notes)], "series": [len(series.ids)], "newest": [newest]})


@_reported
def _evaluate_partition(part, model_bytes: bytes, opts: dict, partition_info=None):
    """One partition of whole series -> a one-row frame: the backtest records of its series
    (evaluate.score_series, the local engine's own scoring) as JSON text, the notes, the number
    of series, and the first too-short series (id and message) instead of records if any."""
    import pandas as pd

    from lstm_cli import evaluate

    number = partition_info["number"] if partition_info else -1
    out = {"number": [number], "text": ["[]"], "notes": [""], "series": [0], "short_id": [""], "short": [""],
           "future_rows": [0], "future_series": [0]}
    if len(part) == 0:
        return pd.DataFrame(out)
    model = _model_from_bytes(model_bytes, opts["model_source"], opts["threads"])
    spec = model.spec
    series = _read_partition(part, spec, opts["missing"], f"{opts['source']} (partition {number})")
    frame.check_model_phase(series, spec.freq, model.ids, model.last_time)  # as the local engine
    series = _named(series, opts["source"])  # messages as the local engine words them
    out["series"] = [len(series.ids)]
    if series.future is not None:  # split off by the reader: the client notes them as the local engine does
        out["future_rows"] = [int(series.future.starts[-1])]
        out["future_series"] = [int((np.diff(series.future.starts) > 0).sum())]
    notes = [n.replace("<stdin>", opts["source"]) for n in series.warnings]
    need, why = evaluate.fixed_need(spec, opts["backtests"], opts["step"])
    short = evaluate.too_short(series, need, why)
    if short is not None:  # reported by the client for the first such series of the whole input
        out["short_id"], out["short"] = [short[0]], [short[1]]
        return pd.DataFrame(out)
    records, forecast_notes = evaluate.score_series(series, model, backtests=opts["backtests"], step=opts["step"],
                                                    season=opts["season"])
    out["text"] = [json.dumps(records)]
    out["notes"] = ["\n".join(notes + forecast_notes)]
    return pd.DataFrame(out)


def _warm_plugin(distributed):
    class WarmUp(distributed.WorkerPlugin):
        """Compiles (or loads from the disk cache) the kernels once per worker, before tasks."""

        name = "lstm-warm-up"

        def setup(self, worker):
            import dask.dataframe  # noqa: F401 - imported before tasks arrive (a concurrent import can fail)

            pipeline.warm_up()

    return WarmUp()


# ----------------------------------------------------------------------------------------------
# on the client


def _read_input(dd, data: str, columns: list[str], sep: str, blocksize):
    """A dask DataFrame of the needed columns, as text for CSV (so read_series sees the file's own
    strings), as stored for Parquet."""
    is_parquet = data.endswith((".parquet", ".pq")) or os.path.isdir(data)
    try:
        if is_parquet:
            ddf = dd.read_parquet(data)
        else:
            gz = data.endswith(".gz")
            ddf = dd.read_csv(data, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                              compression="gzip" if gz else None, blocksize=None if gz else blocksize)
    except (FileNotFoundError, OSError) as e:
        raise InputMissingError(f"{errors.shown(data)}: cannot be read ({getattr(e, 'strerror', None) or e}); check the "
                                "path (every worker must see it)") from None
    except ValueError as e:
        raise _unreadable(data, e, is_parquet) from None
    ddf = ddf.rename(columns={c: str(c).strip() for c in ddf.columns})
    absent = [c for c in columns if c not in ddf.columns]
    if absent:
        raise DataError(f"{errors.shown(data)}: column{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))} "
                        f"not found; the header has {', '.join(repr(str(c)) for c in ddf.columns)}")
    return ddf[columns]


def _read_model(model_path: str):
    """(bytes, header, Forecaster) of the model file; a bad model is refused before any work."""
    try:
        with open(model_path, "rb") as f:
            model_bytes = f.read()
    except OSError as e:
        raise InputMissingError(f"cannot read model file {errors.shown(model_path)}: {e.strerror or e}; check the path") from None
    header, arrays = modelfile.loads(model_bytes, model_path)
    from lstm_cli.model import forecaster_of

    return model_bytes, header, forecaster_of(header, arrays, threads=1)


@contextlib.contextmanager
def _connect(distributed, scheduler: str | None, n_workers: int | None):
    """A client of the scheduler at `scheduler`, else of a LocalCluster of one single-threaded
    worker process per core, with the warm-up plugin registered; closed (and the cluster) on exit."""
    cluster = None
    if scheduler is None:
        cluster = distributed.LocalCluster(n_workers=n_workers or pipeline.default_threads(), threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           silence_logs=logging.ERROR)
    try:
        client = distributed.Client(scheduler if scheduler is not None else cluster)
    except OSError as e:
        if cluster is not None:
            cluster.close()
        raise InputMissingError(f"cannot reach the dask scheduler {errors.shown(scheduler)}: {e}; start it with "
                                "`dask scheduler` and workers with `dask worker ADDRESS`") from None
    except (ValueError, TypeError) as e:  # distributed's address parsing: a scheme, host or port it cannot read
        if cluster is not None:
            cluster.close()
        raise UsageError(f"--scheduler {errors.shown(scheduler)} is not a scheduler address ({e}); give one like "
                         "tcp://host:8786") from None
    try:
        register = getattr(client, "register_plugin", None) or client.register_worker_plugin
        register(_warm_plugin(distributed))
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _check_data(data: str) -> None:
    """The dask engine reads DATA itself, from files: '-' (stdin) would be taken for a file named '-'."""
    if data == "-":
        raise UsageError("DATA -: --engine dask reads files (a path, a glob or Parquet), not stdin; give a path, "
                         "or leave --engine dask out to read stdin")


def _by_series(dd, data: str, spec, sep: str, blocksize, npartitions: int | None):
    """The input's needed columns, shuffled on the id column so that every series lies whole in
    one partition (one partition when there is no id column)."""
    columns = [spec.time_col] + ([spec.id_col] if spec.id_col else []) + list(spec.columns)
    ddf = _read_input(dd, data, columns, sep, blocksize)
    if spec.id_col is None:  # one series: it must not be split
        return ddf.repartition(npartitions=1)
    ddf[spec.id_col] = ddf[spec.id_col].astype(str)  # verbatim, as read_series keeps them
    return ddf.shuffle(on=spec.id_col, npartitions=npartitions or ddf.npartitions)


def _run(client, dask, distributed, ddf, func, model_bytes: bytes, opts: dict, meta: dict, retries: int, data: str):
    """map_partitions(func) over ddf on the cluster: yields (row, partitions) with the one-row
    result of each partition as it completes; reader errors as DataError. Tasks still queued or
    running are cancelled when the caller stops early (an error)."""
    model_key = dask.delayed(model_bytes, pure=True)  # one key in the graph, not per task
    opts = {**opts, "meta": meta}
    meta = {**meta, "error": "object", "error_class": "object"}
    parts = ddf.map_partitions(func, model_key, opts, meta=meta).to_delayed()
    futures = client.compute(parts, retries=retries)
    try:
        for fut in distributed.as_completed(futures):
            try:
                row = fut.result().iloc[0]
            except (ValueError, UnicodeDecodeError) as e:  # the reader's, on a block read later
                raise _unreadable(data, e) from None
            _raise_reported(row)
            fut.release()
            yield row, len(futures)
    finally:
        client.cancel(futures)


def _unreadable(data: str, e: BaseException, parquet: bool = False) -> DataError:
    """dask/pandas reader errors (ragged rows, bad bytes) as one line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(e).__name__
    return DataError(f"{errors.shown(data)}: cannot be read as {'Parquet' if parquet else 'CSV'} ({reason}); fix the file "
                     "(every record needs as many fields as the header, UTF-8 text)")


def _check_out(out: str, data: str) -> bool:
    """True for one CSV file, False for a directory of part files; OutputError when hopeless."""
    if out.endswith(".csv"):
        atomic.check_output_path(out, inputs=(data,) if os.path.isfile(data) else ())
        return True
    target = atomic.resolve_target(out)
    if os.path.exists(target) and not os.path.isdir(target):
        raise OutputError(f"output {errors.shown(out)} exists and is not a directory; --out names a directory of part "
                          "files, or a file ending in .csv")
    _refuse_foreign_dir(target, out)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create {errors.shown(out)}: directory {errors.shown(parent)} is missing or not writable; "
                          "choose another path")
    return False


_PART_FILE = re.compile(r"part-\d{5,}\.csv")


def _refuse_foreign_dir(target: str, shown: str) -> None:
    """An existing --out directory is replaced whole: only one that holds nothing but part files
    (an earlier run's output) may be, never a folder of the user's."""
    if not os.path.isdir(target):
        return
    with os.scandir(target) as entries:
        for entry in entries:
            if not (_PART_FILE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)):
                raise OutputError(f"output directory {errors.shown(shown)} holds {errors.shown(entry.name)}, which "
                                  "lstm did not write; --out DIR is replaced whole, so it must be new or hold only "
                                  "part files of an earlier run: choose another path")


def _publish_dir(tmp: str, target: str) -> None:
    """Put the finished directory tmp at target; an existing target is replaced only now (and only
    if it still holds nothing but part files)."""
    if not os.path.exists(target):
        os.rename(tmp, target)
        return
    _refuse_foreign_dir(target, target)
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=os.path.dirname(target))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def predict_dask(model_path: str, data: str, out: str, *, scheduler: str | None = None,
                 horizon: int | None = None, sep: str = ",", missing: str = "interpolate",
                 threads: int | None = None, max_age: float | None = None, now_ns: int | None = None,
                 provenance: bool = False, precision: int | None = None, excel_safe: bool = False,
                 intervals=(), npartitions: int | None = None, blocksize="64MB", retries: int = 2, n_workers: int | None = None,
                 on_progress: Callable[[int, int, int], None] = lambda done, total, series: None):
    """Forecast every series of data (path or glob; CSV, gzip or Parquet) on a dask cluster
    (`scheduler` address, else a LocalCluster of one single-threaded worker process per core)
    and write the forecast CSV to out (one file if it ends in .csv, else a directory of part
    files). Returns (notes, meta). on_progress(done, total, series) after every partition.
    intervals: predict --intervals' levels (or "all"), checked against the model before any work;
    each partition adds the bounds of its own series (each from its own window, as locally)."""
    t0 = time.perf_counter()
    dask, dd, distributed = _import_dask()
    if not out or out == "-":
        raise UsageError("--engine dask writes files: give --out DIR (part files) or --out FILE.csv")
    _check_data(data)
    one_file = _check_out(out, data)
    model_bytes, header, model = _read_model(model_path)  # refuse a bad model before any work
    spec = model.spec
    model_sha = hashlib.sha256(model_bytes).hexdigest()
    h = horizon or spec.horizon
    if intervals:
        from lstm_cli import intervals as conformal

        intervals = conformal.check_request(model, intervals, h)  # exit 2 before any work; "all" -> the levels
    opts = {"model_source": model_path, "source": data, "threads": threads or 1, "missing": missing,
            "horizon": h, "provenance": (model_sha, header.get("created")) if provenance else None,
            "precision": precision, "excel_safe": excel_safe, "intervals": tuple(intervals)}

    target = atomic.resolve_target(out)
    with _connect(distributed, scheduler, n_workers) as client:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=os.path.dirname(target))
        try:
            ddf = _by_series(dd, data, spec, sep, blocksize, npartitions)
            meta = {"number": "int64", "text": "object", "notes": "object", "series": "int64", "newest": "int64"}
            done, n_series, newest, notes, written = 0, 0, None, [], []
            run = _run(client, dask, distributed, ddf, _forecast_partition, model_bytes, opts, meta, retries, data)
            with contextlib.closing(run) as rows:
                for row, total in rows:
                    done += 1
                    n_series += int(row["series"])
                    if row["series"]:
                        newest = int(row["newest"]) if newest is None else max(newest, int(row["newest"]))
                        notes += [n for n in str(row["notes"]).split("\n") if n and n not in notes]
                        path = os.path.join(tmp, PART_NAME.format(int(row["number"])))
                        atomic.atomic_write(path, str(row["text"]).encode())
                        written.append(path)
                    on_progress(done, total, int(row["series"]))
            if n_series == 0:
                raise DataError(f"{errors.shown(data)}: no data rows; add one row per time step")
            if max_age is not None:  # on the newest row of the whole input, not of one partition
                one = frame.SeriesSet(source=data, time_col=spec.time_col, id_col=None, columns=spec.columns,
                                      n_targets=len(spec.targets), ids=("\x00",), starts=np.array([0, 1]),
                                      values=np.zeros((1, len(spec.columns))), times=np.array([newest]),
                                      time_kind=spec.time_kind, step=spec.step, freq=spec.freq, warnings=())
                pipeline.check_freshness(one, model, max_age, now_ns)
            written.sort()
            with atomic.output_lock(out):
                if one_file:
                    with atomic.atomic_output(out, "wb") as f:
                        for k, path in enumerate(written):
                            with open(path, "rb") as part:
                                if k:
                                    part.readline()  # the header once
                                shutil.copyfileobj(part, f, 1 << 20)
                else:
                    _publish_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    notes += pipeline.horizon_notes(spec, h)
    meta = {"model": model_path, "model_sha256": model_sha, "model_created": header.get("created"),
            "series": n_series, "horizon": h, "partitions": done,
            "seconds": round(time.perf_counter() - t0, 4)}
    return notes, meta


def _first_series_season(ddf, spec, missing: str, data: str) -> int:
    """The season the local engine takes, from the frequency or, for intraday data without a
    seasonal alias, from the days of the first series (in id order): those rows are fetched."""
    if spec.time_kind != "datetime" or (spec.freq and not 0 < spec.step < pipeline.DAY_NS):
        return pipeline.season_length(spec.freq, spec.step, spec.time_kind)
    if spec.id_col is not None:
        first = ddf[spec.id_col].min().compute()
        ddf = ddf[ddf[spec.id_col] == first]
    series = _read_partition(ddf.compute(), spec, missing, data)
    return pipeline.season_length(series.freq or spec.freq, series.step, series.time_kind,
                                  series.times[: series.starts[1]])


def evaluate_dask(model_path: str, data: str, *, backtests: int = 1, step: int | None = None,
                  season: int | None = None, sep: str = ",", missing: str = "interpolate",
                  threads: int | None = None, scheduler: str | None = None, npartitions: int | None = None,
                  blocksize="64MB", retries: int = 2, n_workers: int | None = None, coverage_gates=(),
                  on_progress: Callable[[int, int, int], None] = lambda done, total, series: None):
    """`lstm evaluate --engine dask`: the fixed-model backtest of every series of data, the input
    read and shuffled on the id column as predict_dask does, each partition scored by
    evaluate.score_series (the local engine's scoring). The client sorts the records into the
    local engine's order (origin, then series id) and returns the same Evaluation. The season is
    decided once, here. on_progress(done, total, series) after every partition. coverage_gates:
    as evaluate_from_csv's, checked against the model before the cluster starts."""
    from lstm_cli import evaluate

    _check_data(data)
    dask, dd, distributed = _import_dask()
    model_bytes, header, model = _read_model(model_path)
    evaluate.check_gate_levels(model, coverage_gates)
    spec = model.spec
    if not spec.targets:
        raise UsageError("the model has no targets")
    step = step or spec.horizon
    records, notes, shorts, n_series, done = [], [], [], 0, 0
    future_rows, future_series = 0, 0
    with _connect(distributed, scheduler, n_workers) as client:
        ddf = _by_series(dd, data, spec, sep, blocksize, npartitions)
        if season is None:
            season = _first_series_season(ddf, spec, missing, data)
        opts = {"model_source": model_path, "source": data, "threads": threads or 1, "missing": missing,
                "backtests": backtests, "step": step, "season": season}
        meta = {"number": "int64", "text": "object", "notes": "object", "series": "int64", "short_id": "object",
                "short": "object", "future_rows": "int64", "future_series": "int64"}
        run = _run(client, dask, distributed, ddf, _evaluate_partition, model_bytes, opts, meta, retries, data)
        with contextlib.closing(run) as rows:
            for row, total in rows:
                done += 1
                n_series += int(row["series"])
                future_rows += int(row["future_rows"])
                future_series += int(row["future_series"])
                if row["short"]:
                    shorts.append((str(row["short_id"]), str(row["short"])))
                elif row["series"]:
                    records += json.loads(row["text"])
                    notes += [n for n in str(row["notes"]).split("\n") if n and n not in notes]
                on_progress(done, total, int(row["series"]))
    if n_series == 0:
        raise DataError(f"{errors.shown(data)}: no data rows; add one row per time step")
    if shorts:  # the first too-short series of the whole input, as the local engine names it
        raise DataError(min(shorts)[1])
    records.sort(key=lambda r: (r["origin"], r["series"]))  # stable: targets and methods keep their order
    notes += evaluate.future_rows_note(future_rows, future_series)
    ev = evaluate.evaluation_of(records, notes, spec, backtests=backtests, step=step, season=season,
                                until=evaluate.training_end(model, spec.time_kind, spec.freq),
                                plan=evaluate.interval_plan(model))
    ev.future_rows = future_rows
    return ev
