"""The process around a command: its standard streams, its JIT cache and its last words.

What this module does has to happen before anything else: a descriptor left closed is taken by
the next file the command opens (and then data and messages share it), numba chooses the cache
directory whose index files it unpickles when the kernels are imported, and an error that
escapes click must still end as one line and a documented exit code.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import sys

from lstm_cli.errors import EXIT_IO, EXIT_SIGINT, OutputError, UsageError, one_line, shown

IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EBADF}

OUT_OF_MEMORY = ("out of memory{detail}; free memory or make the job smaller (fewer or shorter series, "
                 "--sample-series, a smaller --hidden or --batch-size), then rerun")


class _ClosedStdout(io.TextIOBase):
    """Stands in for a stdout the shell closed (`lstm info >&-`, where Python sets sys.stdout to
    None and click then prints nothing): a write fails as on a closed descriptor, so a command
    that has data to print says so instead of exiting 0 with nothing."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed; redirect it or give --out FILE")


# ------------------------------------------------------------------------------------------
# standard streams


def _occupy(fd: int) -> None:
    """Put /dev/null on a closed standard descriptor, so that no file the command opens gets its number."""
    new = os.open(os.devnull, os.O_RDWR)
    if new != fd:
        os.dup2(new, fd)
        os.close(new)
    os.set_inheritable(fd, True)


def prepare_streams() -> None:
    """Closed descriptors 0-2 are occupied by /dev/null: a closed stdin stays None (reading '-' says
    there is no stdin), a closed stdout fails every write (exit 74), a closed stderr discards the
    messages (the user asked for that) instead of Python printing them to stdout. Data is UTF-8
    whatever the locale, so the same job gives the same bytes on every host; messages keep the
    locale's encoding and spell out what it cannot show."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            _occupy(fd)
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    elif hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8", errors="surrogateescape")
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    elif hasattr(sys.stderr, "reconfigure"):
        sys.stderr.reconfigure(errors="backslashreplace")


def _discard(name: str) -> None:
    """Point the failed standard stream `name` ("stdout", "stderr") at /dev/null: what is still
    buffered and every later write go nowhere, so the flush at interpreter exit cannot print
    'Exception ignored ...' or change the exit code (Python exits 120 when it cannot flush)."""
    try:
        fd = getattr(sys, name).fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - not a real descriptor: replace the object


def discard_stdout() -> None:
    """After stdout failed (a closed pipe, a full disk)."""
    _discard("stdout")


def discard_stderr() -> None:
    """After stderr failed (`2>/dev/full`, a reader gone): messages are dropped from then on, as
    with a closed stderr. A message that cannot be written never stops the work or changes its
    exit code; only the data streams (stdout, --out) failing give 74."""
    _discard("stderr")


def say(message: str) -> None:
    """One line on stderr; a stderr that fails cannot report its own failure (and is dropped)."""
    try:
        print(one_line(message), file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        discard_stderr()


def io_error_message(e: OSError) -> str:
    if isinstance(sys.stdout, _ClosedStdout) and e.errno == errno.EBADF:
        return f"lstm: {e.strerror}"
    where = f" ({shown(e.filename)})" if e.filename else ""
    return (f"lstm: I/O error: {e.strerror or e}{where}; the output is incomplete: free space or check the "
            "device, then rerun")


def memory_error_message(e: MemoryError) -> str:
    detail = str(e).strip()
    return "lstm: " + OUT_OF_MEMORY.format(detail=f" ({detail})" if detail else "")


def one_line_click_error(e, ctx=None) -> None:
    """Make click's error `e` print the tool's one line instead of click's usage, hint, blank line
    and 'Error: ...' (`lstm: train: Missing option '--target'; see lstm train --help`), through
    say, so a failing stderr cannot change the exit code. A value that came from an LSTM_
    variable or the config file says so. `ctx` is the group that caught it (for an error the
    command raised without a context). The help click raises for a group without arguments
    (`lstm`, `lstm config`) is left as it is."""
    import click

    if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):
        return
    # click lays its choice lists out on lines ("Choose from:\n\tonnx,\n\tjson"): one line of them
    message = e.format_message().replace("\n\t", " ").strip().rstrip(".")
    if not isinstance(e, click.UsageError):
        line = f"lstm: {message}"
    else:
        names = _command_names(e.ctx) if e.ctx is not None else []
        if not names and ctx is not None and ctx.meta.get("lstm.command", (None,))[0]:
            names = _command_names(ctx) + [ctx.meta["lstm.command"][0]]
        origin = _value_origin(e)
        command = " ".join(["lstm", *names])
        line = f"lstm: {' '.join(names) + ': ' if names else ''}{message}{origin}; see {command} --help"
    e.show = lambda file=None: say(line)


def _command_names(ctx) -> list[str]:
    """['config', 'show'] for `lstm config show`: the commands below the root (whatever the
    program is called, `cli` under click's test runner)."""
    names = []
    while ctx.parent is not None:
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    return names


def _value_origin(e) -> str:
    """' (from LSTM_QUIET)' or ' (from the config file job.toml)' when the bad value was not typed."""
    import click
    from click.core import ParameterSource

    param, ctx = getattr(e, "param", None), e.ctx
    if not isinstance(e, click.BadParameter) or param is None or ctx is None or param.name is None:
        return ""
    if ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT_MAP:
        return ""
    names = _command_names(ctx)
    source = ctx.find_root().meta.get("lstm.config_sources", {}).get(" ".join(names), {}).get(param.name, "")
    if source.startswith("env "):
        return f" (from {source[4:]})"
    if source.startswith("file "):
        return f" (from the config file {shown(source[5:])})"
    return ""


def command_is_quiet(ctx) -> bool:
    """Whether the command the group is about to run was given --quiet (a flag, LSTM_QUIET or the
    config file): notes the group prints before the command parses its options follow it."""
    name, command, args = ctx.meta.get("lstm.command", (None, None, []))
    if command is None or not any(p.name == "quiet" for p in command.params):
        return False
    try:
        parsed = command.make_context(name, list(args), parent=ctx, resilient_parsing=True)
    except Exception:  # the command reports its own bad arguments when it runs
        return False
    return bool(parsed.params.get("quiet"))


def _debug_requested() -> bool:
    return os.environ.get("LSTM_DEBUG", "") not in ("", "0") or "--debug" in sys.argv[1:]


def run(main) -> None:
    """Run click's `main` and exit: an out-of-memory or an I/O error that escapes click (while it
    prints --help, say) is one line and exit 74, and stdout is flushed here, where a failure can
    still be reported, rather than at interpreter exit."""
    import signal

    prepare_streams()
    reported = False
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    except KeyboardInterrupt:
        say("lstm: interrupted")
        code = EXIT_SIGINT
    except MemoryError as e:
        if _debug_requested():
            raise
        say(memory_error_message(e))
        code, reported = EXIT_IO, True
    except OSError as e:
        if e.errno == errno.EPIPE:
            code, reported = 0, True
            discard_stdout()
        elif e.errno in IO_ERRNOS and not _debug_requested():
            say(io_error_message(e))
            code, reported = EXIT_IO, True
            discard_stdout()
        else:
            raise
    finally:
        # The command is over and its exit code decided: a signal during interpreter shutdown
        # (joining worker threads) must not turn it into a death by signal.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    sys.exit(_flush_stdout(code, reported))


def _flush_stdout(code, reported: bool):
    try:
        if sys.stdout is not None and not isinstance(sys.stdout, _ClosedStdout):
            sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()  # the reader went away (`| head`): not an error of ours
    except OSError as e:
        discard_stdout()
        if code in (0, None) and not reported:
            say(io_error_message(e))
            return EXIT_IO
    return code


# ------------------------------------------------------------------------------------------
# who may write a path


def _other_writer(st: os.stat_result, owners: set[int]) -> str | None:
    if st.st_uid not in owners:
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022 and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        return f"is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


MAX_SYMLINKS = 40  # as Linux: more on one path is a loop


def parents_problem(path: str) -> str | None:
    """Why what `path` names could be swapped by another user: a directory the path goes through
    (as typed, '..' included, and where its symbolic links lead, component by component as the
    kernel resolves it) is owned by someone other than us or root, or writable by others without
    the sticky bit; or a symbolic link on the way (the last component too) is another user's."""
    if not hasattr(os, "geteuid"):
        return None
    owners = {os.geteuid(), 0}
    try:
        start = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    except OSError as e:
        return f"cannot be checked: the working directory: {e.strerror}"
    pending = start.split(os.sep)
    current, checked, links = os.sep, set(), 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":  # current was reached from / through checked directories: so was its parent
            current = os.path.dirname(current)
            continue
        if current not in checked:  # the directory the name is looked up in
            checked.add(current)
            try:
                problem = _other_writer(os.stat(current), owners)
            except OSError as e:
                return f"cannot be checked: {shown(current)} above it: {e.strerror}"
            if problem:
                return f"is inside {shown(current)}, which {problem}"
        here = os.path.join(current, name)
        try:
            st = os.lstat(here)
        except OSError as e:
            return f"cannot be checked: {shown(here)} on its path: {e.strerror}"
        if not stat.S_ISLNK(st.st_mode):
            current = here
            continue
        if st.st_uid not in owners and not pending and links == 0:  # the path as typed
            return f"is a symbolic link owned by another user (uid {st.st_uid})"
        if st.st_uid not in owners:
            return f"is reached through the symbolic link {shown(here)}, which is owned by another user (uid {st.st_uid})"
        links += 1
        try:
            target = os.readlink(here)
        except OSError as e:
            return f"cannot be checked: {shown(here)} on its path: {e.strerror}"
        if links > MAX_SYMLINKS:
            return f"cannot be checked: more than {MAX_SYMLINKS} symbolic links on its path"
        if os.path.isabs(target):
            current = os.sep
        pending = target.split(os.sep) + pending
    return None


def file_problem(path: str, st: os.stat_result) -> str | None:
    """Why a file the tool loads (a config) could come from another user: the file, or a directory
    above it, is owned or writable by someone other than us or root. None on Windows."""
    if not hasattr(os, "geteuid"):
        return None
    return _other_writer(st, {os.geteuid(), 0}) or parents_problem(path)


def _make_private_dirs(path: str, mode: int) -> None:
    """Create the missing components of `path` with `mode` (os.makedirs gives the intermediate ones
    the umask's mode, which a hostile umask makes world-writable)."""
    missing = []
    d = os.path.abspath(path)
    while not os.path.lexists(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            pass


def _contents_problem(path: str, depth: int = 2) -> str | None:
    """In a cache directory other users can enter: a file or folder inside that they could write
    (or a symlink), or a umask that would make the files numba writes there writable by them."""
    umask = os.umask(0)
    os.umask(umask)
    if umask & 0o022 != 0o022:
        return (f"is open to other users and the umask {umask:03o} would let them write the files numba "
                "puts there")
    try:
        entries = list(os.scandir(path))
    except OSError as e:
        return f"cannot be listed ({e.strerror})"
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        where = f"holds {shown(entry.path)}, which"
        if stat.S_ISLNK(st.st_mode):
            return f"{where} is a symbolic link"
        problem = _other_writer(st, {os.geteuid()})
        if problem:
            return f"{where} {problem}"
        if depth > 1 and stat.S_ISDIR(st.st_mode) and st.st_mode & 0o011:
            problem = _contents_problem(entry.path, depth - 1)
            if problem:
                return problem
    return None


def cache_dir_problem(path: str, mode: int = 0o700) -> str | None:
    """Why numba must not use `path` for its cache, creating it (with `mode`) when it is missing:
    numba unpickles the index files it finds there, so a directory another user can write into,
    swap or point elsewhere runs that user's code as us."""
    if not hasattr(os, "geteuid"):
        return None
    try:
        _make_private_dirs(path, mode)
        st = os.lstat(path)
    except OSError as e:
        return f"cannot be created ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    problem = _other_writer(st, {os.geteuid()}) or parents_problem(path)
    if problem:
        return problem
    if st.st_mode & 0o011:  # others can reach what is inside: the files too must be ours alone
        problem = _contents_problem(path)
        if problem:
            return problem
    if not os.access(path, os.W_OK | os.X_OK):
        return "is not writable"
    return None


# ------------------------------------------------------------------------------------------
# the JIT cache

# what prepare_jit_cache chose, for `lstm version`: where, why there, and whether it lasts
JIT_CACHE: dict = {"dir": None, "source": None, "disabled": None}
_run_cache_dir: str | None = None  # the per-run directory of a disabled cache (removed at exit)


def _package_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def _cache_candidates() -> list[str]:
    """Persistent places for the cache, best first: the user cache directory (platformdirs: XDG on
    Linux), ~/.cache, then a per-user folder in the temp directory."""
    import tempfile

    candidates = []
    home = os.environ.get("HOME")
    if home or os.environ.get("XDG_CACHE_HOME"):  # without HOME (cron), platformdirs would guess one
        try:
            import platformdirs

            candidates.append(os.path.join(platformdirs.user_cache_dir("lstm-cli", appauthor=False), "numba"))
        except ImportError:
            xdg = os.environ.get("XDG_CACHE_HOME")
            if xdg:
                candidates.append(os.path.join(xdg, "lstm-cli", "numba"))
    if home:
        candidates.append(os.path.join(home, ".cache", "lstm-cli", "numba"))
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    candidates.append(os.path.join(tempfile.gettempdir(), f"lstm-cli-numba-{uid}"))
    return [c for c in dict.fromkeys(candidates) if os.path.isabs(c)]


NUMBA_CONFIG = ".numba_config.yaml"  # numba reads it from the working directory when it is imported
MAX_NUMBA_CONFIG_BYTES = 1_000_000


def _numba_config_problem() -> str | None:
    """numba also reads ./.numba_config.yaml (cache directory, cache locator classes it imports):
    in a shared working directory another user could have put it there. numba also parses it at
    import and fails with a traceback on bad YAML, so it is read here first as numba reads it."""
    try:
        st = os.lstat(NUMBA_CONFIG)
    except OSError:
        return None
    where = shown(os.path.abspath(NUMBA_CONFIG))
    problem = (file_problem(os.path.abspath(NUMBA_CONFIG), st)
               or ("is a symbolic link" if stat.S_ISLNK(st.st_mode) else None))
    if problem:
        return f"{where}, which numba would load, {problem}; remove it or run lstm from another directory"
    if not stat.S_ISREG(st.st_mode):
        return None  # numba reads a regular file only (a FIFO is never opened)
    problem = _numba_config_content_problem()
    if problem:
        return (f"{where}, which numba reads when it starts, {problem}; fix it (a YAML mapping of numba "
                "settings, such as `cache_dir: /home/me/.cache/numba`) or remove it, or run lstm from "
                "another directory")
    return None


def _numba_config_content_problem() -> str | None:
    """What numba would choke on in the file: not text in the locale's encoding (numba opens it
    in text mode), not YAML, not a mapping of names; or a cache_dir that no other user may write
    (numba's cache index is a pickle: the same rule as NUMBA_CACHE_DIR)."""
    import locale

    try:
        import yaml
    except ImportError:
        return None  # numba ignores the file without PyYAML
    try:
        with open(NUMBA_CONFIG, "rb") as f:
            data = f.read(MAX_NUMBA_CONFIG_BYTES + 1)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if len(data) > MAX_NUMBA_CONFIG_BYTES:
        return f"is larger than {MAX_NUMBA_CONFIG_BYTES:,} bytes"
    encoding = locale.getpreferredencoding(False)
    try:
        conf = yaml.safe_load(data.decode(encoding))
    except UnicodeDecodeError as e:
        return f"is not {encoding} text (byte {e.start})"
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"is not valid YAML ({getattr(e, 'problem', None) or type(e).__name__}{where})"
    except RecursionError:
        return "is not valid YAML (nested too deeply)"
    if conf is None:
        return None
    if not isinstance(conf, dict) or not all(isinstance(k, str) for k in conf):
        return "is not a mapping of setting names to values"
    for key, value in conf.items():
        name = "NUMBA_" + key.upper()  # as numba reads it; the environment overrides the file
        problem = name not in os.environ and _numba_setting_problem(name, value)
        if problem:
            return f"sets {shown(key)}: {shown(str(value))}, which {problem}"
        if key.upper() == "CACHE_DIR" and value is not None:
            problem = cache_dir_problem(str(value))
            if problem:
                return f"names the cache_dir {shown(str(value))}, which {problem}"
    return None


# numba settings that make it print its debugging output (numba print()s it: on stdout, mixed with
# the data) or write files of its own; refused unless off
NUMBA_PRINTING = re.compile(r"^NUMBA_(DEBUG|DEBUG_.*|DUMP_.*|TRACE|PARALLEL_DIAGNOSTICS)$")
NUMBA_WRITING = ("NUMBA_DUMP_HTML", "NUMBA_CHROME_TRACE")
NUMBA_OFF = ("", "0", "none", "false")
NUMBA_OPT_LEVELS = ("0", "1", "2", "3", "max")


def _numba_setting_problem(name: str, value) -> str | None:
    """Why the numba setting `name` (NUMBA_X) at `value` breaks a command: its output would mix with
    the data or land in files, the kernels cannot run with it, or numba would fail on it mid-run."""
    text = str(value).strip()
    if name in NUMBA_WRITING and text.lower() not in NUMBA_OFF:
        return "makes numba write debugging files of its own"
    if NUMBA_PRINTING.match(name) and text.lower() not in NUMBA_OFF:
        return "makes numba print its debugging output on stdout, mixed with the data"
    if name == "NUMBA_DISABLE_JIT" and text.lower() not in NUMBA_OFF:
        return "turns off numba's compiler, which the kernels need"
    if name == "NUMBA_NUM_THREADS" and not (text.isdigit() and int(text) >= 1):
        return "is not a whole number of threads, 1 or more"
    if name == "NUMBA_OPT" and text not in NUMBA_OPT_LEVELS:
        return "is not an optimisation level numba knows (0, 1, 2, 3 or max)"
    return None


def numba_environment_problem() -> str | None:
    """The first NUMBA_ environment variable that _numba_setting_problem refuses, as the message of
    a UsageError: numba reads them when it is imported, before a command can catch what they do."""
    for name, value in sorted(os.environ.items()):
        problem = name.startswith("NUMBA_") and _numba_setting_problem(name, value)
        if problem:
            return f"the environment variable {name}={shown(value)} {problem}; unset it (unset {name}) and rerun"
    return None


def prepare_jit_cache() -> list[str]:
    """Before numba loads: choose a JIT cache directory that no other user can write (numba's
    cache index is a pickle). Order: a safe NUMBA_CACHE_DIR, the package's own __pycache__
    (numba's default), the user cache directory, a per-user temp folder; when none is safe, a
    private directory for this run only (the kernels compile every run). Returns the notes."""
    global _run_cache_dir

    problem = numba_environment_problem() or _numba_config_problem()
    if problem:
        raise UsageError(problem)
    notes = []
    given = os.environ.get("NUMBA_CACHE_DIR")
    if given and given == _run_cache_dir:
        return notes  # chosen by an earlier command in this process
    if given:
        problem = cache_dir_problem(given)
        if problem is None:
            JIT_CACHE.update(dir=given, source="NUMBA_CACHE_DIR", disabled=None)
            return notes
        notes.append(f"NUMBA_CACHE_DIR {shown(given)} {problem}; not used for the JIT cache")
        del os.environ["NUMBA_CACHE_DIR"]
    if not hasattr(os, "geteuid"):  # Windows: numba's own choice
        return notes
    package_dir = _package_dir()
    last = None
    if os.access(package_dir, os.W_OK):
        pycache = os.path.join(package_dir, "__pycache__")
        problem = cache_dir_problem(pycache, mode=0o755)
        if problem is None:
            JIT_CACHE.update(dir=pycache, source="package", disabled=None)
            return notes  # numba's default: __pycache__ beside the sources
    for path in _cache_candidates():
        existed = os.path.lexists(path)
        problem = cache_dir_problem(path)
        if problem is None:
            os.environ["NUMBA_CACHE_DIR"] = path
            JIT_CACHE.update(dir=path, source="user", disabled=None)
            return notes
        if existed:
            last = f"{shown(path)} {problem}"
    import atexit
    import shutil
    import tempfile

    private = tempfile.mkdtemp(prefix="lstm-cli-numba-run-")
    problem = cache_dir_problem(private)
    if problem:
        shutil.rmtree(private, ignore_errors=True)
        raise OutputError(f"no safe directory for the JIT cache: {shown(private)} {problem}; set NUMBA_CACHE_DIR "
                          "to a directory of yours that only you can write")
    atexit.register(shutil.rmtree, private, True)
    _run_cache_dir = os.environ["NUMBA_CACHE_DIR"] = private
    reason = last or "no cache directory of yours could be created"
    JIT_CACHE.update(dir=private, source="run", disabled=reason)
    notes.append(f"JIT cache disabled: {reason}; the kernels compile on every run (slow) until it is fixed "
                 "or NUMBA_CACHE_DIR names a directory that only you can write")
    return notes
