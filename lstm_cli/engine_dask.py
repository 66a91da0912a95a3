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

import hashlib
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

from lstm_cli import atomic, frame, modelfile, pipeline
from lstm_cli.errors import DataError, InputMissingError, MissingDependencyError, OutputError, UsageError

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
        from lstm_cli.model import Forecaster

        header, arrays = modelfile.loads(model_bytes, source)
        model = Forecaster.from_file_parts(header, arrays, threads=threads)
        _MODELS.clear()  # one model per job: do not keep old ones alive
        _MODELS[key] = model
    return model


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
    spec = model.spec
    buf = io.BytesIO(part.to_csv(index=False).encode("utf-8"))
    source = f"{opts['source']} (partition {number})"
    try:
        series = frame.read_series("-", targets=spec.targets, features=spec.features, time_col=spec.time_col,
                                   id_col=spec.id_col, sep=",", freq=spec.freq, missing=opts["missing"],
                                   max_bytes=2**62, stdin=buf)
    except DataError as e:
        raise DataError(str(e).replace("<stdin>", source, 1)) from None
    prov = pipeline.Provenance(*opts["provenance"]) if opts["provenance"] else None
    columns, rows, notes = pipeline.predict_series(series, model, horizon=opts["horizon"], provenance=prov)
    notes = [n.replace("<stdin>", source) for n in notes]
    newest = int(series.times[series.starts[1:] - 1].max())
    return pd.DataFrame({"number": [number], "text": [frame.write_csv_text(rows, columns)],
                         "notes": ["\n".join(notes)], "series": [len(series.ids)], "newest": [newest]})


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
        raise InputMissingError(f"{data}: cannot be read ({getattr(e, 'strerror', None) or e}); check the "
                                "path (every worker must see it)") from None
    except ValueError as e:
        raise _unreadable(data, e, is_parquet) from None
    ddf = ddf.rename(columns={c: str(c).strip() for c in ddf.columns})
    absent = [c for c in columns if c not in ddf.columns]
    if absent:
        raise DataError(f"{data}: column{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))} "
                        f"not found; the header has {', '.join(repr(str(c)) for c in ddf.columns)}")
    return ddf[columns]


def _unreadable(data: str, e: BaseException, parquet: bool = False) -> DataError:
    """dask/pandas reader errors (ragged rows, bad bytes) as one line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(e).__name__
    return DataError(f"{data}: cannot be read as {'Parquet' if parquet else 'CSV'} ({reason}); fix the file "
                     "(every record needs as many fields as the header, UTF-8 text)")


def _check_out(out: str, data: str) -> bool:
    """True for one CSV file, False for a directory of part files; OutputError when hopeless."""
    if out.endswith(".csv"):
        atomic.check_output_path(out, inputs=(data,) if os.path.isfile(data) else ())
        return True
    target = atomic.resolve_target(out)
    if os.path.exists(target) and not os.path.isdir(target):
        raise OutputError(f"output {out} exists and is not a directory; --out names a directory of part "
                          "files, or a file ending in .csv")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create {out}: directory {parent} is missing or not writable; "
                          "choose another path")
    return False


def _publish_dir(tmp: str, target: str) -> None:
    """Put the finished directory tmp at target; an existing target is replaced only now."""
    if not os.path.exists(target):
        os.rename(tmp, target)
        return
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
                 provenance: bool = False, npartitions: int | None = None, blocksize="64MB",
                 retries: int = 2, n_workers: int | None = None,
                 on_progress: Callable[[int, int, int], None] = lambda done, total, series: None):
    """Forecast every series of data (path or glob; CSV, gzip or Parquet) on a dask cluster
    (`scheduler` address, else a LocalCluster of one single-threaded worker process per core)
    and write the forecast CSV to out (one file if it ends in .csv, else a directory of part
    files). Returns (notes, meta). on_progress(done, total, series) after every partition."""
    t0 = time.perf_counter()
    dask, dd, distributed = _import_dask()
    if not out or out == "-":
        raise UsageError("--engine dask writes files: give --out DIR (part files) or --out FILE.csv")
    one_file = _check_out(out, data)
    try:
        with open(model_path, "rb") as f:
            model_bytes = f.read()
    except OSError as e:
        raise InputMissingError(f"cannot read model file {model_path}: {e.strerror or e}; check the path") from None
    header, arrays = modelfile.loads(model_bytes, model_path)  # refuse a bad model before any work
    from lstm_cli.model import Forecaster

    model = Forecaster.from_file_parts(header, arrays, threads=1)
    spec = model.spec
    model_sha = hashlib.sha256(model_bytes).hexdigest()
    h = horizon or spec.horizon
    columns = [spec.time_col] + ([spec.id_col] if spec.id_col else []) + list(spec.columns)
    opts = {"model_source": model_path, "source": data, "threads": threads or 1, "missing": missing,
            "horizon": h, "provenance": (model_sha, header.get("created")) if provenance else None}

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
        raise InputMissingError(f"cannot reach the dask scheduler {scheduler}: {e}; start it with "
                                "`dask scheduler` and workers with `dask worker ADDRESS`") from None
    target = atomic.resolve_target(out)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=os.path.dirname(target))
    futures = []
    try:
        register = getattr(client, "register_plugin", None) or client.register_worker_plugin
        register(_warm_plugin(distributed))
        ddf = _read_input(dd, data, columns, sep, blocksize)
        if spec.id_col is None:  # one series: it must not be split
            ddf = ddf.repartition(npartitions=1)
        else:
            ddf[spec.id_col] = ddf[spec.id_col].astype(str).str.strip()  # read_series strips ids too
            ddf = ddf.shuffle(on=spec.id_col, npartitions=npartitions or ddf.npartitions)
        meta = {"number": "int64", "text": "object", "notes": "object", "series": "int64", "newest": "int64"}
        model_key = dask.delayed(model_bytes, pure=True)  # one key in the graph, not per task
        results = ddf.map_partitions(_forecast_partition, model_key, opts, meta=meta)
        parts = results.to_delayed()
        futures = client.compute(parts, retries=retries)
        done, n_series, newest, notes, written = 0, 0, None, [], []
        for fut in distributed.as_completed(futures):
            try:
                row = fut.result().iloc[0]
            except (ValueError, UnicodeDecodeError) as e:  # the reader's, on a block read later
                raise _unreadable(data, e) from None
            fut.release()
            done += 1
            n_series += int(row["series"])
            if row["series"]:
                newest = int(row["newest"]) if newest is None else max(newest, int(row["newest"]))
                notes += [n for n in str(row["notes"]).split("\n") if n and n not in notes]
                path = os.path.join(tmp, PART_NAME.format(int(row["number"])))
                atomic.atomic_write(path, str(row["text"]).encode())
                written.append(path)
            on_progress(done, len(futures), int(row["series"]))
        if n_series == 0:
            raise DataError(f"{data}: no data rows; add one row per time step")
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
        if futures:
            client.cancel(futures)
        client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    notes += pipeline.horizon_notes(spec, h)
    meta = {"model": model_path, "model_sha256": model_sha, "model_created": header.get("created"),
            "series": n_series, "horizon": h, "partitions": len(futures),
            "seconds": round(time.perf_counter() - t0, 4)}
    return notes, meta
