"""Safe output files: nothing the user had is ever lost, two runs never tear one file.

Three tools, meant to be used together by every command that writes a file:

    check_output_path(out, inputs=[csv])      # before any work: refuse hopeless --out at once
    with output_lock(out, wait=args.wait):    # one writer per output path at a time
        ... hours of work ...
        with atomic_output(out) as f:         # temp file + fsync + rename + fsync(dir)
            f.write(data)

Guarantees of `atomic_output` / `atomic_write`:
- The data goes to a temporary file `.{basename}.tmp-{pid}-{random}` in the target's directory
  (same filesystem, so the final os.replace is atomic); it is flushed and fsync'ed, renamed over
  the target, and the directory is fsync'ed so the rename itself survives a crash.
- On any failure, including KeyboardInterrupt and SystemExit, the temporary file is removed and the
  previous target is byte-for-byte intact. An OSError becomes WriteError (exit 74) naming the path
  and the OS reason ("No space left on device"); failing to even create the temporary file for a
  reason the user must fix (permissions, read-only filesystem, missing directory) is OutputError
  (exit 73). Any other exception is re-raised unchanged.
- New files get mode 0o644 & ~umask (mkstemp's 0600 is fixed); an existing target keeps its mode
  (and, best-effort, its owner and group).
- A symlink target is written through: the file it points to is replaced and the link is kept.
  Refuses to replace anything but a regular file (never a device, FIFO or directory).

Fault injection: every byte goes through `_write_all(fd, data)`; tests monkeypatch it so that the
N-th write raises OSError(ENOSPC).

The lock (`output_lock`) is fcntl.flock on a sidecar `.{basename}.lock` in the target's directory.
The lock file is deliberately never deleted: unlinking it on exit races with a waiter that has
already opened the old inode (it would then "hold" a lock on a deleted file while a third run
locks a fresh one, and both write). A small hidden file per output path is the price. It starts
with the marker line `lstm lock` (LOCK_MARKER), so the tool can tell its own lock from a user's file
of that name: a non-empty file there that does not start with the marker (digits too: lstm's old
pid-only locks cannot be told from a user's file) is refused (OutputError), never truncated.
The holder writes its pid after the marker for the "being written by pid N" message and cuts the
file back to the marker on release. The lock file is opened O_NOFOLLOW | O_NONBLOCK and must be a
regular file with one link: a symlink, FIFO, directory or hard link planted there is refused.

Does not import numpy: the CLI can check paths before any heavy import.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from lstm_cli.errors import LockedError, OutputError, UsageError, WriteError
from lstm_cli.errors import shown as quoted

T = TypeVar("T")

DEFAULT_BUFFER = 256 * 1024  # bytes kept in memory before a write(2); 0 = write through
NAME_MAX = 255  # bytes in one path component (Linux, macOS)
_LONG_BASENAME = 200  # longer basenames are shortened in sidecar names so they fit NAME_MAX
LOCK_MARKER = b"lstm lock\n"  # first line of every lock file this tool writes
LOCK_POLL_SECONDS = 0.1  # how often output_lock(wait=True, deadline=...) retries a busy lock

# Inputs of the whole command that no output may overwrite, beside those each caller names: the
# --config file (see protect_inputs). ((path, what it is, for the message), ...)
_COMMAND_INPUTS: ContextVar[tuple] = ContextVar("lstm_command_inputs", default=())

# Creating the temporary file failed for a reason the user must fix, not a transient I/O error.
_CANNOT_CREATE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR,
                  errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}


def _write_all(fd: int, data) -> None:
    """Write every byte of `data` (any C-contiguous buffer) to fd. The single write path (test hook)."""
    view = memoryview(data)
    if view.nbytes == 0:
        return
    view = view.cast("B")
    while view:
        n = os.write(fd, view)
        if n <= 0:  # never happens on a regular file; guard against an endless loop
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        view = view[n:]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def current_umask() -> int:
    """The process umask, read without changing it when /proc allows (os.umask is a set+restore)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def resolve_target(path) -> str:
    """The absolute path that is really written: symlinks resolved, so a link is written through
    and every spelling of one file shares one lock."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _sidecar_base(base: str) -> str:
    """`base`, shortened when needed so that `.{base}.tmp-{pid}-{random}` fits in NAME_MAX."""
    if len(os.fsencode(base)) <= _LONG_BASENAME:
        return base
    digest = hashlib.sha1(os.fsencode(base)).hexdigest()[:12]
    short = os.fsencode(base)[:100].decode("utf-8", "ignore")
    return f"{short}~{digest}"


def lock_path_for(path) -> str:
    directory, base = os.path.split(resolve_target(path))
    return os.path.join(directory, f".{_sidecar_base(base)}.lock")


def temp_prefix_for(path) -> str:
    """Prefix of this process's temporary files for `path` (mkstemp adds the random part)."""
    base = os.path.basename(resolve_target(path))
    return f".{_sidecar_base(base)}.tmp-{os.getpid()}-"


# --------------------------------------------------------------------------------------------
# Pre-flight check


def _same_file(a: str, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError, TypeError):
        try:
            return resolve_target(a) == resolve_target(b)
        except (OSError, ValueError, TypeError):
            return False


def _is_lock_file(target: str) -> bool:
    """Whether the regular file `target` is a lock file of this tool (starts with LOCK_MARKER)."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.pread(fd, len(LOCK_MARKER), 0) == LOCK_MARKER
    except OSError:
        return False
    finally:
        os.close(fd)


def check_output_path(path, inputs: Iterable = (), option: str = "--out") -> None:
    """Refuse, before any work, an output path that cannot or must not be written.

    "-" is a UsageError (exit 2): the callers that can write to stdout handle it before; here a
    file named "-" would be written where the user meant stdout (`./-` names such a file).
    Raises OutputError (exit 73) with one line naming the path and the fix when the path is empty,
    an existing directory or other non-regular file, its parent directory is missing, not a
    directory or not writable, it is the lock file of another output, or it is the same file as
    one of `inputs` or of the command's protected inputs (protect_inputs; same inode or same
    resolved path). A nonexistent output in a writable
    directory passes. `option` names the path in the "-" message.
    """
    shown = quoted(path)  # as every message shows a path ("-" stays "-")
    if shown == "-":
        raise UsageError(f"{option} -: this command writes a file, not stdout; give a file path "
                         "(./- for a file named -)")
    if not shown:
        raise OutputError("the output path is empty; give a file path such as model.lstm")
    target = resolve_target(path)
    try:
        st = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):
        st = None  # the parent checks below say what is wrong with the path
    except OSError as e:
        raise OutputError(f"cannot use {shown} as the output: {_reason(e)}; choose another path") from e
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"output {shown} is a directory; give a file path such as "
                              f"{os.path.join(shown, 'model.lstm')}")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"output {shown} exists and is not a regular file (device, FIFO or "
                              "socket); choose a regular file path")
        if _is_lock_file(target):
            raise OutputError(f"output {shown} is a lock file lstm keeps beside another output; "
                              "choose another path")
    parent = os.path.dirname(target)
    try:
        pst = os.stat(parent)
    except (FileNotFoundError, NotADirectoryError):
        raise OutputError(f"cannot create {shown}: directory {parent} does not exist; "
                          f"create it first (mkdir -p {parent}) or choose another path") from None
    except OSError as e:
        raise OutputError(f"cannot create {shown}: cannot access directory {parent}: "
                          f"{_reason(e)}; choose another path") from e
    if not stat.S_ISDIR(pst.st_mode):
        raise OutputError(f"cannot create {shown}: {parent} is not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create {shown}: directory {parent} is not writable (permission "
                          "denied or read-only); fix its permissions or choose another path")
    for inp, what in [*((inp, "") for inp in inputs), *_COMMAND_INPUTS.get()]:
        if _same_file(target, inp):
            raise OutputError(f"output {shown} is the same file as the input {quoted(inp)}{what}; "
                              "writing it would destroy the input: choose another output path")


def protect_inputs(inputs: dict) -> Callable[[], None]:
    """Make every check_output_path of this command refuse `inputs` ({path: what it is}) too, as if
    each caller had named them: the CLI group protects the --config file this way, whichever
    command, engine or exporter writes the output. Returns the function that lifts it."""
    token = _COMMAND_INPUTS.set(tuple(inputs.items()))
    return lambda: _COMMAND_INPUTS.reset(token)


# --------------------------------------------------------------------------------------------
# Atomic output


class AtomicFile:
    """The writable object handed out by atomic_output: write/writelines/flush only.

    A plain object on purpose (not an io.BufferedWriter): an io object flushes in __del__, and
    after an abort its fd number may already belong to some other file. Text mode encodes str as
    given (no newline translation: pass lineterminator/newlines explicitly).
    """

    def __init__(self, fd: int, name: str, text: bool, encoding: str, buffer_size: int):
        self._fd = fd
        self.name = name
        self.mode = "w" if text else "wb"
        self._text = text
        self._encoding = encoding
        self._buffer_size = buffer_size
        self._buf = bytearray()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"I/O operation on closed atomic output {self.name}")

    def write(self, data) -> int:
        self._check_open()
        if self._text:
            if not isinstance(data, str):
                raise TypeError(f"write() argument must be str, not {type(data).__name__}")
            count, view = len(data), memoryview(data.encode(self._encoding))
        else:
            view = memoryview(data)
            if view.nbytes == 0:  # (cast refuses empty multi-dimensional views)
                return 0
            view = view.cast("B")  # C-contiguous buffers only, like file.write
            count = view.nbytes
        if self._buffer_size <= 0 or view.nbytes >= self._buffer_size:
            self.flush()
            if view.nbytes:
                _write_all(self._fd, view)
        else:
            self._buf += view
            if len(self._buf) >= self._buffer_size:
                self.flush()
        return count

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._check_open()
        if self._buf:
            data, self._buf = self._buf, bytearray()
            _write_all(self._fd, data)

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        self._buf = bytearray()
        if fd >= 0:
            os.close(fd)

    def _abort(self) -> None:
        try:
            self._close()
        except OSError:
            pass


def _existing_target(target: str, shown: str) -> os.stat_result | None:
    try:
        st = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise OutputError(f"cannot write {shown}: {_reason(e)}; choose another path") from e
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise OutputError(f"cannot write {shown}: it is {kind}; choose a regular file path")
    return st


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # fs without dir fsync
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path, mode: str = "wb", *, encoding: str = "utf-8",
                  buffer_size: int = DEFAULT_BUFFER) -> Iterator[AtomicFile]:
    """Write `path` all or nothing: `with atomic_output("out.csv", "w") as f: f.write(text)`.

    mode is "wb" (bytes-like writes) or "w" (str writes, encoded with `encoding`). The target is
    replaced only when the block finishes without an exception; see the module doc.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_output mode must be 'wb' or 'w', got {mode!r}")
    shown = os.fspath(path)
    target = resolve_target(path)
    directory = os.path.dirname(target)
    existing = _existing_target(target, shown)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix_for(target), dir=directory)
    except OSError as e:
        if e.errno in _CANNOT_CREATE:
            raise OutputError(f"cannot create {shown}: {_reason(e)} (in {directory}); fix the "
                              "directory or choose another path") from e
        raise WriteError(f"cannot write {shown}: {_reason(e)}; nothing was replaced") from e
    f = AtomicFile(fd, shown, mode == "w", encoding, buffer_size)
    replaced = False
    try:
        if existing is None:
            os.fchmod(fd, 0o644 & ~current_umask())
        else:
            os.fchmod(fd, stat.S_IMODE(existing.st_mode))
            if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                try:  # keep the owner when allowed (root, or a group we are in)
                    os.fchown(fd, existing.st_uid, existing.st_gid)
                except OSError:
                    pass
        yield f
        f.flush()
        os.fsync(fd)
        f._close()
        os.replace(tmp, target)
        replaced = True
        _fsync_dir(directory)
    except BaseException as e:
        f._abort()
        if not replaced:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            if replaced:
                raise WriteError(f"wrote {shown} but could not sync its directory: {_reason(e)}; "
                                 "the new file may not survive a crash") from e
            kept = "the previous file is unchanged" if existing is not None else "nothing was written"
            raise WriteError(f"cannot write {shown}: {_reason(e)}; {kept}") from e
        raise


def atomic_write(path, content: Callable[[AtomicFile], T] | bytes | str, mode: str | None = None,
                 **kwargs) -> T | None:
    """Write `path` atomically: `content` is a function called with the open file (its result is
    returned), or the bytes / str to write (mode then defaults to "wb" / "w")."""
    if mode is None:
        mode = "w" if isinstance(content, str) else "wb"
    with atomic_output(path, mode, **kwargs) as f:
        if callable(content):
            return content(f)
        f.write(content)
        return None


# --------------------------------------------------------------------------------------------
# Lock


def _open_lock_file(lock_path: str, shown: str) -> int:
    """Open (creating) the lock file without following a symlink or blocking on a FIFO, and refuse
    anything there that this tool did not write (see the module doc): it is never truncated."""
    flags = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(lock_path, os.O_RDWR | flags, 0o666)
    except PermissionError:
        try:  # a lock file another user created: flock works on a read-only descriptor too
            fd = os.open(lock_path, os.O_RDONLY | (flags & ~os.O_CREAT))
        except OSError as e:
            raise OutputError(f"cannot lock {shown}: cannot open {lock_path}: {_reason(e)}; "
                              "fix the directory permissions or choose another path") from e
    except OSError as e:  # ELOOP: a symlink planted as the lock file is refused, never followed
        raise OutputError(f"cannot lock {shown}: cannot open {lock_path}: {_reason(e)}; "
                          "fix the directory or choose another path") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"cannot lock {shown}: {lock_path} is not a regular file; remove it")
        if st.st_nlink != 1:
            raise OutputError(f"cannot lock {shown}: {lock_path} has other hard links, so lstm did not "
                              "write it; move it away or choose another output path")
        if not is_lock_content(os.pread(fd, len(LOCK_MARKER), 0)):
            raise OutputError(f"{lock_path} exists and was not written by lstm (lstm keeps its lock for "
                              f"{shown} there); move it away or choose another output path")
    except OSError as e:
        os.close(fd)
        raise OutputError(f"cannot lock {shown}: cannot read {lock_path}: {_reason(e)}") from e
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_lock_content(head: bytes) -> bool:
    """Whether a file starting with `head` (at least its first len(LOCK_MARKER) bytes) is a lock
    file of this tool: empty (just created) or starting with the marker. A bare pid is refused: a
    user's file of digits looks the same, and taking it would overwrite it."""
    return head == b"" or head.startswith(LOCK_MARKER)


def _holder_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, len(LOCK_MARKER) + 32, 0).removeprefix(LOCK_MARKER).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def _busy(shown: str, fd: int) -> str:
    pid = _holder_pid(fd)
    return f"{shown} is being written by another lstm run ({'pid unknown' if pid is None else f'pid {pid}'})"


def _acquire(fd: int, shown: str, lock_path: str, wait: bool, deadline: float | None) -> None:
    """flock `fd`: at once, or waiting (until `deadline`, a time.monotonic() value, if given).
    Waiting polls rather than blocks in flock so the deadline holds; a signal handler that raises
    (StopFlag) interrupts either wait."""
    started = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if not wait or deadline is not None else 0))
            return
        except BlockingIOError:
            if not wait:
                raise LockedError(f"{_busy(shown, fd)}; retry later or pass --wait") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockedError(f"{_busy(shown, fd)}; waited {time.monotonic() - started:.1f} s for it and "
                                  "the time limit ran out; retry later or raise --time-limit") from None
            time.sleep(min(LOCK_POLL_SECONDS, left))
        except OSError as e:
            raise OutputError(f"cannot lock {shown} ({lock_path}): {_reason(e)}") from e


@contextmanager
def output_lock(path, wait: bool = False, deadline: float | None = None) -> Iterator[str]:
    """Hold an exclusive advisory lock for writing `path` (yields the lock file's path).

    Busy and not `wait` -> LockedError (exit 75) naming the holder's pid. With `wait`, waits until
    the holder finishes (Ctrl-C still interrupts), or until `deadline` (time.monotonic(); the
    --time-limit, which counts the wait), then LockedError. The lock is per open file description:
    a second output_lock on the same path in the same process is refused like any other.
    """
    shown = quoted(path)
    lock_path = lock_path_for(path)
    fd = _open_lock_file(lock_path, shown)
    try:
        _acquire(fd, shown, lock_path, wait, deadline)
        marked = False
        try:
            try:
                content = LOCK_MARKER + f"{os.getpid()}\n".encode()
                os.pwrite(fd, content, 0)
                marked = True
                os.ftruncate(fd, len(content))
            except OSError:
                pass  # read-only lock file: the lock still holds, only the message lacks the pid
            yield lock_path
        finally:
            if marked:
                try:
                    os.ftruncate(fd, len(LOCK_MARKER))  # the pid goes, the marker stays
                except OSError:
                    pass
    finally:
        os.close(fd)  # releases the flock
