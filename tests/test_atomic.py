"""atomic.py: the old output survives every failure; bad output paths are refused up front; one
writer per output path."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lstm_cli import atomic, modelfile
from lstm_cli.errors import EXIT_CANNOT_CREATE, EXIT_IO, EXIT_LOCKED, LockedError, OutputError, WriteError

REPO = Path(__file__).resolve().parents[1]
OLD = b"the model the user already had\n" * 50


def temp_files(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n)


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def failing_nth_write(monkeypatch, n: int, exc_factory=enospc) -> dict:
    """Make the n-th call of atomic._write_all raise; returns the live call counter."""
    real, calls = atomic._write_all, {"n": 0}

    def flaky(fd, data):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc_factory()
        real(fd, data)

    monkeypatch.setattr(atomic, "_write_all", flaky)
    return calls


def some_arrays():
    return {f"a{i}": np.arange(7 * i, dtype=np.float64).reshape(i, 7) for i in range(1, 6)}


@pytest.fixture
def umask():
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(mask):
        os.umask(mask)

    yield set_umask
    os.umask(saved)


# ---------------------------------------------------------------------------------------------
# atomic_output: success paths


def test_writes_new_file_with_umask_mode_and_no_leftovers(tmp_path, umask):
    for mask, expected in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o644), (0o027, 0o640)):
        umask(mask)
        out = tmp_path / f"out-{mask:o}.csv"
        with atomic.atomic_output(out, "w") as f:
            f.write("a,b\n")
            f.writelines(["1,2\n", "3,4\n"])
        assert out.read_text() == "a,b\n1,2\n3,4\n"
        assert stat.S_IMODE(out.stat().st_mode) == expected, oct(mask)
        assert atomic.current_umask() == mask
    assert temp_files(tmp_path) == []


def test_existing_mode_is_kept(tmp_path):
    out = tmp_path / "model.lstm"
    for mode in (0o600, 0o640, 0o755, 0o444):
        out.write_bytes(OLD)
        os.chmod(out, mode)
        atomic.atomic_write(out, lambda f: f.write(b"new"))
        assert out.read_bytes() == b"new"
        assert stat.S_IMODE(out.stat().st_mode) == mode


def test_temp_file_name_and_location(tmp_path):
    out = tmp_path / "model.lstm"
    with atomic.atomic_output(out, buffer_size=0) as f:
        f.write(b"x")
        (name,) = temp_files(tmp_path)
        assert re.fullmatch(rf"\.model\.lstm\.tmp-{os.getpid()}-\w+", name), name
        assert not out.exists()  # the target appears only at the end
    assert out.read_bytes() == b"x"
    assert temp_files(tmp_path) == []


def test_long_basename_fits(tmp_path):
    out = tmp_path / ("m" * 250 + ".lstm")
    atomic.atomic_write(out, lambda f: f.write(b"ok"))
    with atomic.output_lock(out):
        pass
    assert out.read_bytes() == b"ok"
    assert all(len(n) <= 255 for n in os.listdir(tmp_path))


def test_atomic_write_takes_data_or_a_function(tmp_path):
    out = tmp_path / "out"
    atomic.atomic_write(out, b"bytes")
    assert out.read_bytes() == b"bytes"
    atomic.atomic_write(out, "text \u00e9")
    assert out.read_text(encoding="utf-8") == "text \u00e9"
    assert atomic.atomic_write(out, lambda f: f.write(b"abc")) == 3
    assert out.read_bytes() == b"abc"


def test_partial_os_writes_are_completed(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(atomic.os, "write", lambda fd, data: real_write(fd, bytes(data)[:7]))
    data = bytes(range(256)) * 40
    out = tmp_path / "out.bin"
    atomic.atomic_write(out, lambda f: f.write(data))
    monkeypatch.undo()
    assert out.read_bytes() == data


def test_buffered_and_numpy_writes(tmp_path):
    out = tmp_path / "out.bin"
    a = np.arange(100_000, dtype="<f8")  # bigger than a small buffer: written through
    with atomic.atomic_output(out, buffer_size=1024) as f:
        f.write(b"head")
        f.write(a)
        f.write(np.zeros((0, 3)))  # empty, multi-dimensional
        f.write(bytearray(b"tail"))
    assert out.read_bytes() == b"head" + a.tobytes() + b"tail"


def test_writes_through_a_symlink(tmp_path):
    real = tmp_path / "v1.lstm"
    real.write_bytes(OLD)
    link = tmp_path / "current.lstm"
    link.symlink_to(real.name)
    atomic.atomic_write(link, lambda f: f.write(b"new"))
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_text_mode_refuses_bytes_and_binary_mode_refuses_str(tmp_path):
    out = tmp_path / "x"
    out.write_bytes(OLD)
    with pytest.raises(TypeError):
        with atomic.atomic_output(out, "w") as f:
            f.write(b"bytes")
    with pytest.raises(TypeError):
        with atomic.atomic_output(out, "wb") as f:
            f.write("str")
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []
    with pytest.raises(ValueError):
        with atomic.atomic_output(out, "a"):
            pass


# ---------------------------------------------------------------------------------------------
# atomic_output: failure paths keep the old file


def test_nth_write_fails_with_enospc_until_save_succeeds(tmp_path, monkeypatch):
    out = tmp_path / "model.lstm"
    out.write_bytes(OLD)
    os.chmod(out, 0o640)
    arrays = some_arrays()
    n = 1
    while True:
        calls = failing_nth_write(monkeypatch, n)
        try:
            modelfile.save(out, {"note": "fault injection"}, arrays, schema=False)
        except WriteError as e:
            msg = str(e)
            assert str(out) in msg and "No space left on device" in msg and "\n" not in msg
            assert e.exit_code == EXIT_IO
            assert isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.ENOSPC
            assert out.read_bytes() == OLD, f"old file changed after failing write {n}"
            assert temp_files(tmp_path) == [], f"temp file left after failing write {n}"
            n += 1
            assert n < 1000
            continue
        break
    assert calls["n"] == n - 1  # the successful run made fewer writes than the failure point
    assert n > 5, "save should issue several writes (header, each array, padding)"
    header, got = modelfile.load(out, schema=False)
    assert header["note"] == "fault injection"
    assert all(np.array_equal(got[k], arrays[k]) for k in arrays)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert temp_files(tmp_path) == []


def test_enospc_for_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "new.lstm"
    failing_nth_write(monkeypatch, 2)
    with pytest.raises(WriteError, match="nothing was written"):
        modelfile.save(out, {}, some_arrays(), schema=False)
    assert os.listdir(tmp_path) == []


def test_buffered_text_failure_at_final_flush(tmp_path, monkeypatch):
    out = tmp_path / "forecast.csv"
    out.write_bytes(OLD)
    failing_nth_write(monkeypatch, 1)  # the only write is the flush at the end of the block
    with pytest.raises(WriteError, match="No space left on device"):
        with atomic.atomic_output(out, "w") as f:
            for i in range(100):
                f.write(f"{i},{i * 2}\n")
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupt_mid_write_is_reraised_unchanged(tmp_path, monkeypatch, exc):
    out = tmp_path / "model.lstm"
    out.write_bytes(OLD)
    failing_nth_write(monkeypatch, 3, exc)
    with pytest.raises(exc):
        modelfile.save(out, {}, some_arrays(), schema=False)
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


def test_exception_in_block_is_reraised_unchanged(tmp_path):
    out = tmp_path / "model.lstm"
    out.write_bytes(OLD)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic.atomic_output(out) as f:
            f.write(b"partial" * 1000)
            raise Boom()
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


@pytest.mark.parametrize("step", ["fsync", "replace", "fchmod"])
def test_os_failures_after_writing_become_write_errors(tmp_path, monkeypatch, step):
    out = tmp_path / "model.lstm"
    out.write_bytes(OLD)

    def fail(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic.os, step, fail)
    with pytest.raises(WriteError, match="Input/output error") as ei:
        atomic.atomic_write(out, lambda f: f.write(b"new"))
    monkeypatch.undo()
    assert str(out) in str(ei.value) and "previous file is unchanged" in str(ei.value)
    assert out.read_bytes() == OLD and temp_files(tmp_path) == []


def test_directory_fsync_failure_after_replace_is_reported(tmp_path, monkeypatch):
    out = tmp_path / "model.lstm"
    out.write_bytes(OLD)

    def fail(directory):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic, "_fsync_dir", fail)
    with pytest.raises(WriteError, match="could not sync its directory"):
        atomic.atomic_write(out, lambda f: f.write(b"new"))
    assert out.read_bytes() == b"new" and temp_files(tmp_path) == []


def test_refuses_to_replace_a_directory_or_fifo(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (d, fifo):
        with pytest.raises(OutputError) as ei:
            atomic.atomic_write(target, lambda f: f.write(b"x"))
        assert ei.value.exit_code == EXIT_CANNOT_CREATE
    assert d.is_dir() and stat.S_ISFIFO(fifo.stat().st_mode)
    assert temp_files(tmp_path) == []


def test_missing_directory_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="No such file or directory"):
        atomic.atomic_write(tmp_path / "nope" / "model.lstm", lambda f: f.write(b"x"))


# ---------------------------------------------------------------------------------------------
# check_output_path


def test_check_accepts_new_and_existing_regular_files(tmp_path):
    atomic.check_output_path(tmp_path / "new.lstm")
    (tmp_path / "old.lstm").write_bytes(OLD)
    atomic.check_output_path(tmp_path / "old.lstm", inputs=[tmp_path / "data.csv"])


def test_check_refuses_a_directory(tmp_path):
    with pytest.raises(OutputError) as ei:
        atomic.check_output_path(tmp_path)
    assert ei.value.exit_code == EXIT_CANNOT_CREATE
    assert str(tmp_path) in str(ei.value) and "is a directory" in str(ei.value)
    assert "model.lstm" in str(ei.value)  # says what to do


def test_check_refuses_missing_or_non_directory_parent(tmp_path):
    with pytest.raises(OutputError, match="does not exist.*mkdir -p"):
        atomic.check_output_path(tmp_path / "missing" / "deeper" / "m.lstm")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is not a directory"):
        atomic.check_output_path(tmp_path / "file" / "m.lstm")


def test_check_refuses_non_regular_files_and_empty_path(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputError, match="not a regular file"):
        atomic.check_output_path(tmp_path / "fifo")
    with pytest.raises(OutputError, match="not a regular file"):
        atomic.check_output_path("/dev/null")
    with pytest.raises(OutputError, match="empty"):
        atomic.check_output_path("")


def test_check_refuses_the_input_itself(tmp_path, monkeypatch):
    data = tmp_path / "data.csv"
    data.write_text("t,y\n1,2\n")
    (tmp_path / "link.csv").symlink_to("data.csv")
    os.link(data, tmp_path / "hard.csv")
    monkeypatch.chdir(tmp_path)
    spellings = [data, "data.csv", "./data.csv", "link.csv", tmp_path / "hard.csv",
                 str(tmp_path / "sub" / ".." / "data.csv")]
    (tmp_path / "sub").mkdir()
    for out in spellings:
        with pytest.raises(OutputError, match="same file as the input") as ei:
            atomic.check_output_path(out, inputs=[tmp_path / "other.csv", data])
        assert ei.value.exit_code == EXIT_CANNOT_CREATE
    atomic.check_output_path("forecast.csv", inputs=["data.csv"])
    assert data.read_text() == "t,y\n1,2\n"


def run_unprivileged(fn) -> str:
    """Run fn() in a forked child that has dropped root (permissions are not bypassed there).

    Returns "ok" or "ExceptionName:exit_code:message"; skips when privileges cannot be dropped.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            if os.geteuid() == 0:
                try:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                except OSError:
                    os.write(w, b"SKIP")
                    os._exit(0)
            try:
                fn()
                result = "ok"
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                result = f"{type(e).__name__}:{getattr(e, 'exit_code', '')}:{e}"
            os.write(w, result.encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    result = b"".join(chunks).decode()
    if result == "SKIP":
        pytest.skip("cannot drop root privileges here")
    return result


@pytest.fixture
def readonly_dir():
    """A directory the (unprivileged) test cannot write to, reachable by user nobody."""
    base = tempfile.mkdtemp(prefix="lstm-atomic-")
    os.chmod(base, 0o755)
    ro = os.path.join(base, "ro")
    os.mkdir(ro, 0o755)
    with open(os.path.join(ro, "model.lstm"), "wb") as f:
        f.write(OLD)
    os.chmod(os.path.join(ro, "model.lstm"), 0o666)
    os.chmod(ro, 0o555)
    yield ro
    os.chmod(ro, 0o755)
    shutil.rmtree(base)


def test_check_refuses_an_unwritable_directory(readonly_dir):
    out = os.path.join(readonly_dir, "model.lstm")
    result = run_unprivileged(lambda: atomic.check_output_path(out))
    assert result.startswith(f"OutputError:{EXIT_CANNOT_CREATE}:"), result
    assert out in result and "not writable" in result


def test_atomic_write_into_unwritable_directory(readonly_dir):
    out = os.path.join(readonly_dir, "model.lstm")
    result = run_unprivileged(lambda: atomic.atomic_write(out, lambda f: f.write(b"new")))
    assert result.startswith(f"OutputError:{EXIT_CANNOT_CREATE}:"), result
    assert "Permission denied" in result
    with open(out, "rb") as f:
        assert f.read() == OLD
    assert temp_files(readonly_dir) == []


# ---------------------------------------------------------------------------------------------
# output_lock

HOLDER = """
import sys
from lstm_cli.atomic import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def start_holder(out) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, cwd=REPO)
    assert proc.stdout.readline().strip() == b"locked"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.write(b"\n")
    proc.stdin.flush()


def test_lock_held_by_another_process(tmp_path):
    out = tmp_path / "model.lstm"
    proc = start_holder(out)
    try:
        with pytest.raises(LockedError) as ei:
            with atomic.output_lock(out):
                pass
        msg = str(ei.value)
        assert ei.value.exit_code == EXIT_LOCKED
        assert str(out) in msg and f"pid {proc.pid}" in msg and "--wait" in msg
        # every spelling of the path shares the lock
        (tmp_path / "alias.lstm").symlink_to("model.lstm")
        with pytest.raises(LockedError):
            with atomic.output_lock(tmp_path / "alias.lstm"):
                pass
    finally:
        release(proc)
        proc.wait(timeout=10)
    with atomic.output_lock(out):  # free again once the holder exits
        pass
    lock = Path(atomic.lock_path_for(out))
    assert lock.exists() and lock.read_bytes() == atomic.LOCK_MARKER  # kept (see module doc), pid cleared


def test_wait_blocks_until_the_holder_releases(tmp_path):
    out = tmp_path / "model.lstm"
    proc = start_holder(out)
    timer = threading.Timer(0.6, release, args=(proc,))
    start = time.monotonic()
    timer.start()
    try:
        with atomic.output_lock(out, wait=True) as lock_path:
            waited = time.monotonic() - start
            assert Path(lock_path).read_bytes() == atomic.LOCK_MARKER + f"{os.getpid()}\n".encode()
    finally:
        timer.join()
        proc.wait(timeout=10)
    assert waited >= 0.5


def test_lock_in_the_same_process_is_exclusive(tmp_path):
    out = tmp_path / "model.lstm"
    with atomic.output_lock(out):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            with atomic.output_lock(out):
                pass
    with atomic.output_lock(out):
        pass


def test_lock_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(OLD)
    out = tmp_path / "model.lstm"
    os.symlink(victim, atomic.lock_path_for(out))
    with pytest.raises(OutputError):
        with atomic.output_lock(out):
            pass
    assert victim.read_bytes() == OLD


WRITER = """
import sys
from lstm_cli.atomic import atomic_write, output_lock
out, tag = sys.argv[1], sys.argv[2].encode()
for i in range(15):
    with output_lock(out, wait=True):
        atomic_write(out, lambda f: f.write(tag * 200_000))
"""


def test_two_concurrent_writers_never_tear_the_file(tmp_path):
    out = tmp_path / "model.lstm"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), tag], env=env, cwd=REPO)
             for tag in ("A", "B")]
    seen = set()
    while any(p.poll() is None for p in procs):
        try:
            data = out.read_bytes()
        except FileNotFoundError:
            continue
        assert data in (b"A" * 200_000, b"B" * 200_000)
        seen.add(data[:1])
    assert [p.wait() for p in procs] == [0, 0]
    assert out.read_bytes() in (b"A" * 200_000, b"B" * 200_000)
    assert temp_files(tmp_path) == []
