"""How to combine the network with seasonal naive: one training per (data set, origin, seed), then
every combination rule scored on the same forecasts. Reproduce docs/accuracy.md's table with:

    PYTHONPATH=. .venv/bin/python bench/blend_study.py [--seeds 3] [--origins 3] [--only a10]

Each model is trained as `lstm train` would with --blend 0 (calibrated head, level anchor), one
thread. A rule turns (network forecast, seasonal naive, the validation windows) into a forecast:
fixed weights w (forecast = (1 - w) network + w seasonal naive; --blend w is exactly this), weights
fitted on the validation windows (least squares in [0, 1]; by validation MAE on a grid; inverse
validation MAE), choosing the better of network / seasonal naive / naive on validation, and the
average with seasonal naive plus drift. MASE as in bench/accuracy.py (mean over origins and
seeds); the last lines give the geometric mean of MASE / seasonal naive and the wins over it.
"ens": the mean of the seeds' network forecasts at each origin, alone and blended 0.5.

--variant log trains on log values and forecasts exp(...) (every series here is positive);
--variant refit-all retrains on every row (no validation part) for the first run's best epoch
count, keeping its calibration factor.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from accuracy import DATASETS, SLOW  # noqa: E402

from lstm_cli import frame, metrics, scaling, windows  # noqa: E402
from lstm_cli.evaluate import _truncate  # noqa: E402
from lstm_cli.pipeline import TrainRequest, scale_head, train_on_series  # noqa: E402

FIXED = (0.3, 0.4, 0.5, 0.6, 0.7)


def relative_parts(x_rel: np.ndarray, horizon: int, season: int) -> tuple[np.ndarray, np.ndarray]:
    """(seasonal naive, seasonal naive with drift) of windows given relative to their last row
    (N, lookback): both relative to the last row, (N, horizon). Drift: the mean change between
    the last two seasons per season ahead (or the window's mean step for data without a season)."""
    L = x_rel.shape[1]
    snaive = x_rel[:, windows.seasonal_naive_rows(L, horizon, season)]
    if 1 < season and 2 * season <= L:
        drift = x_rel[:, -season:].mean(1) - x_rel[:, -2 * season : -season].mean(1)
        ahead = 1 + np.arange(horizon) // season
    else:
        drift = (x_rel[:, -1] - x_rel[:, 0]) / max(L - 1, 1)
        ahead = 1 + np.arange(horizon)
    return snaive, snaive + drift[:, None] * ahead[None, :]


def clipped_ls(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """w in [0, 1] minimising ||y - (1 - w) a - w b||^2."""
    d = b - a
    denom = float(np.sum(d * d))
    return 0.0 if denom == 0 else float(np.clip(np.sum(d * (y - a)) / denom, 0.0, 1.0))


def forecasts(name: str, origin: int, seed: int, data_dir: str, variant: str) -> tuple[dict[str, float], tuple]:
    """({rule: MASE}, what mase_of needs to score another forecast of the same origin)."""
    file, target, id_col, features, horizon = DATASETS[name]
    series = frame.read_series(os.path.join(data_dir, file), targets=(target,), features=features, id_col=id_col)
    actual = _truncate(series, np.diff(series.starts) - origin * -(-horizon // 2))
    full = replace(actual, values=np.log(actual.values)) if variant == "log" else actual
    past = _truncate(full, np.diff(full.starts) - horizon)
    req = TrainRequest(data=past.source, out="", targets=(target,), horizon=horizon, features=features,
                       id_col=id_col, blend=0.0, threads=1)
    req = replace(req, train=replace(req.train, seed=seed))
    model, result = train_on_series(past, req)
    if variant == "refit-all":
        again, _ = train_on_series(past, replace(req, val_frac=0.0, lookback=model.spec.lookback, calibrate="none",
                                                 train=replace(req.train, epochs=max(result.best_epoch, 1),
                                                               patience=10**6)))
        scale_head(again.network, model.training["params"]["output_scale"] or 1.0)
        model = again
    spec = model.spec
    L, m = spec.lookback, spec.season
    scaled = scaling.transform(past.values, past.starts, model.loc, model.scale)
    w = windows.make_windows(scaled, past.starts, 1, L, horizon, req.val_frac, scaling=spec.scaling, season=m)
    net_v, y_v = model.network.predict(w["x_val"]).astype(np.float64), w["y_val"]  # relative to the last row
    sn_v = relative_parts(w["x_val"][:, :, 0], horizon, m)[0]
    inputs, base = windows.split_anchor(windows.last_windows(scaled, past.starts, L), horizon, 1, spec.scaling, m)
    net_t = model.network.predict(inputs).astype(np.float64)
    sn_t, drift_t = relative_parts(inputs[:, :, 0], horizon, m)

    def mae(f):
        return float(np.mean(np.abs(y_v - f)))

    def blended(wt):  # the test forecast with weight wt on seasonal naive
        return (1 - wt) * net_t + wt * sn_t

    grid = np.linspace(0, 1, 21)
    inv_net, inv_sn = 1 / max(mae(net_v), 1e-12), 1 / max(mae(sn_v), 1e-12)
    candidates = ((net_t, net_v), (sn_t, sn_v), (0 * sn_t, 0 * sn_v))  # network, seasonal naive, naive
    rules = {"network": net_t,
             **{f"w={wt}": blended(wt) for wt in FIXED},
             "fit LS": blended(clipped_ls(net_v, sn_v, y_v)),
             "fit MAE": blended(grid[int(np.argmin([mae((1 - g) * net_v + g * sn_v) for g in grid]))]),
             "inv MAE": blended(inv_sn / (inv_net + inv_sn)),
             "pick val": min(candidates, key=lambda c: mae(c[1]))[0],
             "avg drift": 0.5 * net_t + 0.5 * drift_t,
             "snaive": sn_t}
    scorer = (actual, np.diff(past.starts), base[:, :, 0], model.scale[:, 0], model.loc[:, 0], m, variant)
    return {rule: mase_of(rel, scorer) for rule, rel in rules.items()}, (net_t, sn_t, scorer)


def mase_of(rel: np.ndarray, scorer: tuple) -> float:
    """MASE (mean over series) of a forecast given relative to the windows' last rows, scaled."""
    actual, lengths, base, scale, loc, m, variant = scorer
    f = (rel + base) * scale[:, None] + loc[:, None]
    if variant == "log":
        f = np.exp(f)
    scores = []
    for s in range(len(lengths)):
        y = actual.values[actual.starts[s] : actual.starts[s + 1], 0]
        scores.append(metrics.mase(y[lengths[s] :], f[s], y[: lengths[s]], m))
    return float(np.mean(scores))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--only", action="append")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--origins", type=int, default=3)
    ap.add_argument("--variant", choices=("plain", "log", "refit-all"), default="plain")
    args = ap.parse_args()
    names = [n for n in DATASETS if (n in args.only if args.only else n not in SLOW)]
    table = {}
    for name in names:
        runs = {(o, s): forecasts(name, o, s, args.data_dir, args.variant)
                for s in range(args.seeds) for o in range(args.origins)}
        table[name] = {rule: float(np.mean([r[0][rule] for r in runs.values()])) for rule in runs[0, 0][0]}
        for label, wt in (("ens", 0.0), ("ens w=0.5", 0.5)):  # the seeds' mean network forecast per origin
            scores = []
            for o in range(args.origins):
                parts = [runs[o, s][1] for s in range(args.seeds)]
                net = np.mean([p[0] for p in parts], axis=0)
                scores.append(mase_of((1 - wt) * net + wt * parts[0][1], parts[0][2]))
            table[name][label] = float(np.mean(scores))
        if name == names[0]:
            print(f"{'data':11}" + "".join(f"{rule:>10}" for rule in table[name]), flush=True)
        print(f"{name:11}" + "".join(f"{v:10.3f}" for v in table[name].values()), flush=True)
    rules = list(next(iter(table.values())))
    ratio = {r: np.array([table[n][r] / table[n]["snaive"] for n in names]) for r in rules}
    print(f"{'geo/snaive':11}" + "".join(f"{np.exp(np.mean(np.log(ratio[r]))):10.3f}" for r in rules))
    print(f"{'beats sn':11}" + "".join(f"{int(np.sum(ratio[r] < 1)):10d}" for r in rules))


if __name__ == "__main__":
    main()
