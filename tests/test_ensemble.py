"""`lstm train --ensemble N`: members that differ in lookback, anchor and seed (pipeline.member_plan),
one model file (member 0 as a whole model, members 1.. under "members"), the median forecast, and
every command that reads a model: predict (also --engine dask), info, evaluate (--refit), warm starts."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lstm_cli import frame, modelfile, pipeline
from lstm_cli.cli import cli
from lstm_cli.errors import EXIT_DATA, EXIT_USAGE
from lstm_cli.model import Ensemble, Forecaster, forecaster_of, member_headers
from lstm_cli.pipeline import LOOKBACK_FACTORS, MEMBER_SCALINGS, TrainRequest, member_plan

ROOT = Path(__file__).resolve().parents[1]
A10 = ROOT / "sample_data" / "a10_monthly.csv"
PANEL = ROOT / "sample_data" / "departures_monthly_panel.csv"
A10_TARGET = ["--target", "cost_million_aud"]
TINY = ["--hidden", "4", "--epochs", "3", "--threads", "1", "-q"]


def run(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def train(out: Path, *options, data=A10) -> Path:
    result = run("train", data, *(() if "--target" in options else A10_TARGET), *options, *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def a10_n3(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("ensemble") / "a10_n3.lstm", "--horizon", "6", "--ensemble", "3")


def members_of(path: Path) -> list[Forecaster]:
    header, arrays = modelfile.load(path)
    return [Forecaster.from_file_parts(h, a) for h, a in member_headers(header, arrays)]


def predicted(path: Path, data: Path = A10, *extra) -> pd.DataFrame:
    result = run("predict", path, data, *extra)
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


# --- the forecast --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
def test_forecast_is_the_median_of_the_members_forecasts(tmp_path, n):
    path = train(tmp_path / "e.lstm", "--horizon", "6", "--ensemble", str(n))
    members = members_of(path)
    assert len(members) == n
    values = pd.read_csv(A10)[["cost_million_aud"]].to_numpy(np.float64)
    starts = np.array([0, len(values)])
    forecasts = np.stack([m.forecast(m.ids, values, starts)[0][0, :, 0, 0] for m in members])
    assert len({f.tobytes() for f in forecasts}) == n  # they do differ
    got = predicted(path)["cost_million_aud"].to_numpy()
    want = np.median(forecasts, axis=0)  # n = 2: the mean of the two
    assert np.allclose(got, want, rtol=1e-6, atol=0)
    if n == 2:  # the mean of two that differ is neither (for n = 3 one member may be the middle throughout)
        assert not any(np.allclose(got, f, rtol=1e-4, atol=0) for f in forecasts)


def test_quantile_ensemble_forecasts_sorted_medians(tmp_path):
    path = train(tmp_path / "q.lstm", "--horizon", "3", "--ensemble", "2", "--quantiles", "0.1,0.5,0.9")
    members = members_of(path)
    values = pd.read_csv(A10)[["cost_million_aud"]].to_numpy(np.float64)
    forecasts = np.stack([m.forecast(m.ids, values, np.array([0, len(values)]))[0][0, :, 0, :] for m in members])
    want = np.sort(np.median(forecasts, axis=0), axis=-1)
    got = predicted(path)[[f"cost_million_aud_q{q}" for q in ("0.1", "0.5", "0.9")]].to_numpy()
    assert np.allclose(got, want, rtol=1e-6, atol=0)
    assert (np.diff(got, axis=1) >= 0).all()


# --- the plan ----------------------------------------------------------------------------------


def series_of(data: Path, rows: int | None = None, tmp_path: Path | None = None, **read) -> frame.SeriesSet:
    if rows is not None:
        head = tmp_path / f"head{rows}.csv"
        pd.read_csv(data).head(rows).to_csv(head, index=False)
        data = head
    return frame.read_series(str(data), **read)


def request(**changes) -> TrainRequest:
    return TrainRequest(**{"data": str(A10), "out": "", "targets": ("cost_million_aud",), "horizon": 6, **changes})


def test_member_plan_cycles_lookbacks_anchors_and_seeds():
    series = series_of(A10, targets=("cost_million_aud",))
    plan = member_plan(request(ensemble=9, lookback=12, train=pipeline.TrainConfig(seed=5)), series)
    assert [p.lookback for p in plan] == [int(round(f * 12)) for f in LOOKBACK_FACTORS] * 3  # 12, 18, 24, ...
    # member 0 keeps the default (None: training resolves it by the data size, "level" on a10)
    assert [p.scaling for p in plan] == [None] + [MEMBER_SCALINGS[(i + i // 3) % 3] for i in range(1, 9)]
    pairs = {(p.lookback, p.scaling or "level") for p in plan}
    assert len(pairs) == 9  # every 9 members: each lookback with each anchor
    assert [p.train.seed for p in plan] == list(range(5, 14))
    assert all(p.ensemble == 1 for p in plan)


def test_member_plan_starts_from_the_given_scaling():
    series = series_of(A10, targets=("cost_million_aud",))
    plan = member_plan(request(ensemble=3, lookback=12, scaling="series"), series)
    assert [p.scaling for p in plan] == ["series", "level", "seasonal"]


def test_member_plan_falls_back_to_level_where_the_season_does_not_fit():
    """Monthly data has a season of 12: a lookback of 6 (x1.5 = 9) cannot anchor a season back."""
    series = series_of(A10, targets=("cost_million_aud",))
    plan = member_plan(request(ensemble=3, lookback=6, horizon=3), series)
    assert [(p.lookback, p.scaling) for p in plan] == [(6, None), (9, "level"), (12, "series")]
    plan = member_plan(request(ensemble=3, lookback=8, horizon=3), series)  # 8 x 1.5 = 12: it fits
    assert [(p.lookback, p.scaling) for p in plan] == [(8, None), (12, "seasonal"), (16, "series")]


def test_an_ensemble_on_short_data_says_the_rule_chose_member_0s_scaling(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("\n".join(A10.read_text().splitlines()[:61]) + "\n")  # 60 months: about 20 windows
    result = CliRunner().invoke(cli, ["train", str(short), "--target", "cost_million_aud", "--epochs", "1",
                                      "--hidden", "4", "--horizon", "6", "--ensemble", "2", "--threads", "1",
                                      "--out", str(tmp_path / "e.lstm")])
    assert result.exit_code == 0, result.output
    assert "scaling series (the default for fewer than 120 training windows)" in result.output


def test_member_plan_cuts_lookbacks_to_short_data(tmp_path):
    """40 rows, horizon 6: 4 validation rows, and room for lookbacks of at most 40 - 4 - 6 - 4 + 1 = 27."""
    series = series_of(A10, rows=40, tmp_path=tmp_path, targets=("cost_million_aud",))
    val_rows = pipeline.windows.val_rows_for(40, 0.1, 6)
    room = 40 - val_rows - 6 - pipeline.MIN_TRAIN_WINDOWS + 1
    plan = member_plan(request(ensemble=3, lookback=18), series)
    assert [p.lookback for p in plan] == [18, min(27, room), min(36, room)]
    assert max(p.lookback for p in plan) == room < 36
    plan = member_plan(request(ensemble=3, lookback=room + 2), series)  # never below the base lookback
    assert [p.lookback for p in plan] == [room + 2] * 3


def test_short_data_trains_an_ensemble_whose_members_fit(tmp_path):
    short = tmp_path / "short.csv"
    pd.read_csv(A10).head(40).to_csv(short, index=False)
    path = train(tmp_path / "short.lstm", "--horizon", "6", "--ensemble", "3", data=short)
    members = members_of(path)
    assert len({m.spec.lookback for m in members}) > 1
    assert len(predicted(path, short)) == 6


def test_validate_checks_data_against_the_longest_members_lookback(a10_n3, tmp_path):
    """It checked member 0's lookback: data predict refuses passed as usable."""
    longest = max(m.spec.lookback for m in members_of(a10_n3))
    short = tmp_path / "short.csv"
    pd.read_csv(A10).head(longest - 1).to_csv(short, index=False)
    result = run("validate", short, "--model", a10_n3)
    assert result.exit_code == EXIT_DATA, result.output
    assert f"lookback {longest}" in result.output
    assert run("predict", a10_n3, short).exit_code == EXIT_DATA
    enough = tmp_path / "enough.csv"
    pd.read_csv(A10).head(longest).to_csv(enough, index=False)
    assert run("validate", enough, "--model", a10_n3).exit_code == 0
    assert run("predict", a10_n3, enough).exit_code == 0


# --- info, evaluate, warm starts ------------------------------------------------------------------


def test_info_lists_the_members(a10_n3):
    result = run("info", a10_n3)
    assert result.exit_code == 0, result.output
    members = members_of(a10_n3)
    line = next(line for line in result.output.splitlines() if line.strip().startswith("ensemble"))
    assert "median of 3 members" in line
    for m in members:
        assert f"lookback {m.spec.lookback} {m.spec.scaling}" in line
    doc = json.loads(run("info", a10_n3, "--format", "json").output)
    assert [m["data"] for m in doc["members"]] == [{"lookback": m.spec.lookback, "scaling": m.spec.scaling}
                                                   for m in members[1:]]
    training = next(line for line in result.output.splitlines() if line.strip().startswith("training"))
    assert len(re.findall(r"\d+ \(\d+\)", training)) == 3  # every member's epochs (best), not member 1's alone
    for m in members:
        assert f"{m.training['epochs_run']} ({m.training['best_epoch']})" in training


def test_evaluate_scores_the_ensemble(a10_n3):
    result = run("evaluate", a10_n3, A10, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    text = json.dumps(report)
    assert "lstm" in text and "seasonal_naive" in text


def test_evaluate_refit_trains_an_ensemble_of_the_same_plan(a10_n3, monkeypatch):
    from lstm_cli import evaluate

    refits = []
    original = evaluate.train_on_series

    def recording(series, req, **kwargs):
        model, result = original(series, req, **kwargs)
        refits.append((series, req, model))
        return model, result

    monkeypatch.setattr(evaluate, "train_on_series", recording)
    result = run("evaluate", a10_n3, A10, "--refit", "--backtest", "2")
    assert result.exit_code == 0, result.output
    assert len(refits) == 2
    members = members_of(a10_n3)
    for series, req, model in refits:
        assert isinstance(model, Ensemble) and len(model.members) == 3
        plan = member_plan(req, series)  # the plan of the refit's data: lookbacks may be cut, anchors not
        assert [m.spec.lookback for m in model.members] == [p.lookback for p in plan]
        assert [m.spec.scaling for m in model.members] == [m.spec.scaling for m in members]
        assert plan[0].lookback == members[0].spec.lookback
        assert [m.training["seed"] for m in model.members] == [m.training["seed"] for m in members]


def test_warm_start_of_an_ensemble_fine_tunes_every_member_and_keeps_their_lookbacks(a10_n3, tmp_path):
    tuned = tmp_path / "tuned.lstm"
    result = run("train", A10, *A10_TARGET, "--horizon", "6", "--warm-start", a10_n3, *TINY, "--out", tuned)
    assert result.exit_code == 0, result.output
    old, new = members_of(a10_n3), members_of(tuned)
    assert len(new) == 3
    assert [(m.spec.lookback, m.spec.scaling) for m in new] == [(m.spec.lookback, m.spec.scaling) for m in old]
    for before, after in zip(old, new, strict=True):
        assert not np.array_equal(before.network.tensors()["head.weight"], after.network.tensors()["head.weight"])
        assert after.training["params"].get("warm_start_sha256") == modelfile.file_sha256(a10_n3)


@pytest.mark.parametrize("n,old", [("3", "single"), ("2", "ensemble")])
def test_warm_start_with_another_member_count_is_a_usage_error(a10_n3, tmp_path, n, old):
    """It was an internal error (exit 70, an invalid model with no members) for a single model."""
    base = a10_n3 if old == "ensemble" else train(tmp_path / "single.lstm", "--horizon", "6")
    result = run("train", A10, *A10_TARGET, "--horizon", "6", "--warm-start", base, "--ensemble", n, *TINY,
                 "--out", tmp_path / "out.lstm")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--ensemble" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out.lstm").exists()


# --- the file -------------------------------------------------------------------------------------


def test_the_same_data_and_options_give_a_byte_identical_file_whatever_the_interleaving(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    options = ["--horizon", "6", "--ensemble", "3", "--hidden", "4", "--epochs", "3", "--threads", "2", "-q"]
    outs = [tmp_path / f"run{i}.lstm" for i in range(3)]
    for out in outs[:2]:
        assert run("train", A10, *A10_TARGET, *options, "--out", out).exit_code == 0
    original = pipeline.train_on_series

    def member_zero_last(series, req, **kwargs):  # member 0 finishes after the others this time
        if req.ensemble == 1 and req.train.seed == 0:
            time.sleep(0.5)
        return original(series, req, **kwargs)

    monkeypatch.setattr(pipeline, "train_on_series", member_zero_last)
    assert run("train", A10, *A10_TARGET, *options, "--out", outs[2]).exit_code == 0
    data = [out.read_bytes() for out in outs]
    assert data[0] == data[1] == data[2]


def no_epoch_for_members_from(first: int, monkeypatch):
    """Members `first`.. get no epoch before the time limit (they start last when members
    outnumber the threads): train_on_series returns what it does then."""
    from lstm_cli.train import TrainResult

    original = pipeline.train_on_series

    def late(series, req, **kwargs):
        if req.ensemble == 1 and req.train.seed >= first:
            return None, TrainResult(epochs_run=0, best_epoch=0, stopped_by="time_limit")
        return original(series, req, **kwargs)

    monkeypatch.setattr(pipeline, "train_on_series", late)


@pytest.mark.parametrize("n,first,kept", [(3, 2, 2), (4, 1, 1)])
def test_time_limit_keeps_the_members_that_trained(tmp_path, monkeypatch, n, first, kept):
    """They were all thrown away (exit 2, no model written) when the last member got no epoch."""
    no_epoch_for_members_from(first, monkeypatch)
    out = tmp_path / "m.lstm"
    result = run("train", A10, *A10_TARGET, "--horizon", "6", "--ensemble", str(n), "--hidden", "4",
                 "--epochs", "2", "--threads", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"member {n}/{n}" in result.output and "left out of the model" in result.output
    header, _ = modelfile.load(out)
    assert len(header.get("members", [])) + 1 == kept  # one left: a single model file
    members = members_of(out)
    assert [m.training["params"]["ensemble"] for m in members] == [kept] * kept
    assert len(predicted(out)) == 6


def test_time_limit_before_member_zeros_first_epoch_writes_nothing(tmp_path, monkeypatch):
    no_epoch_for_members_from(0, monkeypatch)
    result = run("train", A10, *A10_TARGET, "--horizon", "6", "--ensemble", "3", *TINY, "--out", tmp_path / "m.lstm")
    assert result.exit_code == EXIT_USAGE and "before the first epoch finished" in result.output
    assert not (tmp_path / "m.lstm").exists()


def test_resume_with_an_ensemble_is_a_usage_error(tmp_path):
    result = run("train", A10, *A10_TARGET, "--horizon", "6", "--ensemble", "3", "--resume", *TINY,
                 "--out", tmp_path / "m.lstm")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--resume" in result.output and len(result.output.strip().splitlines()) == 1


def corrupted(a10_n3: Path, tmp_path: Path, mutate) -> Path:
    """The ensemble's file with mutate(header, arrays) applied, written without the schema check."""
    header, arrays = modelfile.load(a10_n3)
    header, arrays = json.loads(json.dumps(header)), {k: np.array(v) for k, v in arrays.items()}
    for key in ("arrays", "payload_sha256", "header_sha256"):
        header.pop(key, None)
    mutate(header, arrays)
    out = tmp_path / "corrupt.lstm"
    out.write_bytes(modelfile.dumps(header, arrays, schema=False))
    return out


def _set(path: list, value):
    def mutate(header, arrays):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


CORRUPTIONS = {
    "members_not_a_list": (_set(["members"], {"lookback": 36}), "members"),
    "members_empty": (_set(["members"], []), "members"),
    "member_unknown_key": (lambda h, a: h["members"][0].update(weights="x"), "members[0]"),
    "member_data_unknown_key": (lambda h, a: h["members"][1]["data"].update(hidden=3), "members[1].data"),
    "member_lookback_zero": (lambda h, a: h["members"][0]["data"].update(lookback=0), "lookback"),
    "member_lookback_huge": (lambda h, a: h["members"][0]["data"].update(lookback=10**9), "lookback"),
    "member_lookback_text": (lambda h, a: h["members"][0]["data"].update(lookback="36"), "lookback"),
    "member_scaling_unknown": (lambda h, a: h["members"][0]["data"].update(scaling="robust"), "scaling"),
    "member_not_an_object": (lambda h, a: h["members"].__setitem__(0, 3), "members[0]"),
    "member_seasonal_shorter_than_a_season": (lambda h, a: h["members"][0]["data"].update(lookback=6,
                                                                                          scaling="seasonal"),
                                              "members[0]: data.season"),
    "member_array_missing": (lambda h, a: a.pop("member2.head.bias"), "member"),
    "member_array_extra": (lambda h, a: a.update({"member3.head.bias": a["head.bias"]}), "member3"),
    "member_array_wrong_shape": (lambda h, a: a.update({"member1.head.bias": np.zeros(2, np.float32)}), "head.bias"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_ensemble_headers_are_exit_65_in_one_line(a10_n3, tmp_path, name):
    mutate, where = CORRUPTIONS[name]
    path = corrupted(a10_n3, tmp_path, mutate)
    for command in (["predict", path, A10], ["info", path], ["evaluate", path, A10]):
        result = run(*command)
        assert result.exit_code == EXIT_DATA, (command, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lstm: "), result.output
        assert where in lines[0] and "Traceback" not in result.output, lines[0]


def test_a_single_model_file_has_no_members(tmp_path):
    path = train(tmp_path / "single.lstm", "--horizon", "6")
    header, arrays = modelfile.load(path)
    assert "members" not in header and not any(name.startswith("member") for name in arrays)
    model = forecaster_of(header, arrays)
    assert isinstance(model, Forecaster)
    assert "ensemble" not in run("info", path).output
    assert "ensemble" not in model.training["params"] or model.training["params"]["ensemble"] == 1


# --- --engine dask ------------------------------------------------------------------------------


def test_dask_predict_of_an_ensemble_equals_local(cluster, tmp_path):
    path = train(tmp_path / "panel.lstm", "--id-col", "series_id", "--target", "departures_thousands",
                 "--horizon", "3", "--ensemble", "3", data=PANEL)
    out = tmp_path / "dask.csv"
    result = run("predict", path, PANEL, "--engine", "dask", "--scheduler", cluster.scheduler_address,
                 "--out", out, "-q")
    assert result.exit_code == 0, result.output
    local = run("predict", path, PANEL)
    assert local.exit_code == 0, local.output
    assert out.read_bytes() == local.stdout_bytes
