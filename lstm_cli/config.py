"""Options from three places besides the command line, for cron jobs:

    flags  >  LSTM_<OPTION> environment variables  >  a TOML file (--config)  >  defaults

The file has one section per command (`[train]`, `[predict]`, ...) whose keys are option names
(`horizon = 12`, `batch-size = 64` or `batch_size = 64`). Environment variables name an option
in capitals with underscores (`LSTM_EPOCHS=50`, `LSTM_TARGET=sales`) and apply to every command
that has it. The result becomes click's default_map, so a flag always wins.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import click

from lstm_cli.errors import UsageError, shown

ENV_PREFIX = "LSTM_"
NOT_OPTIONS = {"help"}


def flag_name(option: click.Option) -> str:
    """The name users type: --batch-size -> 'batch-size', --target -> 'target'."""
    longs = [o[2:] for o in option.opts if o.startswith("--")]
    return max(longs, key=len) if longs else option.name


def options_of(command: click.Command) -> dict[str, click.Option]:
    """{flag name: option} of a command's options (what the file's keys and LSTM_ variables name)."""
    return {flag_name(p): p for p in command.params
            if isinstance(p, click.Option) and p.name not in NOT_OPTIONS}


MAX_CONFIG_BYTES = 1_000_000
# variables the tool reads besides LSTM_<OPTION>
OWN_VARIABLES = {"LSTM_DEBUG", "LSTM_CONFIG"}


def _read_config_bytes(path: str) -> bytes:
    """The file's bytes, or UsageError: only a regular file (a FIFO would hang, /dev/zero never
    ends), at most MAX_CONFIG_BYTES, and one that no other user can write (its options decide what
    the tool reads and writes)."""
    import stat

    from lstm_cli.runtime import file_problem

    name = shown(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"config file {name} does not exist") from None
    except OSError as e:
        raise UsageError(f"cannot read config file {name}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"config file {name} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"config file {name} is not a regular file (a pipe or a device); give a TOML file")
    try:  # O_NONBLOCK: a FIFO swapped in after the stat cannot hang the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise UsageError(f"cannot read config file {name}: {e.strerror}") from None
    with open(fd, "rb", closefd=True) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"config file {name} is not a regular file (a pipe or a device); give a TOML file")
        problem = file_problem(path, st)
        if problem:
            raise UsageError(f"config file {name} {problem}; another user could change the options: "
                             "make it yours and writable only by you (chmod go-w)")
        try:
            data = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as e:
            raise UsageError(f"cannot read config file {name}: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"config file {name} is larger than {MAX_CONFIG_BYTES:,} bytes; a config is a few lines "
                         "of TOML")
    return data


def read_file(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise UsageError("--config needs Python 3.11 or newer (tomllib)") from None
    data = _read_config_bytes(path)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UsageError(f"config file {shown(path)} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file {shown(path)} is not valid TOML: {e}") from None


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.upper().replace("-", "_")


def unknown_variables(commands: dict[str, click.Command], environ=os.environ) -> list[str]:
    """Notes naming the LSTM_ variables no command reads: a misspelled one would be ignored silently."""
    import difflib

    known = set(OWN_VARIABLES)
    for command in commands.values():
        known.update(env_name(flag) for flag in options_of(command))
    notes = []
    for name in sorted(v for v in environ if v.startswith(ENV_PREFIX) and v not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        notes.append(f"{shown(name)} is not an option of any command"
                     + (f" (did you mean {close[0]}?)" if close else "") + "; it is ignored")
    return notes


# TOML's types in the words of its spec (bool before int: a bool is an int in Python)
TOML_TYPES = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
              (list, "an array"), (dict, "a table"))


def _toml_type(value) -> str:
    return next((name for kind, name in TOML_TYPES if isinstance(value, kind)), "a date or time")


def _spelled(value) -> str:
    """' = true', ' = 2.9', ' = "12"': a short value as the file spells it (nothing for the rest)."""
    import json

    if isinstance(value, (bool, int, float, str)):
        text = json.dumps(value)
        return f" = {text}" if len(text) <= 40 else ""
    return ""


def _wanted(option: click.Option) -> tuple[str, Callable[[object], bool]]:
    """The TOML type an option takes and its test. click would coerce the others silently
    (`horizon = true` is 1, `seed = 2.9` is 2); durations check their own (a number has no unit)."""
    kind = option.type
    if option.is_flag:
        return "a boolean (true or false)", lambda v: isinstance(v, bool)
    if isinstance(kind, click.types.IntParamType):
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(kind, click.types.FloatParamType):
        return "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if getattr(kind, "name", None) == "duration":
        return "a string with a unit", lambda v: True  # DurationType says what is wrong with a number
    if option.multiple:
        return ("a string or an array of strings",
                lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)))
    return "a string", lambda v: isinstance(v, str)


def _check_types(section: str, body: dict, known: dict[str, click.Option], file_name: str | None) -> None:
    for key, value in body.items():
        wanted, fits = _wanted(known[key.replace("_", "-")])
        if not fits(value):
            found = _toml_type(value)
            if isinstance(value, list) and value:
                odd = next((x for x in value if not isinstance(x, str)), value[0])
                found = f"an array holding {_toml_type(odd)}{_spelled(odd).replace(' = ', ' ')}"
            raise UsageError(f"config file {shown(file_name)}: [{section}] {key}{_spelled(value)} is "
                             f"{found}; {key} takes {wanted}")


def _as_param_value(option: click.Option, value):
    if option.multiple and not isinstance(value, list):
        return [value]
    return value


def resolve(commands: dict[str, click.Command], file_values: dict, file_name: str | None,
            environ=os.environ) -> tuple[dict, dict]:
    """default_map {command: {option: value}} and sources {command: {option: 'env LSTM_X' | 'file F'}}."""
    for section, body in file_values.items():
        if section not in commands:
            raise UsageError(f"config file {shown(file_name)}: unknown section [{section}]; sections are "
                             f"{', '.join(f'[{c}]' for c in sorted(commands))}")
        if not isinstance(body, dict):
            raise UsageError(f"config file {shown(file_name)}: {section} must be a [{section}] section")
        known = options_of(commands[section])
        for key in body:
            if key.replace("_", "-") not in known:
                raise UsageError(f"config file {shown(file_name)}: [{section}] has no option {key!r}; options are "
                                 f"{', '.join(sorted(known))}")
        _check_types(section, body, known, file_name)
    default_map: dict[str, dict] = {}
    sources: dict[str, dict] = {}
    for name, command in commands.items():
        section = {k.replace("_", "-"): v for k, v in file_values.get(name, {}).items()}
        for flag, option in options_of(command).items():
            variable = env_name(flag)
            if variable in environ:
                value, source = environ[variable], f"env {variable}"
            elif flag in section:
                value, source = section[flag], f"file {file_name}"
            else:
                continue
            default_map.setdefault(name, {})[option.name] = _as_param_value(option, value)
            sources.setdefault(name, {})[option.name] = source
    return default_map, sources
