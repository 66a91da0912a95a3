"""Issue 15, the process around a command: the JIT cache another user could plant code in, closed
and full standard streams, the C locale, `-h`, out of memory, the config file's source, unknown
LSTM_ variables and messages a crafted path could split. Each failed before its fix.

Where the process matters (descriptors, locale, another user) the tests run the installed entry
point; the rest use CliRunner. Shapes are tiny and one thread."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from lstm_cli import runtime
from lstm_cli.cli import cli
from lstm_cli.errors import one_line, shown

FAST = ["--epochs", "2", "--hidden", "4", "--threads", "1", "--lookback", "6", "--horizon", "3", "-q"]
LSTM = shutil.which("lstm", path=os.path.dirname(sys.executable)) or shutil.which("lstm")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER_UID = 12345  # the attacker (or the victim, when root plays the attacker)
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to create files owned by another user")
needs_entry_point = pytest.mark.skipif(LSTM is None or not os.path.exists("/bin/sh"),
                                       reason="needs the installed lstm entry point and /bin/sh")


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def one_error_line(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTM_")}
    env.update(extra)
    return env


def sh(command: str, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=timeout,
                          env=env or clean_env())


@pytest.fixture(scope="module")
def shared_dir():
    """A folder every user can read (tmp_path is root's alone): data and model for all tests."""
    path = Path(tempfile.mkdtemp(prefix="lstm-hardening-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def panel(shared_dir) -> Path:
    """Two series whose ids are not ASCII."""
    rows = [f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{sid},{10.0 + (i % 12) + k + 0.1 * i!r}"
            for k, sid in enumerate(["Zürich", "東京"]) for i in range(30)]
    path = shared_dir / "panel.csv"
    path.write_text("date,city,y\n" + "\n".join(rows) + "\n", encoding="utf-8")
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def model(shared_dir, panel) -> Path:
    out = shared_dir / "panel.lstm"
    result = run("train", panel, "--target", "y", "--id-col", "city", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    out.chmod(0o644)
    return out


# ------------------------------------------------------------------------------------------
# jit_cache


@pytest.fixture
def fresh_cache_state(monkeypatch, tmp_path):
    """prepare_jit_cache on a clean slate: no NUMBA_CACHE_DIR, no HOME, an install it cannot write
    and a temp directory of our own (sticky and world-writable, like /tmp)."""
    monkeypatch.setattr(runtime, "JIT_CACHE", {"dir": None, "source": None, "disabled": None})
    monkeypatch.setattr(runtime, "_run_cache_dir", None)
    for var in ("NUMBA_CACHE_DIR", "HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    package_dir = runtime._package_dir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.path.abspath(p) == package_dir
                        else real_access(p, mode))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def plant(path: Path, uid: int | None = None, mode: int = 0o777) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "forward_infer-1.py311.nbi").write_bytes(b"planted")
    if uid is not None:
        os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def assert_private_cache(chosen: str, refused: Path) -> None:
    assert not chosen.startswith(str(refused))
    st = os.lstat(chosen)
    assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700


@needs_root
def test_jit_cache_refuses_world_writable_dir_of_another_user_in_temp(fresh_cache_state):
    """The temp fallback was used though another user had created it first (0777)."""
    planted = plant(fresh_cache_state / f"lstm-cli-numba-{os.getuid()}", uid=OTHER_UID)
    notes = runtime.prepare_jit_cache()
    assert_private_cache(os.environ["NUMBA_CACHE_DIR"], planted)
    assert runtime.JIT_CACHE["disabled"] and len(notes) == 1
    assert "JIT cache disabled" in notes[0] and "owned by another user (uid 12345)" in notes[0]


def test_jit_cache_refuses_world_writable_dir_of_ours(fresh_cache_state):
    planted = plant(fresh_cache_state / f"lstm-cli-numba-{os.getuid()}")
    notes = runtime.prepare_jit_cache()
    assert_private_cache(os.environ["NUMBA_CACHE_DIR"], planted)
    assert "writable by other users (mode 777)" in notes[0]


def test_jit_cache_refuses_a_symlink_and_a_file(fresh_cache_state, tmp_path):
    target = plant(tmp_path / "elsewhere", mode=0o700)
    os.symlink(target, fresh_cache_state / f"lstm-cli-numba-{os.getuid()}")
    notes = runtime.prepare_jit_cache()
    assert_private_cache(os.environ["NUMBA_CACHE_DIR"], target)
    assert "is a symbolic link" in notes[0]
    afile = tmp_path / "afile"
    afile.write_text("x")
    os.environ["NUMBA_CACHE_DIR"] = str(afile)
    runtime._run_cache_dir = None
    notes = runtime.prepare_jit_cache()
    assert "NUMBA_CACHE_DIR" in notes[0] and "is not a directory" in notes[0]
    assert os.environ["NUMBA_CACHE_DIR"] != str(afile)


@needs_root
@pytest.mark.parametrize("owner, mode, phrase", [(OTHER_UID, 0o700, "owned by another user"),
                                                 (None, 0o777, "writable by other users"),
                                                 (None, 0o770, "writable by other users")])
def test_jit_cache_refuses_an_unsafe_numba_cache_dir(fresh_cache_state, tmp_path, owner, mode, phrase):
    given = plant(tmp_path / "given", uid=owner, mode=mode)
    os.environ["NUMBA_CACHE_DIR"] = str(given)
    notes = runtime.prepare_jit_cache()
    assert notes[0].startswith(f"NUMBA_CACHE_DIR {given} ") and phrase in notes[0]
    assert_private_cache(os.environ["NUMBA_CACHE_DIR"], given)


def test_jit_cache_refuses_a_dir_inside_a_world_writable_parent(fresh_cache_state, tmp_path):
    """Another user can rename a folder inside a world-writable, non-sticky parent and put theirs."""
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    given = plant(open_parent / "cache", mode=0o700)
    open_parent.chmod(0o777)
    os.environ["NUMBA_CACHE_DIR"] = str(given)
    notes = runtime.prepare_jit_cache()
    assert f"is inside {open_parent}, which is writable by other users" in notes[0]
    assert_private_cache(os.environ["NUMBA_CACHE_DIR"], given)


def test_jit_cache_creates_missing_components_private_whatever_the_umask(fresh_cache_state, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(mode=0o755)
    old = os.umask(0)
    try:
        assert runtime.prepare_jit_cache() == []
    finally:
        os.umask(old)
    chosen = Path(os.environ["NUMBA_CACHE_DIR"])
    assert chosen == tmp_path / "home" / ".cache" / "lstm-cli" / "numba"
    for d in (chosen, chosen.parent, chosen.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert runtime.JIT_CACHE["source"] == "user" and not runtime.JIT_CACHE["disabled"]


def test_jit_cache_refuses_an_open_dir_with_files_others_can_write(fresh_cache_state, tmp_path):
    """A 0755 cache of ours is fine only if what is inside is ours alone: numba loads index files
    another user could overwrite in place, or that a permissive umask would leave writable."""
    given = tmp_path / "given"
    (given / "lstm_cli_abc").mkdir(parents=True)
    given.chmod(0o755)
    (given / "lstm_cli_abc").chmod(0o755)
    index = given / "lstm_cli_abc" / "forward_infer-1.py311.nbi"
    index.write_bytes(b"x")
    index.chmod(0o666)
    os.environ["NUMBA_CACHE_DIR"] = str(given)
    notes = runtime.prepare_jit_cache()
    assert f"holds {index}, which is writable by other users (mode 666)" in notes[0]
    index.chmod(0o644)
    os.environ["NUMBA_CACHE_DIR"] = str(given)
    runtime._run_cache_dir = None
    old = os.umask(0o002)
    try:
        notes = runtime.prepare_jit_cache()
    finally:
        os.umask(old)
    assert "the umask 002 would let them write" in notes[0]
    os.environ["NUMBA_CACHE_DIR"] = str(given)
    runtime._run_cache_dir = None
    assert runtime.prepare_jit_cache() == [] and os.environ["NUMBA_CACHE_DIR"] == str(given)


def test_jit_cache_keeps_a_safe_numba_cache_dir(fresh_cache_state, tmp_path):
    given = tmp_path / "mine"
    given.mkdir(mode=0o755)
    os.environ["NUMBA_CACHE_DIR"] = str(given)
    assert runtime.prepare_jit_cache() == []
    assert os.environ["NUMBA_CACHE_DIR"] == str(given) and runtime.JIT_CACHE["source"] == "NUMBA_CACHE_DIR"


@needs_root
def test_jit_cache_refuses_a_foreign_numba_config_in_the_working_directory(tmp_path, monkeypatch):
    """numba reads ./.numba_config.yaml (its cache dir, locator classes it imports) from the cwd."""
    (tmp_path / ".numba_config.yaml").write_text("cache_dir: /tmp/evil\n")
    os.chown(tmp_path / ".numba_config.yaml", OTHER_UID, OTHER_UID)
    monkeypatch.chdir(tmp_path)
    result = run("config", "show")
    assert result.exit_code == 2
    assert "numba would load, is owned by another user (uid 12345)" in one_error_line(result)


def test_jit_cache_version_shows_a_disabled_cache():
    from lstm_cli.diagnostics import jit_cache_summary

    line = jit_cache_summary({"dir": "/tmp/x/lstm_cli_1", "disabled": "/tmp/y is a symbolic link", "warm": False,
                              "writable": True})
    assert line.startswith("disabled (/tmp/y is a symbolic link)")


def _planted_kernel_indexes(cache_root: Path, marker: Path) -> None:
    """An attacker's cache: for every kernel, an index whose pickle creates `marker` when loaded."""
    from numba.core.caching import UserProvidedCacheLocator

    from lstm_cli import kernels

    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    sub = cache_root / UserProvidedCacheLocator.get_suitable_cache_subpath(kernels.__file__)
    sub.mkdir(parents=True)
    for value in vars(kernels).values():
        cache = getattr(value, "_cache", None)
        if cache is not None and hasattr(cache, "_cache_file"):
            (sub / cache._cache_file._index_name).write_bytes(pickle.dumps(Exploit()))
    for d in (sub, cache_root):
        os.chown(d, OTHER_UID + 1, OTHER_UID + 1)
        d.chmod(0o777)


@needs_root
@needs_entry_point
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv to run as another user")
def test_jit_cache_planted_index_of_another_user_is_never_loaded(shared_dir, panel, model):
    """The exploit itself: user 12346 creates the victim's temp cache folder (0777) with pickled
    indexes that run code; the victim (12345, no HOME, an install it cannot write) forecasts. Before
    the fix the victim used that folder and the pickle ran as the victim."""
    tmp = shared_dir / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    planted = tmp / f"lstm-cli-numba-{OTHER_UID}"
    planted.mkdir()
    marker = planted / "pwned"
    _planted_kernel_indexes(planted, marker)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(tmp)}
    victim = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
    proc = subprocess.run([*victim, LSTM, "predict", str(model), str(panel)], capture_output=True, env=env,
                          timeout=600, cwd=str(tmp))
    assert not marker.exists(), "the planted pickle ran as the victim"
    assert proc.returncode == 0, proc.stderr
    notes = proc.stderr.decode().splitlines()
    assert len(notes) == 1 and notes[0].startswith("lstm: note: JIT cache disabled: ") and str(planted) in notes[0]
    assert proc.stdout.decode().startswith("date,city,y")
    version = subprocess.run([*victim, LSTM, "version", "--format", "json"], capture_output=True, env=env,
                             timeout=300, cwd=str(tmp))
    cache = json.loads(version.stdout)["jit_cache"]
    assert cache["disabled"] and not cache["dir"].startswith(str(planted))
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# streams


@needs_entry_point
def test_streams_closed_stderr_keeps_messages_out_of_stdout(shared_dir, panel, model):
    """With `2>&-`, Python's print(file=None) sent the progress of train and the notes to stdout."""
    q = shlex.quote
    out = shared_dir / "closed-stderr.lstm"
    train = sh(f"{q(LSTM)} train {q(str(panel))} --target y --id-col city --epochs 2 --hidden 4 --threads 1 "
               f"--lookback 6 --horizon 3 --out {q(str(out))} 2>&-")
    assert train.returncode == 0 and train.stdout == b""
    plain = sh(f"{q(LSTM)} predict {q(str(model))} {q(str(panel))}")
    closed = sh(f"{q(LSTM)} predict {q(str(model))} {q(str(panel))} 2>&-")
    assert closed.returncode == 0 and closed.stdout == plain.stdout
    failed = sh(f"{q(LSTM)} predict {q(str(shared_dir / 'missing.lstm'))} {q(str(panel))} 2>&-")
    assert failed.returncode == 66 and failed.stdout == b""


@needs_entry_point
def test_streams_closed_stdin_and_stdout(shared_dir, panel, model):
    q = shlex.quote
    no_stdin = sh(f"{q(LSTM)} predict {q(str(model))} - <&-")
    assert no_stdin.returncode == 2
    assert no_stdin.stderr.decode().splitlines() == [
        "lstm: '-' reads the CSV from stdin, but there is no stdin; name a file instead"]
    out = shared_dir / "closed-stdout.lstm"  # the files train opens must not become its stdout
    train = sh(f"{q(LSTM)} train {q(str(panel))} --target y --id-col city --epochs 2 --hidden 4 --threads 1 "
               f"--lookback 6 --horizon 3 --out {q(str(out))} -q >&-")
    assert train.returncode == 0, train.stderr
    assert run("info", out).exit_code == 0
    for command in ("--help", "version", *(f"export {q(str(out))} --format {fmt} --out -" for fmt in ("npz", "json"))):
        closed = sh(f"{q(LSTM)} {command} >&-")
        assert closed.returncode == 74
        assert closed.stderr.decode().splitlines() == ["lstm: stdout is closed; redirect it or give --out FILE"]


@needs_entry_point
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("command", ["--help", "version", "train --help", "config show",
                                     "evaluate {model} {data} --format csv -q"])
def test_streams_full_device_is_one_line_and_exit_74(model, panel, command):
    """`--help` and `version` on /dev/full gave a traceback; evaluate's csv, flushed at exit only,
    printed 'Exception ignored'."""
    args = command.format(model=shlex.quote(str(model)), data=shlex.quote(str(panel)))
    proc = sh(f"{shlex.quote(LSTM)} {args} >/dev/full")
    assert proc.returncode == 74, proc.stderr
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm: I/O error: No space left on device"), lines


# ------------------------------------------------------------------------------------------
# locale

C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def c_locale_env() -> dict:
    env = clean_env(**C_LOCALE)
    env.pop("PYTHONIOENCODING", None)
    return env


@needs_entry_point
def test_locale_c_gives_the_same_utf8_bytes(shared_dir, panel, model):
    """Non-ASCII ids with stdout in an ASCII locale: UnicodeEncodeError, exit 70."""
    utf8 = subprocess.run([LSTM, "predict", str(model), str(panel)], capture_output=True,
                          env=clean_env(LC_ALL="C.UTF-8"), timeout=300)
    assert utf8.returncode == 0 and "Zürich".encode() in utf8.stdout and "東京".encode() in utf8.stdout
    ascii_run = subprocess.run([LSTM, "predict", str(model), str(panel)], capture_output=True,
                               env=c_locale_env(), timeout=300)
    assert ascii_run.returncode == 0, ascii_run.stderr
    assert ascii_run.stdout == utf8.stdout
    out = shared_dir / "c-locale.csv"
    to_file = subprocess.run([LSTM, "predict", str(model), str(panel), "--out", str(out)], capture_output=True,
                             env=c_locale_env(), timeout=300)
    assert to_file.returncode == 0 and out.read_bytes() == utf8.stdout
    as_json = subprocess.run([LSTM, "predict", str(model), str(panel), "--format", "json"], capture_output=True,
                             env=c_locale_env(), timeout=300)
    assert as_json.returncode == 0
    assert {r["city"] for r in json.loads(as_json.stdout)["forecast"]} == {"Zürich", "東京"}


@needs_entry_point
def test_locale_c_messages_with_non_ascii_do_not_crash(shared_dir, model):
    missing = str(shared_dir / "Zürich-東京.csv")
    proc = subprocess.run([LSTM, "predict", str(model), missing], capture_output=True, env=c_locale_env(),
                          timeout=300)
    assert proc.returncode == 66, proc.stderr
    lines = proc.stderr.decode("ascii").splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm: ") and "Traceback" not in lines[0]


# ------------------------------------------------------------------------------------------
# help_alias


@pytest.mark.parametrize("args", [["train", "-h", "12"], ["predict", "-h"], ["-h"], ["evaluate", "m", "d", "-h", "3"]])
def test_help_alias_h_is_not_help(args):
    """`-h 12` (meaning the horizon) printed help and exited 0: a cron `&&` went on with an old model."""
    result = run(*args)
    assert result.exit_code == 2 and "No such option" in result.stderr and result.stdout == ""


def test_help_alias_long_help_still_works():
    result = run("train", "--help")
    assert result.exit_code == 0 and "--horizon" in result.stdout and "-h," not in result.stdout


# ------------------------------------------------------------------------------------------
# memory_error_top


def test_memory_error_top_in_a_command_is_exit_74(monkeypatch, model, panel):
    from lstm_cli import pipeline

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 8.00 GiB for an array with shape (1073741824,)")

    monkeypatch.setattr(pipeline, "predict_from_csv", no_memory)
    result = run("predict", model, panel)
    assert result.exit_code == 74
    line = one_error_line(result)
    assert line.startswith("lstm: out of memory (Unable to allocate 8.00 GiB") and "bug" not in line


def test_memory_error_top_before_the_command_is_exit_74(monkeypatch, tmp_path):
    from lstm_cli import config

    def no_memory(path):
        raise MemoryError()

    monkeypatch.setattr(config, "read_file", no_memory)
    result = run("--config", tmp_path / "job.toml", "config", "show")
    assert result.exit_code == 74 and one_error_line(result).startswith("lstm: out of memory; free memory")


def test_memory_error_top_outside_click_is_exit_74():
    """What escapes click (while it parses options or prints help) ends in runtime.run."""
    code = ("from lstm_cli import runtime\n"
            "def main():\n    raise MemoryError()\n"
            "runtime.run(main)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert proc.returncode == 74
    assert proc.stderr.splitlines() == [runtime.memory_error_message(MemoryError())]


# ------------------------------------------------------------------------------------------
# config_source


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_config_source_refuses_what_is_not_a_regular_file(tmp_path, how, kind):
    """A FIFO hung (--config and LSTM_CONFIG); /dev/zero ran out of memory. Run in a process with a
    timeout, so that a regression fails instead of hanging the suite."""
    if kind == "fifo":
        path = tmp_path / "job.toml"
        os.mkfifo(path)
    else:
        path = Path(kind)
    args = ["--config", str(path)] if how == "flag" else []
    env = clean_env(**({"LSTM_CONFIG": str(path)} if how == "env" else {}))
    proc = subprocess.run([sys.executable, "-m", "lstm_cli", *args, "config", "show"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lstm: config file {path} is "), lines


def test_config_source_refuses_a_huge_file(tmp_path):
    path = tmp_path / "big.toml"
    path.write_bytes(b"# " + b"x" * 1_100_000 + b"\n")
    result = run("--config", path, "config", "show")
    assert result.exit_code == 2 and "is larger than 1,000,000 bytes" in one_error_line(result)


@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_config_source_refuses_a_file_others_can_write(tmp_path, mode):
    path = tmp_path / "job.toml"
    path.write_text("[train]\nepochs = 3\n")
    path.chmod(mode)
    result = run("--config", path, "config", "show")
    assert result.exit_code == 2 and "is writable by other users" in one_error_line(result)


@needs_root
def test_config_source_refuses_a_file_of_another_user_or_in_an_open_folder(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("[train]\nepochs = 3\n")
    os.chown(path, OTHER_UID, OTHER_UID)
    result = run("--config", path, "config", "show")
    assert result.exit_code == 2 and "is owned by another user (uid 12345)" in one_error_line(result)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    (open_dir / "job.toml").write_text("[train]\nepochs = 3\n")
    open_dir.chmod(0o777)
    result = run("--config", open_dir / "job.toml", "config", "show")
    assert result.exit_code == 2 and "which is writable by other users" in one_error_line(result)


def test_config_source_reads_a_good_file(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("[train]\nepochs = 3\n")
    path.chmod(0o644)
    result = run("--config", path, "config", "show", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["commands"]["train"]["epochs"] == {"value": 3, "source": f"file {path}"}


# ------------------------------------------------------------------------------------------
# env_vars


def test_env_vars_unknown_lstm_variable_is_named(panel):
    result = run("config", "show", env={"LSTM_EPOCH": "5", "LSTM_DEBUG": "0", "LSTM_CONFIG": None})
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "lstm: note: LSTM_EPOCH is not an option of any command (did you mean LSTM_EPOCHS?); it is ignored"]
    assert "LSTM_DEBUG" not in result.stderr


def test_env_vars_note_follows_quiet(panel):
    env = {"LSTM_TARGETS": "y"}
    loud = run("validate", panel, "--target", "y", "--id-col", "city", env=env)
    assert "LSTM_TARGETS is not an option of any command (did you mean LSTM_TARGET?)" in loud.stderr
    quiet = run("validate", panel, "--target", "y", "--id-col", "city", "-q", env=env)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    quiet_by_env = run("validate", panel, "--target", "y", "--id-col", "city", env={**env, "LSTM_QUIET": "1"})
    assert quiet_by_env.exit_code == 0 and quiet_by_env.stderr == ""


# ------------------------------------------------------------------------------------------
# log_forging

CRAFTED = ["a\nb", "x\rlstm: trained fine", "o\x1b[2J", "e\u202egnp"]


def assert_one_clean_line(result, code) -> str:
    assert result.exit_code == code, result.output
    line = one_error_line(result)
    assert not any(c in line for c in "\r\x1b\u202e"), line
    return line


@pytest.mark.parametrize("crafted", CRAFTED)
def test_log_forging_train_out_path(tmp_path, panel, crafted):
    out = tmp_path / crafted / "x.lstm"  # a folder that does not exist
    result = run("train", panel, "--target", "y", "--id-col", "city", *FAST, "--out", out)
    line = assert_one_clean_line(result, 73)
    assert shown(str(out)) in line or one_line(str(out)) in line


@pytest.mark.parametrize("crafted", CRAFTED)
def test_log_forging_model_path(tmp_path, panel, crafted):
    result = run("predict", tmp_path / f"m{crafted}.lstm", panel)
    assert_one_clean_line(result, 66)
    result = run("info", tmp_path / f"m{crafted}.lstm")
    assert_one_clean_line(result, 66)


@pytest.mark.parametrize("crafted", CRAFTED)
def test_log_forging_output_paths(tmp_path, panel, model, crafted):
    assert_one_clean_line(run("predict", model, panel, "--out", tmp_path / crafted / "f.csv"), 73)
    assert_one_clean_line(run("export", model, "--format", "json", "--out", tmp_path / crafted / "m.json"), 73)


@pytest.mark.parametrize("crafted", CRAFTED)
def test_log_forging_config_path(tmp_path, crafted):
    result = run("--config", tmp_path / f"{crafted}.toml", "config", "show")
    assert "config file" in assert_one_clean_line(result, 2)


def test_log_forging_click_messages_keep_one_line_per_message(tmp_path, model):
    """click's own messages (a --out that is a directory) quote the path raw."""
    crafted = tmp_path / "d\nlstm: forged"
    crafted.mkdir()
    result = run("export", model, "--format", "json", "--out", crafted)
    assert result.exit_code == 2
    assert not any(line.startswith("lstm: forged") for line in result.stderr.splitlines())


@pytest.mark.parametrize("args", [[], ["config"]])
def test_log_forging_escape_leaves_the_help_of_a_bare_group_alone(args):
    """click raises the help of `lstm` / `lstm config` without arguments as an error: not escaped."""
    result = run(*args)
    assert "\\n" not in result.output and result.output.startswith("Usage: ")
    assert "Commands:" in result.output.splitlines()


def test_log_forging_success_messages(tmp_path, model):
    out = tmp_path / "ok\nlstm: forged.json"
    result = run("export", model, "--format", "json", "--out", out)
    assert result.exit_code == 0 and out.exists()
    assert not any(line.startswith("lstm: forged") for line in result.stderr.splitlines())


def test_log_forging_shown_and_one_line():
    assert shown("Zürich/data.csv") == "Zürich/data.csv"
    assert shown("a\nb") == "'a\\nb'"
    assert one_line("a\nb\r\x1b[2J") == "a\\nb\\r\\x1b[2J"
