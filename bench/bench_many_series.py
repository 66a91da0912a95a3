"""Many series: `lstm predict` on 100k series x 60 points, local engine (and --engine dask), next to
a per-series loop over the same model, measured in the same run.

    python bench/bench_many_series.py                      # 100k series, local + dask + loop
    python bench/bench_many_series.py --series 20000 --engines local

Synthetic but realistic data (per series: a level, a weekly season of random phase and size, a
small trend, noise) is written as one long-format CSV (id,date,value) in a temporary directory.
A small model is trained once on a 200-series subset. Then:

- `lstm predict` of the whole file runs as its own process, under a fresh wrapper process whose
  RUSAGE_CHILDREN maxrss is that command's peak RSS (for --engine dask with its local cluster:
  the largest single process, scheduler/client or worker);
- in this process: frame.read_series of the file alone, --read-repeats times (median; less noisy
  than the whole command on a shared machine), then Forecaster.forecast once for all series (the
  batched call predict makes) and once per series for the first --loop-series series (the loop
  the local engine never runs), both as series/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LSTM = [sys.executable, "-m", "lstm_cli"]


def generate(path: str, n_series: int, n_points: int, seed: int = 0, first: int = 0) -> None:
    """Long-format CSV of series first..first+n_series-1, daily, all ending on the same day."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    dates = pd.date_range("2026-01-01", periods=n_points, freq="D").strftime("%Y-%m-%d").to_numpy()
    t = np.arange(n_points)
    with open(path, "w") as f:
        f.write("id,date,value\n")
        for lo in range(0, n_series, 10_000):  # blocks of series: bounded memory
            n = min(10_000, n_series - lo)
            level = rng.uniform(10, 1000, (n, 1))
            season = rng.uniform(0.05, 0.3, (n, 1)) * level * np.sin(2 * np.pi * (t + rng.integers(0, 7, (n, 1))) / 7)
            trend = rng.normal(0, 0.002, (n, 1)) * level * t
            v = level + season + trend + rng.normal(0, 0.05, (n, n_points)) * level
            ids = np.repeat([f"s{first + lo + s:08d}" for s in range(n)], n_points)
            text = np.char.add(np.char.add(np.char.add(ids, ","), np.tile(dates, n).astype(str)),
                               np.char.add(",", np.char.mod("%.3f", v.ravel())))
            f.write("\n".join(text.tolist()))
            f.write("\n")


def measured(cmd: list[str]) -> dict:
    """Run cmd under a fresh wrapper process: wall seconds and the peak RSS of cmd (and its children)."""
    wrapper = ("import json, resource, subprocess, sys, time\n"
               "t = time.perf_counter()\n"
               "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
               "s = time.perf_counter() - t\n"
               "print(json.dumps({'rc': r.returncode, 'seconds': s, 'stderr': r.stderr[-2000:],\n"
               "                  'maxrss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    if res["rc"] != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res['stderr']}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--points", type=int, default=60)
    ap.add_argument("--train-series", type=int, default=200)
    ap.add_argument("--loop-series", type=int, default=2_000, help="series in the per-series loop")
    ap.add_argument("--engines", default="local,dask")
    ap.add_argument("--read-repeats", type=int, default=3, help="in-process reads of the file (median)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    engines = [e for e in args.engines.split(",") if e]

    with tempfile.TemporaryDirectory(prefix="bench-many-") as d:
        data, train, model = (os.path.join(d, n) for n in ("all.csv", "train.csv", "m.lstm"))
        t = time.perf_counter()
        generate(data, args.series, args.points)
        generate(train, args.train_series, args.points, seed=1)
        print(f"data: {args.series:,} series x {args.points} points, {os.path.getsize(data) / 1e6:.0f} MB CSV "
              f"({time.perf_counter() - t:.1f}s to write)", flush=True)
        subprocess.run([*LSTM, "train", train, "--id-col", "id", "--target", "value", "--horizon", "7",
                        "--lookback", "14", "--hidden", "16", "--epochs", "5", "--out", model, "-q"], check=True)
        float_mb = args.series * args.points * 8 / 2**20  # the input's float64 value array
        results = {"series": args.series, "points": args.points, "cpus": os.cpu_count(),
                   "load_avg_1m_before": os.getloadavg()[0], "input_float_array_mb": float_mb}
        for engine in engines:
            out = os.path.join(d, f"forecast-{engine}.csv")
            r = measured([*LSTM, "predict", model, data, "--engine", engine, "--out", out, "-q"])
            results[engine] = {"seconds": r["seconds"], "series_per_s": args.series / r["seconds"],
                               "peak_rss_mb": r["maxrss_mb"], "peak_over_float_array": r["maxrss_mb"] / float_mb}
            print(f"lstm predict --engine {engine}: {r['seconds']:.1f}s, {args.series / r['seconds']:,.0f} series/s, "
                  f"peak RSS {r['maxrss_mb']:,.0f} MB ({r['maxrss_mb'] / float_mb:.1f}x the float array)", flush=True)

        from lstm_cli import frame, pipeline

        m, _ = pipeline.load_model(model)
        reads = []
        for _ in range(max(1, args.read_repeats)):
            series = None  # the previous read's arrays go before the next read
            t = time.perf_counter()
            series = frame.read_series(data, targets=("value",), time_col="date", id_col="id", freq=m.spec.freq)
            reads.append(time.perf_counter() - t)
        read_s = float(np.median(reads))
        m.forecast(series.ids[:8], series.values[: series.starts[8]], series.starts[:9])  # warm
        t = time.perf_counter()
        m.forecast(series.ids, series.values, series.starts)
        batched = time.perf_counter() - t
        t = time.perf_counter()
        m.series_scaler(series.ids, series.values, series.starts)  # inside forecast: one row per series
        scaler = time.perf_counter() - t
        n_loop = min(args.loop_series, len(series.ids))
        t = time.perf_counter()
        for s in range(n_loop):
            a, b = series.starts[s], series.starts[s + 1]
            m.forecast(series.ids[s : s + 1], series.values[a:b], np.array([0, b - a]))
        loop = time.perf_counter() - t
        results["in_process"] = {"read_series_s": read_s, "read_series_runs_s": reads, "batched_forecast_s": batched,
                                 "batched_series_per_s": len(series.ids) / batched,
                                 "series_scaler_s_inside_batched": scaler,
                                 "loop_series": n_loop, "loop_s": loop, "loop_series_per_s": n_loop / loop}
        print(f"in process: read_series {read_s:.2f}s (median of {len(reads)}: "
              f"{', '.join(f'{r:.2f}' for r in reads)}); Forecaster.forecast batched {len(series.ids) / batched:,.0f} "
              f"series/s (of which {scaler:.1f}s in series_scaler); per-series loop {n_loop / loop:,.0f} series/s ({n_loop:,} series)", flush=True)
        results["load_avg_1m_after"] = os.getloadavg()[0]
        print(f"load average (1 min) before/after: {results['load_avg_1m_before']:.2f} / {results['load_avg_1m_after']:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
