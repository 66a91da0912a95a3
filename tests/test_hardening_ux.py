"""Issue 15, what a new user sees: the training progress (phases, batches, a labelled ETA), the
--id-col hint for a panel read as one series, answers on stdout, and evaluate on rows the model
was trained on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstm_cli.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SAMPLES = ROOT / "sample_data"
A10 = SAMPLES / "a10_monthly.csv"
TINY = ["--epochs", "2", "--hidden", "4", "--threads", "1"]
LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable)) or shutil.which("lstm")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def a10_model(tmp_path_factory):
    """Trained on all of a10 but its last 12 months (so evaluate has unseen rows to score)."""
    d = tmp_path_factory.mktemp("ux")
    lines = A10.read_text().splitlines()
    (d / "head.csv").write_text("\n".join(lines[:-12]) + "\n")
    path = d / "a10.lstm"
    result = run("train", d / "head.csv", "--target", "cost_million_aud", "--horizon", "6", "--out", path, *TINY, "-q")
    assert result.exit_code == 0, result.output
    return path


# ------------------------------------------------------------------------------------------
# id_col_hint: a panel read without --id-col


@pytest.mark.parametrize("name, target, id_col, n", [
    ("departures_monthly_panel.csv", "departures_thousands", "series_id", 5),
    ("prison_quarterly_panel.csv", "prisoners", "series_id", 32),
])
@pytest.mark.parametrize("command", ["train", "validate"])
def test_id_col_hint_names_the_series_column_of_a_panel(command, name, target, id_col, n, tmp_path):
    extra = ["--horizon", "4", "--out", tmp_path / "m.lstm", *TINY] if command == "train" else []
    result = run(command, DATA / name, "--target", target, *extra)
    assert result.exit_code == 65, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("lstm: ") and "Traceback" not in result.output
    assert f"pass --id-col {id_col}" in line and f"{id_col!r} has {n} values" in line
    assert "--time-col" not in line  # the old advice pointed at the wrong option


def test_id_col_hint_for_an_unsorted_panel_with_another_column_name(tmp_path):
    rows = [f"2021-{m:02d}-01,{store},{m * (i + 1)},x{m}" for m in range(1, 9) for i, store in enumerate("cab")]
    path = tmp_path / "shops.csv"
    path.write_text("when,shop,sales,note\n" + "\n".join(rows) + "\n")
    result = run("validate", path, "--target", "sales", "--time-col", "when")
    assert result.exit_code == 65
    assert "pass --id-col shop" in result.stderr and "'shop' has 3 values" in result.stderr


def test_id_col_hint_not_given_for_a_real_duplicate(tmp_path):
    # the text column does not split the rows into series with one row per time
    path = tmp_path / "dup.csv"
    path.write_text("date,shop,sales\n2021-01-01,a,1\n2021-01-01,a,2\n2021-02-01,b,3\n2021-03-01,b,4\n")
    result = run("validate", path, "--target", "sales")
    assert result.exit_code == 65
    assert "--id-col" not in result.stderr and "keep one row per time" in result.stderr
    for good in (DATA / "bad" / "duplicate_time.csv",):
        assert "--id-col" not in run("validate", good, "--target", "sales").stderr


# ------------------------------------------------------------------------------------------
# answer_on_stdout: info, validate and evaluate --format table print their answer on stdout


def test_answer_on_stdout_info_table(a10_model):
    result = run("info", a10_model)
    assert result.exit_code == 0
    assert "lookback" in result.stdout and "sha256" in result.stdout
    assert result.stderr == ""
    assert "\x1b[" not in result.stdout  # plain text: stdout is not a terminal


def test_answer_on_stdout_validate_table_and_quiet():
    args = ["validate", DATA / "departures_monthly_panel.csv", "--target", "departures_thousands",
            "--id-col", "series_id"]
    ok = run(*args)
    assert ok.exit_code == 0 and ok.stderr == ""
    assert "is usable" in ok.stdout and "readable" in ok.stdout
    assert run(*args, "-q").output == ""
    bad = run(*args, "--lookback", "600")
    assert bad.exit_code == 65
    assert "NOT usable" in bad.stdout and "fail length" in bad.stdout
    assert bad.stderr.splitlines() == [
        f"lstm: {DATA / 'departures_monthly_panel.csv'}: 5 series shorter than 600 rows (lookback 600): "
        "permanent (498 rows), reslong (498 rows), resshort (498 rows), vislong (498 rows), visshort (498 rows)"]
    quiet = run(*args, "--lookback", "600", "-q")
    assert quiet.exit_code == 65 and quiet.stdout == "" and quiet.stderr == bad.stderr  # errors stay


def test_answer_on_stdout_evaluate_table(a10_model):
    table = run("evaluate", a10_model, A10)
    assert table.exit_code == 0, table.output
    assert "skill vs seasonal_naive" in table.stdout and "skill vs" not in table.stderr
    as_json = run("evaluate", a10_model, A10, "--format", "json")
    json.loads(as_json.stdout)  # only the data on stdout; the summary table for people on stderr
    assert "skill vs seasonal_naive" in as_json.stderr


@pytest.mark.skipif(LSTM is None, reason="the lstm entry point is not installed")
def test_answer_on_stdout_info_through_a_pipe(a10_model):
    proc = subprocess.run(f"{LSTM} info {a10_model} | grep lookback", shell=True, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "lookback" in proc.stdout, proc
    assert proc.stderr == ""


# ------------------------------------------------------------------------------------------
# progress: phases, a batch-level bar, a labelled ETA, the best epoch with its loss, the summary


def test_progress_plain_lines_show_the_phases_and_the_best_loss(tmp_path):
    result = run("train", A10, "--target", "cost_million_aud", "--horizon", "6", "--out", tmp_path / "m.lstm",
                 *TINY)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    phases = [line for line in lines if line.startswith(("lstm: reading", "lstm: scaling and cutting windows",
                                                          "lstm: loading the kernels"))]
    # piped, the phases before the data summary stay silent: a run refused on its data prints one line
    assert phases == ["lstm: loading the kernels (the first run on a machine compiles them; "
                      "`lstm warmup` does it ahead)"]
    assert lines[0].startswith("lstm: 1 series, 204 rows")
    assert lines.index(phases[-1]) < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2"))
    epoch = next(line for line in lines if line.startswith("epoch 2/2"))
    assert " best 2 (val " in epoch or " best 1 (val " in epoch
    assert "  epochs      ran all 2 epochs" in lines
    assert "stopped by all epochs" not in result.stderr
    assert run("train", A10, "--target", "cost_million_aud", "--horizon", "6", "--out", tmp_path / "q.lstm",
               *TINY, "-q").stderr == ""


def test_progress_summary_names_early_stopping_and_its_patience(tmp_path):
    result = run("train", A10, "--target", "cost_million_aud", "--horizon", "6", "--out", tmp_path / "m.lstm",
                 "--epochs", "60", "--hidden", "4", "--patience", "1", "--lr", "0.5", "--threads", "1")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stderr.splitlines() if line.startswith("  epochs"))
    assert row.endswith("early stopping (no improvement for 1 epochs)") and " of 60: " in row, row


def _rich_progress():
    import io

    from rich.console import Console as RichConsole

    from lstm_cli.console import Console, TrainProgress

    out = io.StringIO()
    console = Console()
    console.rich = True
    console._rich_console = RichConsole(file=out, force_terminal=True, width=200, color_system=None)
    return TrainProgress(console), out


def _report(epoch, epochs=10, best=1, best_loss=0.0931, seconds=None):
    from lstm_cli.train import EpochReport

    return EpochReport(epoch=epoch, epochs=epochs, train_loss=0.05, val_loss=0.1, best_epoch=best, best_loss=best_loss,
                       lr=0.01, samples_per_s=1000.0, seconds=seconds if seconds is not None else 2.0 * epoch)


def test_progress_rich_shows_phases_batches_best_loss_and_a_labelled_eta():
    progress, out = _rich_progress()  # (the bar is drawn by rich's refresh thread: read it once stopped)
    with progress:
        progress("phase", {"phase": "reading", "source": "big.csv"})
        progress("phase", {"phase": "compiling"})
        # inside the first (slow) epoch: a bar already, with the batch and an ETA from its pace
        progress("batch", {"epoch": 1, "epochs": 10, "batch": 50, "batches": 100, "seconds": 5.0})
    first = out.getvalue()
    assert re.search(r"lstm: reading big\.csv: \d+\.\d s\n", first)  # a finished phase stays, with its time
    assert "loading the kernels" in first
    assert "epoch 1/10 batch 50/100" in first
    assert "ETA (at most) 0:01:35" in first  # 9.5 epochs left at 10 s an epoch
    progress, out = _rich_progress()
    with progress:
        progress("epoch", _report(1, seconds=10.0))
        progress("epoch", _report(2, best=2, best_loss=0.0811, seconds=20.0))
    text = out.getvalue()
    assert "best 2 (val 0.0811)" in text
    assert "ETA (at most) 0:01:20" in text  # 8 epochs left at 10 s an epoch
    assert "-:--:--" not in first + text


def test_progress_rich_eta_of_a_resumed_run_counts_its_own_epochs():
    progress, out = _rich_progress()
    with progress:
        progress("resume", {"epoch": 6, "epochs": 10, "path": "x", "problem": None})
        progress("epoch", _report(7, seconds=3.0))  # one epoch in 3 s; 3 left
    assert "ETA (at most) 0:00:09" in out.getvalue()


def test_progress_batch_events_are_throttled_and_cost_nothing():
    """fit reports batches at most every BATCH_REPORT_SECONDS; an epoch takes as long with the
    reports as without (the fastest epoch of two alternating runs each; a loose bound, as other
    jobs share the machine; measured on 2 loaded cores: 212-379 ms an epoch, with and without
    within 5% of each other, either way round)."""
    import time

    import numpy as np

    from lstm_cli import train as train_module
    from lstm_cli.network import Architecture, Network
    from lstm_cli.train import TrainConfig, fit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16000, 12, 1)), rng.normal(size=(16000, 3))
    config = TrainConfig(epochs=4, batch_size=8, patience=100)  # epochs of ~0.25 s: reports inside them

    def epoch_seconds(on_batch):
        net = Network(Architecture(1, 8, 1, 3, "float32"), seed=0, threads=1)
        times = []
        fit(net, x, y, x[:0], y[:0], config, on_batch=on_batch, on_epoch=lambda r: times.append(time.perf_counter()))
        return float(np.min(np.diff(times))), net.params.copy()

    calls = []
    epoch_seconds(None)  # compile
    runs = {"without": [], "with": []}
    for _ in range(2):
        runs["without"].append(epoch_seconds(None))
        calls.clear()
        runs["with"].append(epoch_seconds(lambda *a: calls.append(a)))
    without, params_without = min(runs["without"], key=lambda r: r[0])
    with_reports, params_with = min(runs["with"], key=lambda r: r[0])
    np.testing.assert_array_equal(params_with, params_without)  # reports change nothing
    assert calls and all(0 < b < n for _, b, n, _ in calls)
    seconds = [s for *_, s in calls]
    assert all(b - a >= train_module.BATCH_REPORT_SECONDS * 0.99 for a, b in zip(seconds, seconds[1:], strict=False))
    print(f"\nepoch {without * 1e3:.1f} ms without batch reports, {with_reports * 1e3:.1f} ms with "
          f"({len(calls)} reports)")
    assert with_reports <= without * 1.5


# ------------------------------------------------------------------------------------------
# trained_rows: evaluate on rows the model was trained on says so (note, JSON, plot)


def _evaluate_json(model, data, *extra):
    result = run("evaluate", model, data, "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_trained_rows_evaluate_on_training_rows_notes_it(a10_model):
    doc, err = _evaluate_json(a10_model, a10_model.parent / "head.csv")  # the very rows it was trained on
    assert doc["header"]["in_sample_series"] == 1
    assert all(r["in_sample"] for r in doc["records"])
    assert ("lstm: note: the held-out rows of 1 of 1 series were seen in training: the scores are optimistic; "
            "evaluate on rows after 2007-06-01 (the end of the model's training data), or use --refit") in err
    # the three origins of --backtest 3 on the full file: the first one's rows were seen, the last two not
    doc, err = _evaluate_json(a10_model, A10, "--backtest", "3")
    assert doc["header"]["in_sample_series"] == 1 and "seen in training" in err
    assert {r["origin"]: r["in_sample"] for r in doc["records"]} == {1: True, 2: False, 3: False}
    assert "in_sample" not in doc["overall"]["lstm"]  # not averaged as a score
    assert {"mae", "rmse", "mape", "smape", "mase"} <= set(doc["overall"]["lstm"])


def test_trained_rows_not_noted_on_new_rows_or_with_refit(a10_model):
    doc, err = _evaluate_json(a10_model, A10)  # the last 6 months: after the training data
    assert doc["header"]["in_sample_series"] == 0 and "seen in training" not in err
    assert not any(r["in_sample"] for r in doc["records"])
    doc, err = _evaluate_json(a10_model, a10_model.parent / "head.csv", "--refit")
    assert doc["header"]["in_sample_series"] == 0 and "seen in training" not in err


def test_trained_rows_plot_labels_them_in_sample(a10_model, tmp_path):
    pytest.importorskip("matplotlib")
    from lstm_cli import plot
    from lstm_cli.evaluate import evaluate_from_csv

    ev = evaluate_from_csv(str(a10_model), str(A10), backtests=3, plot_panels=1)
    p = ev.panels[0]
    assert p.times[p.seen_until - 1] <= 1180656000 * 10**9 < p.times[p.seen_until]  # 2007-06-01: the last trained
    assert p.first_origin < p.seen_until < len(p.times)
    from matplotlib.figure import Figure

    labels = []
    real_legend = Figure.legend

    def spy(self, handles, names, **kw):
        labels.extend(names)
        return real_legend(self, handles, names, **kw)

    Figure.legend = spy
    try:
        plot.render(ev, "t")
    finally:
        Figure.legend = real_legend
    assert plot.IN_SAMPLE_LABEL in labels and "actual (held out)" in labels
    fresh = evaluate_from_csv(str(a10_model), str(A10), plot_panels=1)  # only unseen rows: no in-sample label
    assert fresh.panels[0].seen_until <= fresh.panels[0].first_origin


def test_id_col_hint_for_predict_says_retrain_with_it(tmp_path):
    """predict and evaluate have no --id-col (the model's contract decides): the hint says to retrain."""
    panel = DATA / "departures_monthly_panel.csv"
    one = [line.replace(",permanent,", ",") for line in panel.read_text().splitlines() if ",permanent," in line]
    single = tmp_path / "one.csv"
    single.write_text("date,departures_thousands\n" + "\n".join(one) + "\n")
    model = tmp_path / "one.lstm"
    assert run("train", single, "--target", "departures_thousands", "--horizon", "3", "--out", model, *TINY,
               "-q").exit_code == 0
    for command in ("predict", "evaluate"):
        result = run(command, model, panel)
        assert result.exit_code == 65, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert line.endswith("but the model was trained on one series: retrain it with --id-col series_id"), line


def test_log_forging_rich_output_shows_markup_and_control_characters_as_text():
    """On a terminal rich parsed names as markup ('[link=...]' made a hyperlink, '[red]' vanished)
    and printed control characters raw; tables and the phase spinner show them as text."""
    import io

    from rich.console import Console as RichConsole

    from lstm_cli.console import Console

    progress, out = _rich_progress()
    with progress:
        progress("phase", {"phase": "reading", "source": "[red]x[/red]\x1b[2J.csv"})
        progress("phase", {"phase": "compiling"})
    assert "[red]x[/red]\\x1b[2J.csv" in out.getvalue() and "\x1b[2J" not in out.getvalue()
    console = Console()
    console.rich = True
    buf = io.StringIO()
    console._rich_console = RichConsole(file=buf, force_terminal=True, width=200, color_system=None)
    console.table("lstm model [bold]m[/bold]", [("targets", "[link=http://x]sales[/link]\nfake line")])
    text = buf.getvalue()
    assert "[bold]m[/bold]" in text and "[link=http://x]sales[/link]\\nfake line" in text
