"""Issue 15, the red team's retest: what the tool loads another user could have written (a
checkpoint, a model file, ./.numba_config.yaml), an output over the config file, TOML values of
the wrong type, a user's lock-named file of digits, a failing stderr and click's usage errors.
Each failed before its fix.

Where the process matters (a stderr on /dev/full, numba's import) the tests run the installed
entry point; the rest use CliRunner. Shapes are tiny and one thread."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstm_cli import atomic
from lstm_cli.cli import cli

FAST = ["--target", "y", "--horizon", "3", "--epochs", "2", "--hidden", "4", "--threads", "1", "--lookback", "6"]
LONG = ["--epochs", "100000", "--patience", "100000"]  # a run that is killed, or stopped by --time-limit
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER_UID = 12345
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to create files owned by another user")
needs_posix = pytest.mark.skipif(not hasattr(os, "geteuid") or not os.path.exists("/dev/full"),
                                 reason="needs POSIX owners and /dev/full")


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def one_line(result, code: int) -> str:
    lines = result.stderr.splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("lstm: "), result.stderr
    return lines[0]


def entry_point(*args, cwd=None, stderr=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`lstm ARGS` as a process (python -m lstm_cli: the installed code), stdout captured."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LSTM_")}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "lstm_cli", *map(str, args)], cwd=cwd, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=stderr if stderr is not None else subprocess.PIPE)


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory) -> Path:
    """Data, model and a killed run's checkpoint for all tests (a folder of ours, 0700 parents)."""
    return tmp_path_factory.mktemp("trust")


@pytest.fixture(scope="module")
def data(shared_dir) -> Path:
    path = shared_dir / "data.csv"
    path.write_text("date,y\n" + "".join(f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{10 + (i % 12) + 0.1 * i:.3f}\n"
                                         for i in range(48)))
    return path


@pytest.fixture(scope="module")
def model(shared_dir, data) -> Path:
    out = shared_dir / "m.lstm"
    result = run("train", data, *FAST, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def stopped_checkpoint(shared_dir, data) -> Path:
    """The checkpoint a killed run left (kill -9 mid-training): bytes to plant beside other outputs."""
    out = shared_dir / "long.lstm"
    ckpt = Path(atomic.lock_path_for(out)[: -len(".lock")] + ".ckpt")
    args = ["train", data, *FAST, *LONG, "--out", out, "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "lstm_cli", *map(str, args)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert ckpt.exists()
    return ckpt


def plant_checkpoint(source: Path, out: Path) -> Path:
    ckpt = Path(atomic.lock_path_for(out)[: -len(".lock")] + ".ckpt")
    shutil.copyfile(source, ckpt)
    ckpt.chmod(0o644)
    return ckpt


def open_folder(parent: Path, name: str = "open", mode: int = 0o777) -> Path:
    """A folder every user can write into; not sticky (0777), anyone can swap what is inside."""
    folder = parent / name
    folder.mkdir()
    folder.chmod(mode)
    return folder


# ------------------------------------------------------------------------------------------
# trust: a checkpoint or a model file another user could have written is never loaded


@needs_root
@pytest.mark.parametrize("how", ["other_owner", "mode_666", "open_folder"])
def test_trust_resume_refuses_a_checkpoint_another_user_can_write(tmp_path, data, stopped_checkpoint, how):
    folder = open_folder(tmp_path) if how == "open_folder" else tmp_path
    out = folder / "m.lstm"
    ckpt = plant_checkpoint(stopped_checkpoint, out)
    if how == "other_owner":
        os.chown(ckpt, OTHER_UID, OTHER_UID)
    elif how == "mode_666":
        ckpt.chmod(0o666)
    before = ckpt.read_bytes()
    for resume in (["--resume"], []):  # without --resume it is not read for its epoch either
        result = run("train", data, *FAST, "--out", out, *resume)
        line = one_line(result, 73)
        assert str(ckpt) in line and "resuming" not in result.stderr, line
        assert {"other_owner": f"owned by another user (uid {OTHER_UID})", "mode_666": "writable by other users",
                "open_folder": "is inside"}[how] in line, line
        assert "remove it" in line and "--out in a folder only you can write" in line, line
        assert ckpt.read_bytes() == before and not out.exists()


def test_trust_resume_takes_our_own_checkpoint_in_a_sticky_folder(tmp_path, data, stopped_checkpoint):
    """The positive case: our file, 0644, in a folder everyone can write but sticky (like /tmp): resumed."""
    sticky = open_folder(tmp_path, "sticky", 0o1777)
    out = sticky / "resumed.lstm"
    plant_checkpoint(stopped_checkpoint, out)
    result = run("train", data, *FAST, *LONG, "--time-limit", "1s", "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming after epoch" in result.stderr and out.exists()


def _model_commands(model_path: Path, data: Path, tmp_path: Path) -> dict[str, list]:
    return {"predict": ["predict", model_path, data],
            "evaluate": ["evaluate", model_path, data],
            "info": ["info", model_path],
            "export": ["export", model_path, "--format", "json", "--out", tmp_path / "e.json"],
            "validate": ["validate", data, "--model", model_path],
            "warm-start": ["train", data, *FAST, "--warm-start", model_path, "--out", tmp_path / "w.lstm"]}


@needs_root
@pytest.mark.parametrize("how", ["other_owner", "mode_666", "mode_620", "open_folder"])
def test_trust_model_file_another_user_can_write_is_refused_by_every_command(tmp_path, model, data, how):
    folder = open_folder(tmp_path) if how == "open_folder" else tmp_path
    planted = folder / "m.lstm"
    shutil.copyfile(model, planted)
    planted.chmod({"mode_666": 0o666, "mode_620": 0o620}.get(how, 0o644))
    if how == "other_owner":
        os.chown(planted, OTHER_UID, OTHER_UID)
    for name, args in _model_commands(planted, data, tmp_path).items():
        result = run(*args)
        line = one_line(result, 65)
        assert f"model file {planted}" in line, (name, line)
        assert {"other_owner": f"owned by another user (uid {OTHER_UID})", "mode_666": "writable by other users",
                "mode_620": "writable by other users", "open_folder": "is inside"}[how] in line, (name, line)
        assert "cp " in line and "chmod go-w" in line, (name, line)
        assert result.stdout == "", name
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "w.lstm").exists()


def test_trust_own_model_in_a_sticky_or_private_folder_is_read(tmp_path, model, data):
    """The positive cases: the module's model in a private folder, a copy in a sticky one (like /tmp)."""
    sticky = open_folder(tmp_path, "sticky", 0o1777)
    copy = sticky / "m.lstm"
    shutil.copyfile(model, copy)
    for model_path in (model, copy):
        result = run("info", model_path)
        assert result.exit_code == 0, result.output
        assert run("predict", model_path, data).exit_code == 0


# ------------------------------------------------------------------------------------------
# output over the config: the config file is an input of every command


def test_output_over_config_is_refused_for_every_output(tmp_path, model, data):
    config = tmp_path / "job.png"  # any name: a --plot picture is chosen by suffix
    text = '[predict]\nformat = "csv"\n'
    config.write_text(text)
    config.chmod(0o600)
    commands = {"train --out": ["train", data, *FAST, "--out", config],
                "predict --out": ["predict", model, data, "--out", config],
                "export --out": ["export", model, "--format", "json", "--out", config],
                "evaluate --plot": ["evaluate", model, data, "--plot", config]}
    for name, args in commands.items():
        for how in ("flag", "env", "other spelling"):
            if how == "flag":
                result = run("--config", config, *args)
            elif how == "env":
                result = run(*args, env={"LSTM_CONFIG": str(config)})
            else:  # the same file through another path
                result = run("--config", tmp_path / "." / "job.png", *args)
            line = one_line(result, 73)
            assert "same file as the input" in line and "--config" in line, (name, how, line)
            assert config.read_text() == text, (name, how)
    other = tmp_path / "forecast.csv"  # another output beside the config is fine
    assert run("--config", config, "predict", model, data, "--out", other).exit_code == 0 and other.exists()
    assert atomic._COMMAND_INPUTS.get() == ()  # lifted when the command ends


# ------------------------------------------------------------------------------------------
# config types: a TOML value of the wrong type is refused, never coerced


@pytest.mark.parametrize("line, found, wanted", [
    ("horizon = true", "a boolean", "an integer"),
    ("lr = true", "a boolean", "a number"),
    ("seed = 2.9", "a float", "an integer"),
    ("epochs = 3.0", "a float", "an integer"),
    ('horizon = "12"', "a string", "an integer"),
    ("resume = 1", "an integer", "a boolean"),
    ('quiet = "yes"', "a string", "a boolean"),
    ("cell = 1", "an integer", "a string"),
    ("target = 5", "an integer", "a string or an array of strings"),
    ('target = ["y", 2]', "an array holding an integer", "a string or an array of strings"),
    ("freq = 2020-01-01", "a date or time", "a string"),
    ("quantiles = [0.1, 0.9]", "an array", "a string"),
    ("out = {a = 1}", "a table", "a string"),
])
def test_config_types_wrong_toml_type_is_exit_2_naming_file_section_key_and_types(tmp_path, data, line, found,
                                                                                   wanted):
    config = tmp_path / "job.toml"
    config.write_text(f"[train]\n{line}\n")
    for args in (["config", "show"], ["train", data, "--target", "y", "--horizon", "3", "--out", tmp_path / "m.lstm"]):
        message = one_line(run("--config", config, *args), 2)
        key = line.split(" = ")[0]
        assert f"config file {config}: [train] {key}" in message, message
        assert f"is {found}" in message and f"{key} takes {wanted}" in message, message
    assert not (tmp_path / "m.lstm").exists()


def test_config_types_right_toml_types_are_taken(tmp_path):
    config = tmp_path / "job.toml"
    config.write_text('[train]\nlr = 1\ndropout = 0.5\nepochs = 3\nresume = true\ntarget = ["a", "b"]\n'
                      'features = "c"\ntime-limit = "90s"\n[predict]\nformat = "json"\n')
    result = run("--config", config, "config", "show", "--format", "json")
    assert result.exit_code == 0, result.output
    assert '"value": 1,' in result.stdout and '"value": true,' in result.stdout


# ------------------------------------------------------------------------------------------
# numba config: a malformed ./.numba_config.yaml is exit 2, not numba's traceback


@needs_posix
@pytest.mark.parametrize("content, phrase", [
    (b"cache_dir: [1,2\n", "is not valid YAML"),
    (b"\xff\xfe", "text (byte 0)"),
    (b"- a\n- b\n", "is not a mapping"),
    (b"1: x\n", "is not a mapping"),
    (b"just words\n", "is not a mapping"),
])
def test_numba_config_malformed_yaml_is_exit_2(tmp_path, content, phrase):
    (tmp_path / ".numba_config.yaml").write_bytes(content)
    result = entry_point("version", cwd=tmp_path)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("lstm: "), lines
    assert str(tmp_path / ".numba_config.yaml") in lines[0] and phrase in lines[0], lines[0]
    assert "remove it" in lines[0] and result.stdout == b""


@needs_posix
def test_numba_config_naming_a_cache_dir_others_can_write_is_exit_2(tmp_path):
    cache = open_folder(tmp_path, "cache")
    (tmp_path / ".numba_config.yaml").write_text(f"cache_dir: {cache}\n")
    result = entry_point("version", cwd=tmp_path)
    assert result.returncode == 2 and b"names the cache_dir" in result.stderr, result.stderr


@needs_posix
def test_numba_config_well_formed_is_left_to_numba(tmp_path):
    (tmp_path / ".numba_config.yaml").write_text("# comments only\n")
    assert entry_point("version", cwd=tmp_path).returncode == 0


# ------------------------------------------------------------------------------------------
# lock digits: only an empty file or one that starts with the marker is lstm's lock


@pytest.mark.parametrize("content", [b"123\n", b"4242", b"0", b"\n", b"lstm lo"])
def test_lock_digits_user_file_is_never_taken_for_a_lock(tmp_path, model, content):
    out = tmp_path / "z.json"
    lock = Path(atomic.lock_path_for(out))
    lock.write_bytes(content)
    line = one_line(run("export", model, "--format", "json", "--out", out), 73)
    assert str(lock) in line and "was not written by lstm" in line, line
    assert lock.read_bytes() == content and not out.exists()


@pytest.mark.parametrize("content", [b"", atomic.LOCK_MARKER, atomic.LOCK_MARKER + b"999999\n"])
def test_lock_digits_empty_or_marked_lock_is_taken(tmp_path, model, content):
    out = tmp_path / "z.json"
    lock = Path(atomic.lock_path_for(out))
    lock.write_bytes(content)
    assert run("export", model, "--format", "json", "--out", out).exit_code == 0 and out.exists()
    assert lock.read_bytes() == atomic.LOCK_MARKER


# ------------------------------------------------------------------------------------------
# failing stderr: a message that cannot be written never stops the work or sets the exit code


@needs_posix
def test_failing_stderr_every_command_does_its_work_and_keeps_its_exit_code(tmp_path, model, data):
    outs = {name: tmp_path / name for name in ("t.lstm", "p5.csv", "e.json")}
    commands = [  # (args, expected exit code, the output file or None, stdout must hold data)
        (["train", data, *FAST, "--out", outs["t.lstm"]], 0, outs["t.lstm"], False),
        (["predict", model, data, "--horizon", "5", "--out", outs["p5.csv"]], 0, outs["p5.csv"], False),
        (["predict", model, data, "--horizon", "5"], 0, None, True),
        (["evaluate", model, data, "--format", "json"], 0, None, True),
        (["evaluate", model, data], 0, None, True),
        (["export", model, "--format", "json", "--out", outs["e.json"]], 0, outs["e.json"], False),
        (["validate", data, "--target", "y"], 0, None, True),
        (["info", model], 0, None, True),
        (["version"], 0, None, True),
        (["warmup"], 0, None, False),
        (["config", "show"], 0, None, True),
        (["predict", tmp_path / "missing.lstm", data], 66, None, False),  # an error keeps its own code
        (["predict", model, data, "--horizon", "0"], 2, None, False),  # click's usage error too
        (["validate", data, "--target", "nope"], 65, None, True),
    ]
    with open("/dev/full", "w") as full:
        for args, code, out, prints in commands:
            result = entry_point(*args, stderr=full)
            assert result.returncode == code, (args, result.returncode)
            if out is not None:
                assert out.exists() and out.stat().st_size > 0, args
            assert bool(result.stdout) == prints, (args, result.stdout[:200])
    assert entry_point("predict", model, data, "--horizon", "5").stdout.decode() == \
        outs["p5.csv"].read_text()  # the forecast written with stderr full is the forecast


@needs_posix
def test_failing_stderr_a_failing_stdout_is_still_74(model):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "lstm_cli", "info", str(model)], stdout=full,
                                stderr=subprocess.PIPE, timeout=120)
    assert result.returncode == 74 and b"I/O error" in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------
# click usage errors: one line `lstm: <command>: <message>; see lstm <command> --help`


@pytest.mark.parametrize("args, command, phrase", [
    (["train", "data.csv"], "train", "Missing option '--target'"),
    (["predict", "m", "d", "-h"], "predict", "No such option '-h'"),
    (["predict", "m", "d", "--max-age", "2"], "predict", "has no unit"),
    (["predict", "m", "d", "--now", "x"], "predict", "is not an ISO 8601 time"),
    (["predict", "m", "d", "--horizon", "0"], "predict", "--horizon"),
    (["predict", "m"], "predict", "Missing argument 'DATA'"),
    (["export", "m"], "export", "Missing option '--format'. Choose from: onnx, json, npz;"),
    (["evaluate", "m", "d", "--scheduler", "x"], "evaluate", "--scheduler needs --engine dask"),
    (["config", "show", "--format", "x"], "config show", "'x' is not one of"),
    (["config", "nope"], "config", "No such command 'nope'"),
    (["nope"], "", "No such command 'nope'"),
    (["--bogus"], "", "No such option '--bogus'"),
    (["--config"], "", "requires an argument"),
])
def test_click_usage_errors_are_one_line(model, data, args, command, phrase):
    line = one_line(run(*[{"m": model, "d": data}.get(a, a) for a in args]), 2)
    prefix = f"lstm: {command}: " if command else "lstm: "
    assert line.startswith(prefix) and phrase in line, line
    assert line.endswith(f"; see {' '.join(['lstm', *command.split()])} --help"), line
    assert "Usage:" not in line and "Error:" not in line


def test_click_usage_errors_from_env_and_config_say_where_the_value_came_from(tmp_path):
    line = one_line(run("predict", "m", "d", env={"LSTM_QUIET": "banana"}), 2)
    assert line.startswith("lstm: predict: ") and "(from LSTM_QUIET)" in line, line
    config = tmp_path / "job.toml"
    config.write_text('[predict]\nmax-age = "2"\n')
    line = one_line(run("--config", config, "predict", "m", "d"), 2)
    assert "has no unit" in line and f"(from the config file {config})" in line, line


@needs_posix
def test_click_usage_errors_through_the_entry_point():
    result = entry_point("train", "data.csv")
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == ["lstm: train: Missing option '--target'; see lstm train --help"]


@pytest.mark.parametrize("args", [[], ["config"]])
def test_click_usage_bare_group_still_prints_its_help(args):
    result = run(*args)
    assert result.exit_code == 2  # as before: click's help of a group without a command
    assert result.output.startswith("Usage: ") and "Commands:" in result.output


def test_lock_digits_module_accepts_only_empty_or_marked_content():
    assert atomic.is_lock_content(b"") and atomic.is_lock_content(atomic.LOCK_MARKER + b"12\n")
    assert not any(atomic.is_lock_content(c) for c in (b"123\n", b"0", b"\n", b"lstm lock"))


# ------------------------------------------------------------------------------------------
# issue 15, second round: numba settings that print on stdout or break the kernels, matplotlib's
# ./matplotlibrc, symbolic links of other users and '..' through open folders


@pytest.mark.parametrize("name, value", [("NUMBA_DEBUG_CACHE", "1"), ("NUMBA_DEBUG", "1"), ("NUMBA_DUMP_LLVM", "1"),
                                         ("NUMBA_DEBUG_PRINT_AFTER", "all"), ("NUMBA_TRACE", "1"),
                                         ("NUMBA_PARALLEL_DIAGNOSTICS", "4"), ("NUMBA_DUMP_HTML", "x.html")])
def test_numba_debug_settings_in_the_environment_are_refused(model, data, name, value):
    result = run("predict", model, data, env={name: value})
    line = one_line(result, 2)
    assert f"{name}={value}" in line and f"unset {name}" in line, line
    assert result.stdout == ""


@needs_posix
def test_numba_debug_settings_never_reach_stdout_of_the_entry_point(tmp_path, model, data):
    result = entry_point("predict", model, data, env={"NUMBA_DEBUG_CACHE": "1"})
    assert result.returncode == 2 and result.stdout == b"", result.stderr
    (tmp_path / ".numba_config.yaml").write_text("DEBUG: 1\n")
    result = entry_point("predict", model, data, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == b"", result.stderr
    assert b"sets DEBUG: 1" in result.stderr and b"remove it" in result.stderr


@pytest.mark.parametrize("name, value", [("NUMBA_DISABLE_JIT", "1"), ("NUMBA_NUM_THREADS", "0"),
                                         ("NUMBA_NUM_THREADS", "abc"), ("NUMBA_NUM_THREADS", "-2"),
                                         ("NUMBA_OPT", "fast")])
def test_numba_settings_that_break_the_kernels_are_exit_2(tmp_path, model, data, name, value):
    for args in (["predict", model, data], ["train", data, *FAST, "--out", tmp_path / "t.lstm"]):
        result = run(*args, env={name: value})
        line = one_line(result, 2)
        assert f"{name}={value}" in line, line
    assert not (tmp_path / "t.lstm").exists()


@needs_posix
@pytest.mark.parametrize("line", ["DISABLE_JIT: 1", "disable_jit: true", "num_threads: 0", "dump_ir: 1"])
def test_numba_settings_that_break_the_kernels_in_the_config_file_are_exit_2(tmp_path, model, data, line):
    (tmp_path / ".numba_config.yaml").write_text(line + "\n")
    result = entry_point("predict", model, data, cwd=tmp_path)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2 and result.stdout == b"", lines
    assert len(lines) == 1 and str(tmp_path / ".numba_config.yaml") in lines[0], lines
    assert f"sets {line.split(':')[0]}:" in lines[0], lines


def test_numba_settings_that_are_off_or_valid_are_taken(model, data):
    env = {"NUMBA_DEBUG": "0", "NUMBA_DUMP_IR": "", "NUMBA_DISABLE_JIT": "0", "NUMBA_NUM_THREADS": "2",
           "NUMBA_OPT": "3", "NUMBA_DEBUGINFO": "0"}
    result = run("predict", model, data, env=env)
    assert result.exit_code == 0, result.output


def _plot_in(folder: Path, model: Path, data: Path):
    pytest.importorskip("matplotlib")
    return entry_point("evaluate", model, data, "--plot", "p.png", "-q", cwd=folder, timeout=120)


@needs_posix
def test_matplotlibrc_fifo_in_the_working_directory_is_never_opened(tmp_path, model, data):
    os.mkfifo(tmp_path / "matplotlibrc")
    result = _plot_in(tmp_path, model, data)  # was a hang: the import blocked on the FIFO
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert (tmp_path / "p.png").stat().st_size > 0  # the plot path is still the working directory's


@needs_posix
def test_matplotlibrc_dev_zero_symlink_in_the_working_directory_is_never_read(tmp_path, model, data):
    import resource

    pytest.importorskip("matplotlib")
    (tmp_path / "matplotlibrc").symlink_to("/dev/zero")
    limit = 4 << 30  # was a read until out of memory: a regression must not take the host's memory with it

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTM_")}
    result = subprocess.run([sys.executable, "-m", "lstm_cli", "evaluate", str(model), str(data), "--plot", "p.png",
                             "-q"], cwd=tmp_path, env=env, timeout=120, preexec_fn=cap_memory,
                            capture_output=True)
    assert result.returncode == 0 and result.stderr == b"", result.stderr


@needs_root
def test_matplotlibrc_of_another_user_is_not_parsed(tmp_path, model, data):
    rc = tmp_path / "matplotlibrc"
    rc.write_text("bogus.key: 1\nlines.linewidth: 9\n")
    os.chown(rc, OTHER_UID, OTHER_UID)
    result = _plot_in(tmp_path, model, data)
    assert result.returncode == 0 and result.stderr == b"", result.stderr  # was 'Bad key bogus.key' even with -q


@needs_root
def test_trust_symlink_owned_by_another_user_is_refused(tmp_path, model, data):
    sticky = open_folder(tmp_path, "sticky", 0o1777)
    link = sticky / "m.lstm"
    link.symlink_to(model)
    os.lchown(link, OTHER_UID, OTHER_UID)
    line = one_line(run("predict", link, data), 65)
    assert f"is a symbolic link owned by another user (uid {OTHER_UID})" in line, line
    config = tmp_path / "job.toml"
    config.write_text("[predict]\nquiet = true\n")
    config_link = sticky / "job.toml"
    config_link.symlink_to(config)
    os.lchown(config_link, OTHER_UID, OTHER_UID)
    line = one_line(run("--config", config_link, "predict", model, data), 2)
    assert "symbolic link owned by another user" in line, line
    hop = sticky / "hop"  # a link to a folder on the way, not the last component
    hop.symlink_to(model.parent)
    os.lchown(hop, OTHER_UID, OTHER_UID)
    line = one_line(run("predict", hop / model.name, data), 65)
    assert f"through the symbolic link {hop}" in line, line


@needs_posix
def test_trust_dotdot_through_an_open_folder_is_refused(tmp_path, model, data):
    open_dir = open_folder(tmp_path)
    (open_dir / "sub").mkdir()
    copy = tmp_path / "m.lstm"
    shutil.copyfile(model, copy)
    typed = f"{open_dir}/sub/../../m.lstm"  # the resolved path does not go through open/
    line = one_line(run("predict", typed, data), 65)
    assert f"is inside {open_dir}, which is writable by other users" in line, line


def test_trust_own_symlink_and_dotdot_through_private_folders_are_read(tmp_path, model, data):
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.lstm"
    link.symlink_to(model)
    for path in (link, f"{tmp_path}/sub/../link.lstm"):
        result = run("predict", path, data)
        assert result.exit_code == 0, result.output
