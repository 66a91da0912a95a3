"""Issue 17, measured before building: do ensembles whose members differ in what they see (lookback,
scaling, seed), and a Theta partner, beat today's default on the development series? Reproduce with:

    nohup env PYTHONPATH=. .venv/bin/python bench/ensemble_study.py > ensemble.log 2>&1 &
    PYTHONPATH=. .venv/bin/python bench/ensemble_study.py --score-only     # the tables, from the cache

The protocol of bench/accuracy.py --origins 3 (origin o forecasts the last horizon of every series cut
by o * ceil(horizon / 2) rows, from the rows before it; MASE with the evaluation's season, the mean
over a panel's series; the mean over origins, then over seeds). For each data set, origin and base
seed b (0, 1, 2) the 9 members of the schedule are trained once, as `lstm train` would with
--blend 0 (calibrated head), one thread, seed b + i:

    member i: lookback factor [1, 1.5, 2][i % 3] x the default lookback (cut to what the shortest
    series allows), scaling [level, seasonal, series][(i + i // 3) % 3] (level where the season does
    not fit the lookback), so the first N members of the schedule are as diverse as N allows.

Every member's forecast (original units) is cached in bench/.cache/ensemble_study/ (an npz per
(data set, origin, base seed, member)), so the rules are scored again for free: today's default
(member 0 blended 0.5 with seasonal naive; --blend 0 for a model with future features, as train's
default), the median of the first N members alone and blended 0.5 with seasonal naive or with
Theta (lstm_cli.baselines.theta), the mean of 9, Theta, seasonal naive, and member 0 + Theta.
"spread": the std (ddof 0) over base seeds of a rule's MASE (mean over origins), the mean over
data sets. Train seconds per member (wall and CPU, one thread) are logged for the time budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from accuracy import DATASETS, SLOW  # noqa: E402

from lstm_cli import baselines, frame, limits, metrics, windows  # noqa: E402
from lstm_cli.evaluate import _truncate, known_after_cuts  # noqa: E402
from lstm_cli.pipeline import (  # noqa: E402
    BLEND_DEFAULT,
    MIN_TRAIN_WINDOWS,
    TrainRequest,
    default_lookback,
    season_length,
    train_on_series,
    warm_up,
)

FACTORS = (1.0, 1.5, 2.0)
SCALINGS = ("level", "seasonal", "series")
MEMBERS = 9
CACHE = os.path.join(os.path.dirname(__file__), ".cache", "ensemble_study")
# cheap first: a partial run still scores the data sets it finished
ORDER = ("nile", "us_macro", "insurance", "ausbeer", "prison", "hyndsight", "a10", "departures", "gasoline",
         "bank_calls")


def member_variant(i: int) -> tuple[float, str]:
    """(lookback factor, scaling) of member i of the schedule."""
    return FACTORS[i % 3], SCALINGS[(i + i // 3) % 3]


def member_lookback(factor: float, horizon: int, season: int, shortest: int, val_rows: int) -> int:
    """factor x the default lookback, cut so the shortest series still gives MIN_TRAIN_WINDOWS windows
    (never below the default)."""
    base = default_lookback(horizon, season, shortest, val_rows)
    room = shortest - val_rows - horizon - MIN_TRAIN_WINDOWS + 1
    return max(base, min(int(round(factor * base)), room, limits.MAX_STEPS))


class Origin:
    """One (data set, origin): the series up to the held-out horizon's end, the training part, the
    evaluation's season and the baselines' forecasts (S, H)."""

    def __init__(self, name: str, origin: int, data_dir: str):
        file, target, id_col, features, horizon, future_features = DATASETS[name]
        self.name, self.origin, self.horizon = name, origin, horizon
        self.target, self.id_col, self.features, self.future_features = target, id_col, features, future_features
        series = frame.read_series(os.path.join(data_dir, file), targets=(target,), features=features,
                                   future_features=future_features, id_col=id_col)
        self.actual = _truncate(series, np.diff(series.starts) - origin * -(-horizon // 2))
        self.cuts = np.diff(self.actual.starts) - horizon
        self.past = _truncate(self.actual, self.cuts)
        p = self.past
        self.season = season_length(p.freq, p.step, p.time_kind, p.times[: p.starts[1]])
        self.histories = [p.values[p.starts[s] : p.starts[s + 1], 0] for s in range(len(p.ids))]
        self.actuals = [self.actual.values[self.actual.starts[s] + self.cuts[s] : self.actual.starts[s + 1], 0]
                        for s in range(len(p.ids))]
        H, m = horizon, self.season
        self.snaive = np.array([baselines.seasonal_naive(y, H, m) for y in self.histories])
        self.naive = np.array([baselines.naive(y, H) for y in self.histories])
        self.theta = np.array([baselines.theta(y, H, m) for y in self.histories])

    def mase(self, forecast: np.ndarray) -> float:
        return float(np.mean([metrics.mase(a, f, y, self.season)
                              for a, f, y in zip(self.actuals, forecast, self.histories, strict=True)]))

    def member(self, i: int, base_seed: int) -> dict:
        """Member i's forecast (S, H) and what its training cost, from the cache or trained now."""
        path = os.path.join(CACHE, f"{self.name}_o{self.origin}_s{base_seed}_m{i}.npz")
        if os.path.exists(path):
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        factor, scaling = member_variant(i)
        lengths = np.diff(self.past.starts)
        shortest = int(lengths.min())
        val_rows = windows.val_rows_for(shortest, 0.1, self.horizon)
        lookback = member_lookback(factor, self.horizon, self.season, shortest, val_rows)
        if scaling == "seasonal" and not windows.has_seasonal_naive(lookback, self.season):
            scaling = "level"
        req = TrainRequest(data=self.past.source, out="", targets=(self.target,), horizon=self.horizon,
                           features=self.features, future_features=self.future_features, id_col=self.id_col,
                           blend=0.0, threads=1, lookback=lookback, scaling=scaling)
        req = replace(req, train=replace(req.train, seed=base_seed + i))
        wall, cpu = time.perf_counter(), time.process_time()
        model, result = train_on_series(self.past, req)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        spec = model.spec
        forecast, _ = model.forecast(self.past.ids, self.past.values, self.past.starts, self.horizon,
                                     times=self.past.times,
                                     future=known_after_cuts(self.actual, self.cuts, spec, self.horizon))
        partner = self.snaive if windows.has_seasonal_naive(spec.lookback, spec.season) else self.naive
        out = {"forecast": forecast[:, :, 0, 0].astype(np.float64), "partner": partner,
               "wall": np.float64(wall), "cpu": np.float64(cpu), "lookback": np.int64(spec.lookback),
               "scaling": np.str_(spec.scaling), "epochs": np.int64(result.epochs_run)}
        os.makedirs(CACHE, exist_ok=True)
        ignore = os.path.join(os.path.dirname(CACHE), ".gitignore")
        if not os.path.exists(ignore):
            with open(ignore, "w") as fh:
                fh.write("*\n")
        np.savez(path + ".tmp.npz", **out)
        os.replace(path + ".tmp.npz", path)
        print(f"  {self.name} origin {self.origin} seed {base_seed} member {i} ({factor:g}x lookback {spec.lookback}, "
              f"{spec.scaling}): {result.epochs_run} epochs, {wall:.1f} s wall, {cpu:.1f} s cpu, "
              f"MASE {self.mase(out['forecast']):.3f}", flush=True)
        return out


def rules_of(o: Origin, members: list[dict]) -> dict[str, np.ndarray]:
    """Every combination rule's forecast (S, H) at one (origin, base seed)."""
    nets = np.array([m["forecast"] for m in members])  # (members, S, H)
    today_w = 0.0 if o.future_features else BLEND_DEFAULT
    out = {"today": (1 - today_w) * nets[0] + today_w * members[0]["partner"]}
    for n in (3, 5, 9):
        med = np.median(nets[:n], axis=0)
        out[f"med{n}"] = med
        out[f"med{n}+sn"] = 0.5 * med + 0.5 * o.snaive
        out[f"med{n}+th"] = 0.5 * med + 0.5 * o.theta
    mean9 = nets.mean(axis=0)
    out["mean9"], out["mean9+sn"], out["mean9+th"] = mean9, 0.5 * mean9 + 0.5 * o.snaive, 0.5 * mean9 + 0.5 * o.theta
    out["net1"] = nets[0]
    out["net1+th"] = 0.5 * nets[0] + 0.5 * o.theta
    out["theta"], out["snaive"], out["naive"] = o.theta, o.snaive, o.naive
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", help="the development series [default: ../shared/data]",
                    default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--only", action="append", help="this data set only (repeatable)")
    ap.add_argument("--seeds", type=int, default=3, help="base seeds 0 .. N-1 (member i trains with seed b + i)")
    ap.add_argument("--origins", type=int, default=3, help="forecast origins, ceil(horizon / 2) apart")
    ap.add_argument("--with-slow", action="store_true", help=f"also {', '.join(SLOW)}")
    ap.add_argument("--score-only", action="store_true", help="score the data sets whose members are all cached")
    args = ap.parse_args()
    if not args.score_only:
        warm_up()  # compiled before the first member's clock starts
    names = [n for n in ORDER if (n in args.only if args.only else (args.with_slow or n not in SLOW))]
    table, spread, seconds = {}, {}, {}
    for name in names:
        origins = [Origin(name, o, args.data_dir) for o in range(args.origins)]
        keys = [(o, s, i) for s in range(args.seeds) for o in range(args.origins) for i in range(MEMBERS)]
        if args.score_only and not all(os.path.exists(os.path.join(CACHE, f"{name}_o{o}_s{s}_m{i}.npz"))
                                       for o, s, i in keys):
            print(f"{name}: not all members cached, skipped", flush=True)
            continue
        per_seed: dict[str, list[float]] = {}
        cost = np.zeros((MEMBERS, 2))
        for s in range(args.seeds):
            scores: dict[str, list[float]] = {}
            for o in origins:
                members = [o.member(i, s) for i in range(MEMBERS)]
                cost += [[m["wall"], m["cpu"]] for m in members]
                for rule, f in rules_of(o, members).items():
                    scores.setdefault(rule, []).append(o.mase(f))
            for rule, v in scores.items():
                per_seed.setdefault(rule, []).append(float(np.mean(v)))
        table[name] = {r: float(np.mean(v)) for r, v in per_seed.items()}
        spread[name] = {r: float(np.std(v)) for r, v in per_seed.items()}
        seconds[name] = cost / (args.seeds * args.origins)
        lookbacks = [int(origins[0].member(i, 0)["lookback"]) for i in range(MEMBERS)]
        used = [str(origins[0].member(i, 0)["scaling"]) for i in range(MEMBERS)]
        print(f"\n== {name} (horizon {origins[0].horizon}, season {origins[0].season}; origin 0 lookbacks "
              f"{lookbacks}, scalings {used})", flush=True)
        print(f"{'rule':10} {'MASE':>7} {'/snaive':>8} {'seed std':>9}   per seed")
        for r in table[name]:
            print(f"{r:10} {table[name][r]:7.3f} {table[name][r] / table[name]['snaive']:8.3f} {spread[name][r]:9.4f}"
                  f"   {' '.join(f'{v:.3f}' for v in per_seed[r])}")
        print("train seconds per member (mean over origins and seeds), wall / cpu: "
              + ", ".join(f"{i}:{w:.1f}/{c:.1f}" for i, (w, c) in enumerate(seconds[name])), flush=True)
    if not table:
        return
    done = list(table)
    rules = list(table[done[0]])
    print(f"\n== summary over {len(done)} data sets: {', '.join(done)}")
    # ">2% worse": the floor (seasonal naive is naive on the yearly nile, whose season is 1)
    print(f"{'rule':10} {'geo/sn':>7} {'beats sn':>9} {'>2% worse':>10} {'spread':>7} {'/today':>7}")
    today_spread = np.mean([spread[n]["today"] for n in done])
    for r in rules:
        ratio = np.array([table[n][r] / table[n]["snaive"] for n in done])
        sp = float(np.mean([spread[n][r] for n in done]))
        print(f"{r:10} {np.exp(np.mean(np.log(ratio))):7.3f} {int(np.sum(ratio < 1)):>5d}/{len(done)} "
              f"{int(np.sum(ratio > 1.02)):>10d} {sp:7.4f} {sp / today_spread if today_spread else float('nan'):7.2f}")
    print("\ntrain seconds (cpu, one thread, mean per training) of the first N members against member 0 (today):")
    for name in done:
        cpu = seconds[name][:, 1]
        print(f"{name:11} member 0 {cpu[0]:6.1f} s; N=3 {cpu[:3].sum():6.1f} s ({cpu[:3].sum() / cpu[0]:.1f}x), "
              f"N=5 {cpu[:5].sum():6.1f} s ({cpu[:5].sum() / cpu[0]:.1f}x), N=9 {cpu.sum():6.1f} s "
              f"({cpu.sum() / cpu[0]:.1f}x); per member " + " ".join(f"{c:.1f}" for c in cpu))


if __name__ == "__main__":
    main()
