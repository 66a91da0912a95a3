"""Options from three places besides the command line, for cron jobs:

    flags  >  LSTM_<OPTION> environment variables  >  a TOML file (--config)  >  defaults

The file has one section per command (`[train]`, `[predict]`, ...) whose keys are option names
(`horizon = 12`, `batch-size = 64` or `batch_size = 64`). Environment variables name an option
in capitals with underscores (`LSTM_EPOCHS=50`, `LSTM_TARGET=sales`) and apply to every command
that has it. The result becomes click's default_map, so a flag always wins.
"""

from __future__ import annotations

import os

import click

from lstm_cli.errors import UsageError

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


def read_file(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise UsageError("--config needs Python 3.11 or newer (tomllib)") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory") from None
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}") from None


def _as_param_value(option: click.Option, value):
    if option.multiple and not isinstance(value, list):
        return [value]
    return value


def resolve(commands: dict[str, click.Command], file_values: dict, file_name: str | None,
            environ=os.environ) -> tuple[dict, dict]:
    """default_map {command: {option: value}} and sources {command: {option: 'env LSTM_X' | 'file F'}}."""
    for section, body in file_values.items():
        if section not in commands:
            raise UsageError(f"config file {file_name}: unknown section [{section}]; sections are "
                             f"{', '.join(f'[{c}]' for c in sorted(commands))}")
        if not isinstance(body, dict):
            raise UsageError(f"config file {file_name}: {section} must be a [{section}] section")
        known = options_of(commands[section])
        for key in body:
            if key.replace("_", "-") not in known:
                raise UsageError(f"config file {file_name}: [{section}] has no option {key!r}; options are "
                                 f"{', '.join(sorted(known))}")
    default_map: dict[str, dict] = {}
    sources: dict[str, dict] = {}
    for name, command in commands.items():
        section = {k.replace("_", "-"): v for k, v in file_values.get(name, {}).items()}
        for flag, option in options_of(command).items():
            env_name = ENV_PREFIX + flag.upper().replace("-", "_")
            if env_name in environ:
                value, source = environ[env_name], f"env {env_name}"
            elif flag in section:
                value, source = section[flag], f"file {file_name}"
            else:
                continue
            default_map.setdefault(name, {})[option.name] = _as_param_value(option, value)
            sources.setdefault(name, {})[option.name] = source
    return default_map, sources
