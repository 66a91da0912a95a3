"""Engine benchmark: lstm's Numba kernels next to PyTorch, same data, same threads, same run.

    PYTHONPATH=. .venv/bin/python bench/bench_engine.py [--quick] [--cell lstm|gru|both] [--json results.json]

For every cell (LSTM next to torch's nn.LSTM, GRU next to nn.GRU) and configuration (D input
features, H hidden, L layers, T window length; float32, one output) it measures, for lstm and torch at 1 and 2 threads, interleaved (one lstm repeat, one torch
repeat, ...) and reports medians:

  train   samples/s of forward + backward + Adam step at B=64 (torch: nn.LSTM or nn.GRU
          (batch_first) + nn.Linear on the last hidden state + MSE + torch.optim.Adam)
  infer   samples/s of batch inference at B=1024 (torch under inference_mode)
  latency microseconds for a single window (B=1)

Ratios are lstm/torch speed (>1: lstm is faster), for latency torch_time/lstm_time. Torch is a
benchmark peer only; lstm_cli never imports it. BLAS (NumPy's and SciPy's OpenBLAS, which the Numba
kernels call) runs single-threaded inside lstm's shard threads: threadpoolctl sets that here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's BLAS so threadpoolctl can see it)
import threadpoolctl
import torch

from lstm_cli.network import Architecture, Network
from lstm_cli.optim import Adam

FULL = dict(D=(1, 8), H=(16, 32, 64, 128, 256), L=(1, 2), T=(48, 168))
QUICK_CONFIGS = [(1, 32, 1, 48), (8, 64, 2, 168), (1, 128, 1, 48), (8, 256, 1, 48)]
B_TRAIN, B_INFER = 64, 1024
THREADS = (1, 2)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class TorchModel(torch.nn.Module):
    def __init__(self, net: Network):
        super().__init__()
        a = net.arch
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[a.cell]
        self.rnn = rnn(a.input_size, a.hidden_size, a.num_layers, batch_first=True)
        self.head = torch.nn.Linear(a.hidden_size, a.output_size)
        ours = net.tensors()
        with torch.no_grad():  # the same weights: the names differ by the "rnn." prefix only
            for name, p in self.named_parameters():
                p.copy_(torch.from_numpy(ours[name.removeprefix("rnn.")].copy()))

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _busy_jiffies() -> tuple[int, int]:
    """(jiffies all CPUs spent busy or stolen, jiffies this process spent) since boot."""
    with open("/proc/stat") as f:
        v = [int(n) for n in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)  # user nice system irq softirq steal
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return busy, int(fields[11]) + int(fields[12])  # utime + stime


class Guard:
    """Other processes on a 2-core machine ruin a benchmark: a repeat during which the rest of the
    machine used more than `limit` of one core is measured again (up to `tries` times)."""

    def __init__(self, limit=0.15, tries=4):
        self.limit, self.tries = limit, tries
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = os.path.exists("/proc/stat")
        self.redone = 0
        self.contended = 0

    def measure(self, repeat):
        for _ in range(self.tries):
            if not self.available:
                return repeat()
            b0, s0 = _busy_jiffies()
            t0 = time.perf_counter()
            result = repeat()
            wall = time.perf_counter() - t0
            b1, s1 = _busy_jiffies()
            others = max(0, (b1 - b0) - (s1 - s0)) / self.hz  # CPU-seconds used by others
            if others <= self.limit * wall + 1.0 / self.hz:
                return result
            self.redone += 1
            time.sleep(0.2)
        self.contended += 1
        return result


GUARD = Guard()


CLOCK = time.perf_counter  # --clock cpu: time.thread_time, the CPU time of this thread only


def calls_for(fn, min_time: float) -> tuple[int, float]:
    """How many calls of fn make one repeat of at least min_time (one call if it is slower), and
    the seconds of one call (the fastest of up to three)."""
    dt = float("inf")
    for _ in range(3):
        t0 = CLOCK()
        fn()
        dt = min(dt, CLOCK() - t0)
        if dt > 0.2:
            break
    return max(1, int(math.ceil(min_time / max(dt, 1e-9)))), dt


def timed(fn, n: int) -> float:
    """Seconds per call of fn over one repeat of n calls; a repeat disturbed by other processes
    is measured again (GUARD; wall clock only)."""

    def repeat():
        t0 = CLOCK()
        for _ in range(n):
            fn()
        return (CLOCK() - t0) / n

    return repeat() if CLOCK is time.thread_time else GUARD.measure(repeat)


def interleaved(fns: dict, repeats: int, min_time: float, settle: bool = False) -> dict[str, float]:
    """Median seconds per call of each fn, alternating fns within each repeat. Calls slower than
    a second get 3 repeats at most (the full run must fit in ~15 minutes).

    settle (2 threads): each repeat is preceded by half as many untimed calls of the same fn.
    torch's OpenMP workers keep spinning for a while after its calls; measured here, the first
    ~50 ms of lstm's 2-thread calls after torch's ran 10-17% slower (H=64: 1230-1306 against
    1094-1122 us), which interleaving would charge to lstm (and lstm's tail to torch). Sleeping
    instead does not work on this VM: after 0.2 s idle both ran ~40% slower for a while."""
    calls = {k: calls_for(fn, min_time) for k, fn in fns.items()}
    slow = max(dt for _, dt in calls.values()) > 1.0
    times = {k: [] for k in fns}
    for _ in range(min(repeats, 3) if slow else repeats):
        for k, fn in fns.items():
            if settle and calls[k][0] > 1:
                for _ in range(calls[k][0] // 2):
                    fn()
            times[k].append(timed(fn, calls[k][0]))
    return {k: statistics.median(v) for k, v in times.items()}


def _workloads(net, model, xt, yt, xi, x1, txt, tyt, txi, tx1):
    """The timed callables: training step, batch inference, single window; lstm and torch."""
    opt = Adam(net.params, lr=1e-4)
    topt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def lstm_train():
        _, g = net.loss_and_grad(xt, yt)
        opt.step(g)

    def torch_train():
        topt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(txt), tyt).backward()
        topt.step()

    def torch_infer(x):
        with torch.inference_mode():
            return model(x)

    return ({"lstm": lstm_train, "torch": torch_train},
            {"lstm": lambda: net.predict(xi), "torch": lambda: torch_infer(txi)},
            {"lstm": lambda: net.predict(x1), "torch": lambda: torch_infer(tx1)})


def gemm_flops(cell: str, D: int, H: int, L: int, T: int, B: int, train: bool) -> float:
    """Floating-point operations of the products alone (the arithmetic no implementation can
    skip): per layer the input part (T steps) and the recurrent part (T-1 steps, h_0 = 0); for
    training also the weight gradients of both and dL/dh_(t-1), and dL/dx of layers above the
    first. The head, the activations and the optimizer are left out."""
    G = (4 if cell == "lstm" else 3) * H
    total = 0.0
    for k in range(L):
        d_in = D if k == 0 else H
        fwd = 2.0 * B * G * (T * d_in + (T - 1) * H)
        total += fwd
        if train:
            total += fwd + 2.0 * B * G * (T - 1) * H + (2.0 * B * G * T * d_in if k > 0 else 0.0)
    return total


def gemm_peak() -> float:
    """FLOP/s of one float32 GEMM the way the kernels call it (np.dot in Numba: SciPy's OpenBLAS),
    on a large, efficient shape: the ceiling for the products of the floor columns."""
    from numba import njit

    from lstm_cli.kernels import _matmul

    @njit(cache=False)
    def loop(a, b, out, n):
        for _ in range(n):
            _matmul(a, b, out)

    rng = np.random.default_rng(0)
    a = rng.random((1024, 256), dtype=np.float32)
    b = rng.random((256, 1024), dtype=np.float32)
    out = np.empty((1024, 1024), dtype=np.float32)
    loop(a, b, out, 1)
    best = 0.0
    for _ in range(7):
        t0 = time.thread_time()
        loop(a, b, out, 10)
        best = max(best, 10 * 2.0 * 1024 * 256 * 1024 / max(time.thread_time() - t0, 1e-9))
    return best


PEAK = float("nan")  # set in main(): gemm_peak()


def bench_config(cell, D, H, L, T, repeats, min_time, threads_list=THREADS):
    arch = Architecture(D, H, L, 1, "float32", cell)
    rng = np.random.default_rng(0)
    xt = rng.normal(size=(B_TRAIN, T, D)).astype(np.float32)
    yt = rng.normal(size=(B_TRAIN, 1)).astype(np.float32)
    xi = rng.normal(size=(B_INFER, T, D)).astype(np.float32)
    x1 = xi[:1].copy()
    txt, tyt, txi, tx1 = (torch.from_numpy(a) for a in (xt, yt, xi, x1))
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        net = Network(arch, seed=0, threads=threads)
        model = TorchModel(net)
        # Same weights, same data: the losses agree before anything is timed.
        loss, _ = net.loss_and_grad(xt, yt)
        tloss = torch.nn.functional.mse_loss(model(txt), tyt).item()
        assert abs(loss - tloss) <= 1e-4 * max(abs(tloss), 1e-3), (loss, tloss)
        train, infer, one = _workloads(net, model, xt, yt, xi, x1, txt, tyt, txi, tx1)
        for fn in train.values():
            fn()  # warm-up: allocation of buffers, torch's first-call paths
        settle = threads > 1
        res = interleaved(train, repeats, min_time, settle)
        train_sps = {k: B_TRAIN / v for k, v in res.items()}
        res = interleaved(infer, repeats, min_time, settle)
        infer_sps = {k: B_INFER / v for k, v in res.items()}
        res = interleaved(one, repeats, min_time, settle)
        latency = {k: v * 1e6 for k, v in res.items()}
        floor = {"train": gemm_flops(cell, D, H, L, T, B_TRAIN, True) / B_TRAIN / PEAK,
                 "infer": gemm_flops(cell, D, H, L, T, B_INFER, False) / B_INFER / PEAK}  # s/sample
        rows.append(dict(cell=cell, D=D, H=H, L=L, T=T, threads=threads, train=train_sps, infer=infer_sps,
                         latency_us=latency, floor_s_per_sample=floor))
    return rows


HEADER = ("cell    D    H  L    T thr | train lstm  torch  ratio | infer lstm   torch  ratio |"
          " latency lstm  torch ratio | floor: share  ceiling | 2t/1t lstm: train infer, torch: train infer")


def fmt_row(r, one=None) -> str:
    tr, inf, lat = r["train"], r["infer"], r["latency_us"]
    s = (f"{r['cell']:4s} {r['D']:4d} {r['H']:4d} {r['L']:2d} {r['T']:4d} {r['threads']:3d} |"
         f" {tr['lstm']:10.0f} {tr['torch']:6.0f} {tr['lstm'] / tr['torch']:6.2f} |"
         f" {inf['lstm']:10.0f} {inf['torch']:7.0f} {inf['lstm'] / inf['torch']:6.2f} |"
         f" {lat['lstm']:9.0f}us {lat['torch']:6.0f} {lat['torch'] / lat['lstm']:5.2f} |")
    if one is None:  # the floor at 1 thread: share of lstm's time, and the best ratio it allows
        fl = r["floor_s_per_sample"]
        s += (f" {fl['train'] * tr['lstm']:4.0%} {fl['infer'] * inf['lstm']:4.0%}"
              f" {1 / (fl['train'] * tr['torch']):4.1f} {1 / (fl['infer'] * inf['torch']):4.1f} |")
    else:
        s += " " * 21 + "|"
    if one is not None:
        s += (f" {r['train']['lstm'] / one['train']['lstm']:17.2f}"
              f" {r['infer']['lstm'] / one['infer']['lstm']:5.2f}"
              f" {r['train']['torch'] / one['train']['torch']:13.2f}"
              f" {r['infer']['torch'] / one['infer']['torch']:5.2f}")
    return s


# The engine issue's targets: (label, measure, minimum ratio, which rows it applies to)
TARGETS = [
    ("training >= 2.0x at H <= 64", "train", 2.0, lambda r: r["H"] <= 64),
    ("training >= 2.5x at T = 168", "train", 2.5, lambda r: r["T"] == 168),
    ("training >= 1.0x at H >= 128", "train", 1.0, lambda r: r["H"] >= 128),
    ("batch inference >= 1.5x", "infer", 1.5, lambda r: True),
    ("single-window latency >= 5x", "latency_us", 5.0, lambda r: True),
]


def ratio(r, measure: str) -> float:
    v = r[measure]
    return v["torch"] / v["lstm"] if measure == "latency_us" else v["lstm"] / v["torch"]


def target_summary(results: list[dict]) -> list[str]:
    """One line per target and cell: rows met at 1 and 2 threads, the range, and how many of the
    missed 1-thread rows are out of reach even at the GEMM floor (ceiling below the target)."""
    lines = []
    for cell in dict.fromkeys(r["cell"] for r in results):
        for label, measure, want, applies in TARGETS:
            for threads in (1, 2):
                rows = [r for r in results if r["cell"] == cell and r["threads"] == threads and applies(r)]
                if not rows:
                    continue
                got = [ratio(r, measure) for r in rows]
                line = (f"# {cell} {label}, {threads} thread{'s' if threads > 1 else ''}:"
                        f" {sum(g >= want for g in got)} of {len(rows)} ({min(got):.2f}-{max(got):.2f})")
                if threads == 1 and measure != "latency_us":
                    missed = [r for r, g in zip(rows, got, strict=True) if g < want]
                    beyond = sum(1 / (r["floor_s_per_sample"][measure] * r[measure]["torch"]) < want for r in missed)
                    line += f"; misses with a ceiling below {want}x: {beyond} of {len(missed)}"
                lines.append(line)
        for measure in ("train", "infer"):
            pairs = [(one, two) for one in results for two in results
                     if one["cell"] == cell == two["cell"] and one["threads"] == 1 and two["threads"] == 2
                     and all(one[k] == two[k] for k in "DHLT")]
            if pairs:
                up = [two[measure]["lstm"] / one[measure]["lstm"] for one, two in pairs]
                lines.append(f"# {cell} 2 threads >= 1.6x 1 thread, {measure}: {sum(u >= 1.6 for u in up)} of"
                             f" {len(up)} ({min(up):.2f}-{max(up):.2f})")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small subset, under 2 minutes")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per measurement")
    ap.add_argument("--json", help="also write the raw results to this file")
    ap.add_argument("--cell", choices=("lstm", "gru", "both"), default="both",
                    help="which cell to measure (each next to its torch twin)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: CPU time of the calling thread, 1 thread only (both lstm and torch"
                         " then run in the calling thread); insensitive to other processes")
    args = ap.parse_args(argv)
    global CLOCK
    threads = THREADS
    if args.clock == "cpu":
        CLOCK, threads = time.thread_time, (1,)
    if args.quick:
        configs, repeats, min_time = QUICK_CONFIGS, args.repeats or 3, 0.05
    else:
        configs = list(itertools.product(FULL["D"], FULL["H"], FULL["L"], FULL["T"]))
        repeats, min_time = args.repeats or 5, 0.1
    torch.set_num_interop_threads(1)
    t_start = time.perf_counter()
    global PEAK
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        PEAK = gemm_peak()
        blas = [(i["internal_api"], i["prefix"], i["num_threads"], i.get("architecture"))
                for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        print(f"# {cpu_model()}, {len(os.sched_getaffinity(0))} cores;"
              f" torch {torch.__version__}; numpy {np.__version__}; BLAS {blas}")
        print(f"# float32, O=1, B_train={B_TRAIN}, B_infer={B_INFER}; medians of {repeats}"
              f" interleaved repeats; {args.clock} clock; ratio = lstm speed / torch speed")
        print(f"# floor (1-thread rows): the products' FLOPs (gemm_flops) at this machine's float32 GEMM"
              f" peak, {PEAK / 1e9:.0f} GFLOP/s measured now; share = floor / lstm time (train, infer);"
              f" ceiling = torch time / floor, the best ratio an implementation doing these products"
              f" at peak and nothing else could reach")
        print(HEADER, flush=True)
        results = []
        cells = ("lstm", "gru") if args.cell == "both" else (args.cell,)
        for cell, (D, H, L, T) in itertools.product(cells, configs):
            rows = bench_config(cell, D, H, L, T, repeats, min_time, threads)
            for r in rows:
                print(fmt_row(r, rows[0] if r["threads"] != rows[0]["threads"] else None), flush=True)
            results.extend(rows)
    print(f"# total {time.perf_counter() - t_start:.0f} s; load average {os.getloadavg()[0]:.2f};"
          f" repeats measured again for other processes' load: {GUARD.redone},"
          f" still disturbed after {GUARD.tries} tries: {GUARD.contended}")
    for line in target_summary(results):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(cpu=cpu_model(), torch=torch.__version__, gemm_peak_flops=PEAK, results=results), f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
