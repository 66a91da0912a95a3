"""Many series: the local engine's one batched pass equals a per-series loop, and --engine dask
gives the local engine's rows, never splits a series, and leaves no partial output."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import frame, pipeline
from lstm_cli.cli import cli
from lstm_cli.errors import EXIT_DATA, EXIT_MISSING_DEPENDENCY

H = 3


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write_panel(path, n_series, lengths, seed=0, freq="D"):
    """Seasonal + noise series in long format (id, date, value); series s has lengths[s % len] rows,
    all ending on the same day except every 7th (one day earlier): several forecast origins."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        n = lengths[s % len(lengths)]
        end = pd.Timestamp("2026-03-01") - pd.Timedelta(days=1 if s % 7 == 0 else 0)
        dates = pd.date_range(end=end, periods=n, freq=freq)
        t = np.arange(n)
        level = rng.uniform(5, 500)
        v = level * (1 + 0.2 * np.sin(2 * np.pi * t / 7) + 0.05 * rng.normal(size=n))
        parts.append(pd.DataFrame({"id": f"s{s:05d}", "date": dates.strftime("%Y-%m-%d"), "value": v.round(3)}))
    df = pd.concat(parts).sample(frac=1.0, random_state=seed)  # row order must not matter
    df.to_csv(path, index=False)
    return df


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    write_panel(d / "train.csv", 30, [30, 24, 40])
    model = d / "m.lstm"
    r = run("train", d / "train.csv", "--id-col", "id", "--target", "value", "--horizon", H, "--lookback", 14,
            "--hidden", 4, "--epochs", 2, "--threads", 1, "--out", model, "-q")
    assert r.exit_code == 0, r.output
    return d, model


def local_frame(model, data, *extra):
    r = run("predict", model, data, *extra)
    assert r.exit_code == 0, r.output
    return pd.read_csv(io.StringIO(r.stdout), dtype=str)


def sorted_rows(df):
    return df.sort_values(["id", "date"]).reset_index(drop=True)


def assert_same_rows(got, want):
    """Same rows after sorting: every column equal as text, forecasts equal to float32 rounding
    (a partition of at most 4 series takes the network's small-batch kernel path, whose float32
    sums round differently in the last bits)."""
    got, want = sorted_rows(got), sorted_rows(want)
    assert list(got.columns) == list(want.columns)
    text = [c for c in got.columns if c != "value"]
    pd.testing.assert_frame_equal(got[text], want[text])
    np.testing.assert_allclose(got["value"].astype(float), want["value"].astype(float), rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------------------------
# local engine


def test_local_one_pass_equals_per_series_loop(trained):
    d, model_path = trained
    data = d / "two_thousand.csv"
    write_panel(data, 2000, [14, 15, 21, 30], seed=1)
    cols, rows, _, meta = pipeline.predict_from_csv(str(model_path), str(data), horizon=5, provenance=True)
    assert meta["series"] == 2000

    model, header = pipeline.load_model(str(model_path))
    series = frame.read_series(str(data), targets=("value",), time_col="date", id_col="id", freq=model.spec.freq)
    sha = pipeline.modelfile.file_sha256(str(model_path))
    freq = model.spec.freq or series.freq
    want: dict[str, list] = {c: [] for c in cols}
    for s, sid in enumerate(series.ids):  # the slow, obvious twin: one series at a time
        a, b = series.starts[s], series.starts[s + 1]
        values, _ = model.forecast((sid,), series.values[a:b], np.array([0, b - a]), 5)
        last = int(series.times[b - 1])
        stamps = frame.future_times(last, series.step, freq, series.time_kind, 5)
        want["date"] += frame.format_times(stamps, series.time_kind, freq)
        want["id"] += [sid] * 5
        want["origin"] += frame.format_times(np.array([last]), series.time_kind, freq) * 5
        want["step"] += [1, 2, 3, 4, 5]
        want["model_sha256"] += [sha] * 5
        want["model_created"] += [header.get("created")] * 5
        want["value"] += values[0, :, 0, 0].tolist()
    for c in cols:
        if c == "value":
            np.testing.assert_allclose(rows[c], want[c], rtol=1e-6, atol=1e-9)
        else:
            assert rows[c] == want[c], c
    assert len(set(rows["origin"])) == 2  # two forecast origins were exercised


def test_local_engine_never_imports_dask(trained):
    d, model_path = trained
    code = ("import sys; from click.testing import CliRunner; from lstm_cli.cli import cli; "
            f"r = CliRunner().invoke(cli, ['predict', {str(model_path)!r}, {str(d / 'train.csv')!r}]); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_engine_dask_without_dask_exits_69(trained, monkeypatch, tmp_path):
    d, model_path = trained
    for name in ("dask", "dask.dataframe", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # `import dask` now raises ImportError
    r = run("predict", model_path, d / "train.csv", "--engine", "dask", "--out", tmp_path / "f.csv")
    assert r.exit_code == EXIT_MISSING_DEPENDENCY
    assert "pip install 'lstm-cli[dask]'" in r.output
    assert not (tmp_path / "f.csv").exists()


# ----------------------------------------------------------------------------------------------
# dask engine


def dask_predict(cluster, model, data, out, *extra):
    r = run("predict", model, data, "--engine", "dask", "--scheduler", cluster.scheduler_address, "--out", out,
            *extra)
    return r


def test_dask_equals_local_one_file(cluster, trained, tmp_path):
    d, model_path = trained
    data = d / "train.csv"
    r = dask_predict(cluster, model_path, data, tmp_path / "f.csv", "--provenance", "--horizon", 5)
    assert r.exit_code == 0, r.output
    assert "partition 1/" in r.stderr
    got = pd.read_csv(tmp_path / "f.csv", dtype=str)
    want = local_frame(model_path, data, "--provenance", "--horizon", 5)
    assert list(got.columns) == list(want.columns)
    assert_same_rows(got, want)
    assert sorted(os.listdir(tmp_path)) == [".f.csv.lock", "f.csv"]  # no part files left behind


def test_series_never_split_more_partitions_than_series(cluster, trained, tmp_path):
    """Tiny input blocks cut series apart before the shuffle; 24 output partitions for 9 series
    leave some empty. Every series must still be forecast once, from all its rows."""
    from lstm_cli import engine_dask

    d, model_path = trained
    data = tmp_path / "nine.csv"
    write_panel(data, 9, [14, 19, 33, 45], seed=2)
    seen = []
    notes, meta = engine_dask.predict_dask(str(model_path), str(data), str(tmp_path / "parts"),
                                           scheduler=cluster.scheduler_address, npartitions=24, blocksize=400,
                                           on_progress=lambda done, total, series: seen.append(series))
    assert meta["series"] == 9 and meta["partitions"] == 24
    assert len(seen) == 24 and seen.count(0) >= 15 and sum(seen) == 9
    parts = sorted(os.listdir(tmp_path / "parts"))
    assert 0 < len(parts) <= 9 and all(p.startswith("part-") for p in parts)
    got = pd.concat([pd.read_csv(tmp_path / "parts" / p, dtype=str) for p in parts])
    assert (got.groupby("id").size() == H).all() and got["id"].nunique() == 9
    assert_same_rows(got, local_frame(model_path, data))


def test_failed_job_leaves_no_partial_output(cluster, trained, tmp_path):
    d, model_path = trained
    data = tmp_path / "bad.csv"
    write_panel(data, 20, [20, 30], seed=3)
    lines = data.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("s00013,"))
    lines[k] = lines[k].rsplit(",", 1)[0] + ",12 kWh"  # one bad value: one partition fails
    data.write_text("\n".join(lines) + "\n")
    out_file = tmp_path / "f.csv"
    out_file.write_text("previous forecast\n")
    out_dir = tmp_path / "dir"
    out_dir.mkdir()
    (out_dir / "part-00000.csv").write_text("previous part\n")
    before = sorted(os.listdir(tmp_path))
    for out in (out_file, out_dir):
        r = dask_predict(cluster, model_path, data, out)
        assert r.exit_code == EXIT_DATA, r.output
        assert "'12 kWh' is not a number" in r.output and "partition" in r.output
    assert out_file.read_text() == "previous forecast\n"
    assert os.listdir(out_dir) == ["part-00000.csv"]
    assert (out_dir / "part-00000.csv").read_text() == "previous part\n"
    after = sorted(p for p in os.listdir(tmp_path) if not p.endswith(".lock"))
    assert after == before  # no temporary directories or files left


def test_streams_refused_partition_is_one_line_on_stderr_and_not_retried(trained, tmp_path):
    """Through the entry point with its own local cluster: a partition's DataError reaches stderr
    as the one line the local engine prints, with no worker 'Compute Failed' traceback, and the
    task is not retried (the worker would log each try)."""
    d, model_path = trained
    data = tmp_path / "short.csv"
    write_panel(data, 6, [30, 5], seed=5)  # every other series is shorter than the lookback
    local = run("predict", model_path, data)
    proc = subprocess.run([sys.executable, "-m", "lstm_cli", "predict", str(model_path), str(data), "--engine", "dask",
                           "--out", str(tmp_path / "out"), "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_DATA == local.exit_code, proc.stderr
    assert proc.stderr.splitlines() == local.stderr.splitlines(), proc.stderr
    assert proc.stdout == "" and not (tmp_path / "out").exists()


def test_out_dash_dask_data_dash_is_refused_and_never_reads_a_file_named_dash(trained, tmp_path, monkeypatch):
    """--engine dask reads files: DATA - must not open ./- (a wrong forecast, exit 0) nor fail with pandas' text."""
    d, model_path = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_text((d / "train.csv").read_text())
    for args in (["predict", model_path, "-", "--engine", "dask", "--out", tmp_path / "o.csv"],
                 ["evaluate", model_path, "-", "--engine", "dask"]):
        r = run(*args)
        assert r.exit_code == 2 and r.stderr.startswith("lstm: DATA -: --engine dask reads files"), r.output
        assert len(r.stderr.splitlines()) == 1 and r.stdout == ""
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("address", ["foo://x", "", "tcp://", "tcp://[::1", "inproc://x", "ht tp://\u00e9"])
def test_click_usage_errors_malformed_scheduler_is_exit_2(trained, tmp_path, address):
    d, model_path = trained
    r = run("predict", model_path, d / "train.csv", "--engine", "dask", "--out", tmp_path / "q.csv",
            "--scheduler", address)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("lstm: --scheduler") and len(r.stderr.splitlines()) == 1, r.stderr


def test_directory_output_replaces_existing_directory(cluster, trained, tmp_path):
    d, model_path = trained
    out_dir = tmp_path / "dir"
    out_dir.mkdir()
    (out_dir / "part-00099.csv").write_text("old\n")  # an earlier run's part files: replaced whole
    r = dask_predict(cluster, model_path, d / "train.csv", out_dir)
    assert r.exit_code == 0, r.output
    assert "part-00099.csv" not in os.listdir(out_dir)
    got = pd.concat([pd.read_csv(out_dir / p, dtype=str) for p in sorted(os.listdir(out_dir))])
    assert_same_rows(got, local_frame(model_path, d / "train.csv"))


def test_side_files_directory_output_with_files_lstm_did_not_write_is_refused(cluster, trained, tmp_path):
    """--out DIR is replaced whole: a folder of the user's (anything but part files) is never deleted."""
    d, model_path = trained
    for i, (name, make) in enumerate([("notes.txt", lambda p: p.write_text("mine\n")),
                       ("sub", lambda p: p.mkdir()),
                       ("part-00000.csv", lambda p: p.symlink_to(tmp_path / "elsewhere.csv"))]):
        out_dir = tmp_path / f"dir{i}"
        out_dir.mkdir()
        make(out_dir / name)
        r = dask_predict(cluster, model_path, d / "train.csv", out_dir)
        assert r.exit_code == 73, r.output
        assert "lstm did not write" in r.output and len(r.output.strip().splitlines()) == 1
        assert os.listdir(out_dir) == [name]


def test_worker_killed_mid_job_gives_the_same_result(cluster, trained, tmp_path):
    from distributed import Client

    from lstm_cli import engine_dask

    d, model_path = trained
    data = tmp_path / "kill.csv"
    write_panel(data, 60, [20, 31], seed=4)
    with Client(cluster.scheduler_address) as client:
        pids = sorted(client.run(os.getpid).values())
    killed = []

    def progress(done, total, series):
        if not killed:  # after the first partition: the others are still queued or running
            assert done < total
            os.kill(pids[0], signal.SIGKILL)
            killed.append(done)

    notes, meta = engine_dask.predict_dask(str(model_path), str(data), str(tmp_path / "f.csv"),
                                           scheduler=cluster.scheduler_address, npartitions=12, blocksize=2000,
                                           on_progress=progress)
    assert killed == [1] and meta["series"] == 60
    got = pd.read_csv(tmp_path / "f.csv", dtype=str)
    assert_same_rows(got, local_frame(model_path, data))


def test_dask_reads_gzip_globs_and_parquet(cluster, trained, tmp_path):
    import gzip

    d, model_path = trained
    df = pd.read_csv(d / "train.csv", dtype=str)
    ids = sorted(df["id"].unique())
    for k, half in enumerate((ids[::2], ids[1::2])):  # two gzip files; globbed back together
        with gzip.open(tmp_path / f"in-{k}.csv.gz", "wt") as f:
            df[df["id"].isin(half)].to_csv(f, index=False)
    df.astype({"value": float}).to_parquet(tmp_path / "in.parquet")
    want = local_frame(model_path, d / "train.csv")
    for data in (tmp_path / "in-*.csv.gz", tmp_path / "in.parquet"):
        out = tmp_path / f"f-{data.suffix.strip('.')}.csv"
        r = dask_predict(cluster, model_path, data, out)
        assert r.exit_code == 0, r.output
        assert_same_rows(pd.read_csv(out, dtype=str), want)


def test_dask_max_age_is_checked_on_the_whole_input(cluster, trained, tmp_path):
    """The newest row of the input (2026-03-01) decides, not the newest of one partition: some
    partitions end a day earlier. A stalled feed exits 4 and writes nothing."""
    from lstm_cli import engine_dask
    from lstm_cli.errors import EXIT_STALE_INPUT

    d, model_path = trained
    out = tmp_path / "f.csv"
    now = pd.Timestamp("2026-03-02T05:00:00").value
    seen = []
    engine_dask.predict_dask(str(model_path), str(d / "train.csv"), str(out), scheduler=cluster.scheduler_address,
                             npartitions=24, max_age=30 * 3600, now_ns=now,
                             on_progress=lambda done, total, series: seen.append(series))
    assert out.exists() and len(seen) == 24  # some partitions hold only series that ended on 02-28
    out.unlink()
    r = dask_predict(cluster, model_path, d / "train.csv", out, "--max-age", "20h", "--now", "2026-03-02T05:00:00Z")
    assert r.exit_code == EXIT_STALE_INPUT and "is the feed stalled" in r.output
    assert not out.exists()


def test_dask_single_series_without_id_column(cluster, tmp_path):
    data = os.path.join(os.path.dirname(__file__), "..", "sample_data", "a10_monthly.csv")
    model = tmp_path / "a10.lstm"
    r = run("train", data, "--target", "cost_million_aud", "--horizon", 4, "--hidden", 4, "--epochs", 2,
            "--threads", 1, "--out", model, "-q")
    assert r.exit_code == 0, r.output
    r = dask_predict(cluster, model, data, tmp_path / "f.csv")
    assert r.exit_code == 0, r.output
    got = pd.read_csv(tmp_path / "f.csv", dtype=str)
    want = local_frame(model, data)
    assert list(got["date"]) == list(want["date"]) and len(got) == 4
    np.testing.assert_allclose(got["cost_million_aud"].astype(float), want["cost_million_aud"].astype(float),
                               rtol=1e-6)


def test_dask_ragged_row_in_a_later_block_is_a_data_error(cluster, trained, tmp_path):
    from lstm_cli import engine_dask
    from lstm_cli.errors import DataError

    d, model_path = trained
    data = tmp_path / "ragged.csv"
    data.write_text((d / "train.csv").read_text() + "s00001,2026-03-02,1.0,extra\n")
    with pytest.raises(DataError, match=r"cannot be read as CSV \(.*Expected 3 fields"):
        engine_dask.predict_dask(str(model_path), str(data), str(tmp_path / "f.csv"),
                                 scheduler=cluster.scheduler_address, blocksize=2000)
    assert sorted(os.listdir(tmp_path)) == ["ragged.csv"]


def test_scaler_fit_on_all_rows_equals_the_packed_fit_and_fit_block():
    """scaling.fit skips its packed copy when every row trains (the predict path): the same loc
    and scale bit for bit as the packed path, and fit_block's per series."""
    from lstm_cli import scaling

    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 30, size=200)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = rng.normal(size=(starts[-1], 2)) * rng.choice([1e-300, 1.0, 1e300], size=(starts[-1], 1))
    values[starts[3] : starts[4]] = 7.0  # constant
    values[starts[5] : starts[6]] = 0.0  # zeros
    values[starts[7] : starts[8]] = -np.abs(values[starts[7] : starts[8]])  # negative only
    loc, scale = scaling.fit(values, starts, lengths)
    padded = np.vstack([values, np.full((1, 2), 1e9)])  # one row more than the series: the packed path
    loc2, scale2 = scaling.fit(padded, starts, lengths)
    assert loc.tobytes() == loc2.tobytes() and scale.tobytes() == scale2.tobytes()
    for s in range(len(lengths)):
        want_loc, want_scale = scaling.fit_block(values[starts[s] : starts[s + 1]])
        np.testing.assert_allclose(loc[s], want_loc, rtol=1e-12)
        np.testing.assert_allclose(scale[s], want_scale, rtol=1e-12)
    scaled = scaling.transform(values, starts, loc, scale)
    counts = np.diff(starts)
    assert scaled.tobytes() == ((values - np.repeat(loc, counts, axis=0)) / np.repeat(scale, counts, axis=0)).tobytes()


def test_predict_reads_the_file_once_on_the_fast_path(trained, monkeypatch):
    """A plain long-format file never goes through the csv-module path on the predict path."""
    d, model_path = trained
    want = local_frame(model_path, d / "train.csv")

    def fail(*args, **kwargs):
        raise AssertionError("the careful path read a plain file")

    monkeypatch.setattr(frame, "_read_careful", fail)
    got = local_frame(model_path, d / "train.csv")
    pd.testing.assert_frame_equal(got, want)


def test_sample_series_trains_on_a_seeded_sample_and_serves_every_series(tmp_path):
    """--sample-series 8 of 30: the windows come from 8 series only (the same 8 for the same
    seed), every series keeps the scaler fitted on its own training rows, predict serves all 30."""
    from lstm_cli import frame, modelfile, pipeline, scaling, windows

    data = tmp_path / "panel.csv"
    write_panel(data, 30, [30, 24, 40])
    events = {}
    models = []
    for name in ("a", "b"):
        req = pipeline.TrainRequest(data=str(data), out=str(tmp_path / f"{name}.lstm"), targets=("value",),
                                    horizon=H, id_col="id", lookback=14, hidden=4, sample_series=8,
                                    threads=1, train=pipeline.TrainConfig(epochs=2))
        models.append(pipeline.train_from_csv(req, on_event=lambda k, p: events.__setitem__(k, p))[0])
    a, b = models
    assert a.network.params.tobytes() == b.network.params.tobytes()  # same seed, same sample
    assert len(a.ids) == 30 and events["data"]["sampled"] == 8
    series = frame.read_series(str(data), targets=("value",), id_col="id")
    picked = pipeline.sample_of_series(30, 8, 0)
    sub_values, sub_starts = pipeline.take_series(series.values, series.starts, picked)
    expect = windows.make_windows(sub_values, sub_starts, 1, 14, H, 0.1, scaling="level")
    assert events["data"]["train_windows"] == len(expect["x_train"])
    for s in picked:  # the sample really is those series' rows
        lo = series.starts[s]
        k = int(np.searchsorted(picked, s))
        np.testing.assert_array_equal(sub_values[sub_starts[k]:sub_starts[k + 1]],
                                      series.values[lo:series.starts[s + 1]])
    rows = np.diff(series.starts)
    loc, scale = scaling.fit(series.values, series.starts, rows - [windows.val_rows_for(n, 0.1, H) for n in rows])
    np.testing.assert_allclose(a.loc, loc)
    np.testing.assert_allclose(a.scale, scale)
    header, _ = modelfile.load(tmp_path / "a.lstm")
    assert header["training"]["params"]["sample_series"] == 8
    assert local_frame(tmp_path / "a.lstm", data)["id"].nunique() == 30
    assert pipeline.sample_of_series(30, 30, 0) is None and pipeline.sample_of_series(30, None, 0) is None


# ----------------------------------------------------------------------------------------------
# lstm evaluate --engine dask


def evaluate_json(model, data, *extra):
    r = run("evaluate", model, data, "--format", "json", *extra)
    return r, (json.loads(r.stdout) if r.exit_code in (0, 3) else None)


def assert_same_evaluation(got, want):
    """The same document: header, record keys and order, text fields equal; scores equal to
    float32 rounding (a partition of at most 4 series takes the network's small-batch kernel
    path, whose float32 sums round differently in the last bits; the baselines do not)."""
    assert got["header"] == want["header"]
    assert [(r["origin"], r["series"], r["target"], r["method"]) for r in got["records"]] == \
        [(r["origin"], r["series"], r["target"], r["method"]) for r in want["records"]]
    for g, w in zip(got["records"], want["records"], strict=True):
        assert list(g) == list(w)
        for k in g:
            if k in ("origin", "series", "target", "method") or w["method"] != "lstm":
                assert g[k] == w[k], (k, g, w)
            else:
                np.testing.assert_allclose(g[k], w[k], rtol=1e-5, atol=1e-9)
    assert list(got["overall"]) == list(want["overall"])
    for method in want["overall"]:
        assert list(got["overall"][method]) == list(want["overall"][method])
        np.testing.assert_allclose(list(got["overall"][method].values()), list(want["overall"][method].values()),
                                   rtol=1e-5)
    np.testing.assert_allclose(list(got["skill"].values()), list(want["skill"].values()), rtol=1e-4)


@pytest.mark.parametrize("backtests", [1, 2])
def test_dask_evaluate_equals_local(cluster, trained, tmp_path, backtests):
    """Unequal lengths, series ending on different days, more partitions than one: the records
    (in the local engine's order) and the overall scores are the local engine's."""
    from lstm_cli import engine_dask

    d, model_path = trained
    data = tmp_path / "panel.csv"
    write_panel(data, 23, [24, 31, 45], seed=6)
    r, want = evaluate_json(model_path, data, "--backtest", backtests)
    assert r.exit_code == 0, r.output
    r, got = evaluate_json(model_path, data, "--backtest", backtests, "--engine", "dask",
                           "--scheduler", cluster.scheduler_address)
    assert r.exit_code == 0, r.output
    assert "partition 1/" in r.stderr
    assert len(got["records"]) == 23 * 4 * backtests  # lstm, naive, seasonal_naive, theta
    assert_same_evaluation(got, want)
    seen = []
    ev = engine_dask.evaluate_dask(str(model_path), str(data), backtests=backtests,
                                   scheduler=cluster.scheduler_address, npartitions=5, blocksize=600,
                                   on_progress=lambda done, total, series: seen.append(series))
    assert len(seen) == 5 and sum(seen) == 23 and max(seen) < 23  # the series really were spread
    assert ev.season == want["header"]["season"] == 7
    got = {"header": want["header"], "overall": ev.overall(), "skill": {b: ev.skill(b) for b in want["skill"]},
           "records": ev.records}
    assert_same_evaluation(got, want)


def test_dask_evaluate_csv_and_gate_match_local(cluster, trained, tmp_path):
    d, model_path = trained
    data = tmp_path / "panel.csv"
    write_panel(data, 12, [26, 33], seed=7)
    dask_args = ("--engine", "dask", "--scheduler", cluster.scheduler_address)
    local = run("evaluate", model_path, data, "--format", "csv")
    remote = run("evaluate", model_path, data, "--format", "csv", *dask_args)
    assert local.exit_code == remote.exit_code == 0, remote.output
    got, want = pd.read_csv(io.StringIO(remote.stdout)), pd.read_csv(io.StringIO(local.stdout))
    assert list(got.columns) == list(want.columns) and len(got) == 12 * 4
    pd.testing.assert_frame_equal(got, want, rtol=1e-5)
    for gate in ("naive", "seasonal_naive"):
        codes = [run("evaluate", model_path, data, "--fail-if-worse-than", gate, *extra).exit_code
                 for extra in ((), dask_args)]
        assert codes[0] == codes[1] and codes[0] in (0, 3)
    # the 2-epoch model is worse than one of the baselines: the gate really fails somewhere
    _, doc = evaluate_json(model_path, data)
    worse = [b for b in ("naive", "seasonal_naive") if doc["overall"]["lstm"]["mase"] > doc["overall"][b]["mase"]]
    if worse:
        assert run("evaluate", model_path, data, "--fail-if-worse-than", worse[0], *dask_args).exit_code == 3


def test_dask_evaluate_too_short_series_is_the_local_error(cluster, trained, tmp_path):
    d, model_path = trained
    data = tmp_path / "short.csv"
    write_panel(data, 10, [30, 19, 30, 30, 16], seed=8)  # s00001, s00004 (and s00006, s00009) too short for 2
    local = run("evaluate", model_path, data, "--backtest", 2)
    remote = run("evaluate", model_path, data, "--backtest", 2, "--engine", "dask",
                 "--scheduler", cluster.scheduler_address)
    assert local.exit_code == remote.exit_code == EXIT_DATA
    assert "series 's00001' has 19 rows, need at least 20" in local.output
    assert local.stderr.strip().splitlines()[-1] == remote.stderr.strip().splitlines()[-1]
    from lstm_cli import engine_dask
    from lstm_cli.errors import DataError

    with pytest.raises(DataError) as e:  # short series in several partitions: the first by id is named
        engine_dask.evaluate_dask(str(model_path), str(data), backtests=2, scheduler=cluster.scheduler_address,
                                  npartitions=4, blocksize=500)
    assert str(e.value) in local.stderr and "'s00001'" in str(e.value)


def test_dask_evaluate_refuses_refit_and_plot(trained, tmp_path):
    d, model_path = trained
    for extra in (("--refit",), ("--plot", tmp_path / "p.png")):
        r = run("evaluate", model_path, d / "train.csv", "--engine", "dask", *extra)
        assert r.exit_code == 2
        assert "needs --engine local" in r.output and str(extra[0]) in r.output
    assert not (tmp_path / "p.png").exists()
    r = run("evaluate", model_path, d / "train.csv", "--scheduler", "tcp://127.0.0.1:1")
    assert r.exit_code == 2 and "--scheduler needs --engine dask" in r.output


def test_dask_evaluate_without_dask_exits_69(trained, monkeypatch):
    d, model_path = trained
    for name in ("dask", "dask.dataframe", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)
    r = run("evaluate", model_path, d / "train.csv", "--engine", "dask", "--format", "json")
    assert r.exit_code == EXIT_MISSING_DEPENDENCY
    assert "pip install 'lstm-cli[dask]'" in r.output and r.stdout == ""


def test_dask_evaluate_intraday_season_from_the_first_series(cluster, tmp_path):
    """Hourly data: the season comes from the days of the first series (fetched by the client),
    as the local engine takes it; both engines report the same season and scores."""
    data = tmp_path / "hourly.csv"
    rng = np.random.default_rng(9)
    parts = []
    for s in range(9):
        n = (60, 75)[s % 2]
        t = np.arange(n)
        v = rng.uniform(5, 50) * (1 + 0.3 * np.sin(2 * np.pi * t / 24) + 0.05 * rng.normal(size=n))
        stamps = pd.date_range(end="2026-03-01 12:00", periods=n, freq="h").strftime("%Y-%m-%d %H:%M")
        parts.append(pd.DataFrame({"id": f"s{s:05d}", "date": stamps, "value": v.round(3)}))
    pd.concat(parts).sample(frac=1.0, random_state=9).to_csv(data, index=False)
    model = tmp_path / "h.lstm"
    r = run("train", data, "--id-col", "id", "--target", "value", "--horizon", H, "--lookback", 14, "--hidden", 4,
            "--epochs", 1, "--threads", 1, "--out", model, "-q")
    assert r.exit_code == 0, r.output
    r, want = evaluate_json(model, data)
    assert r.exit_code == 0, r.output
    r, got = evaluate_json(model, data, "--engine", "dask", "--scheduler", cluster.scheduler_address)
    assert r.exit_code == 0, r.output
    # the first series' partial days decide here, not 24 rows a day: the client must read them
    assert want["header"]["season"] == got["header"]["season"] != 24
    assert_same_evaluation(got, want)
