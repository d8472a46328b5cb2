"""The `earlyphase` command: dispatches to one module per subcommand, imported only when used."""

from __future__ import annotations

import importlib
import signal
import sys
import threading

from .campaigns.commands import COMMANDS, PLAIN_FLAGS
from .engine.errors import UsageError, os_error_message
from .engine.threads import die_with_parent

USAGE = "usage: earlyphase COMMAND [--field=value ...]   (earlyphase COMMAND --help lists the fields)"
HELP_FLAGS = ("-h", "--help")


def _config_class(name: str):
    from .jobs import config as config_module

    module, config, _ = COMMANDS[name]
    if name in PLAIN_FLAGS:
        return getattr(config_module, config)
    return getattr(importlib.import_module(module), config, None) or getattr(config_module, config)


def _shown_config(name: str, args: list[str]):
    """(the config `args` make, dataset and preset defaults filled in, or None; why not, or ""). A command
    module's own parse(argv) is used where it has one (study: presets), else the plain field parser."""
    from .jobs.config import resolved
    from .jobs.flags import parse_overrides

    cls = _config_class(name)
    module = None if name in PLAIN_FLAGS else importlib.import_module(COMMANDS[name][0])
    parse = getattr(module, "parse", None) or (lambda argv: parse_overrides(cls, argv))
    try:
        return resolved(parse(args)), ""
    except UsageError as err:
        return None, str(err)


def _help(name: str, args: list[str]) -> str:
    """The command's fields with the values that `args` (the command's other arguments) would give them."""
    module, config, text = COMMANDS[name]
    lines = [f"earlyphase {name}: {text}"]
    if not config:
        main = importlib.import_module(module).main
        return "\n".join(lines + [getattr(importlib.import_module(module), "USAGE", None) or
                                  f"usage: {(main.__doc__ or '').strip()}"])
    from .jobs import config as config_module

    cfg, problem = _shown_config(name, args)
    if args:
        lines.append(f"values as set by: {' '.join(args)}" if cfg is not None else
                     f"values: the defaults (the other arguments do not parse: {problem})")
    lines += ["", config_module.describe_options(_config_class(name), cfg)]
    presets = {} if name in PLAIN_FLAGS else getattr(importlib.import_module(module), "PRESETS", {})
    for preset, values in presets.items():
        lines.append(f"\n--preset={preset} sets: " + " ".join(f"--{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE + "\n\ncommands:\n" + "\n".join(f"  {n:<10} {c[2]}" for n, c in COMMANDS.items()))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise UsageError(f"unknown command {name!r}: choose one of {', '.join(COMMANDS)}")
    if any(arg in HELP_FLAGS for arg in rest):  # anywhere: `earlyphase imp --dataset=cifar10 --help`
        print(_help(name, [arg for arg in rest if arg not in HELP_FLAGS]))
        return 0
    if name in PLAIN_FLAGS:  # a flag error in one line before torch is imported
        from .jobs import config as config_module
        from .jobs.flags import parse_overrides

        parse_overrides(getattr(config_module, PLAIN_FLAGS[name]), rest)
    return importlib.import_module(COMMANDS[name][0]).main(rest)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's or `kill`'s stop), handled as Ctrl-C is: the same line, the same resumable state."""


def _terminate(signum, frame):
    raise Terminated()


def one_line(message: str) -> str:
    """The error as one line: control characters shown escaped, and a word longer than any real path or value
    (300 characters) cut to its first 60 and last 30, so a 100,000-character value is not echoed whole."""
    text = "".join(ch if ord(ch) >= 32 and ord(ch) != 127 else repr(ch)[1:-1] for ch in str(message))
    return " ".join(word if len(word) <= 300 else f"{word[:60]}...{word[-30:]} ({len(word)} characters)"
                    for word in text.split(" "))


def main(argv: list[str] | None = None) -> int:
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        if argv is None:  # a process of its own (`sweep run`'s children): stop with the process that started it
            die_with_parent()
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        print(f"earlyphase: error: {one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a folder that became unusable: one line; any other OSError is a bug
        command = (sys.argv[1:] if argv is None else argv)[:1]
        message = os_error_message(err, flag="-o" if command == ["report"] else "--out")
        if message is None:
            raise
        print(f"earlyphase: error: {one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print("earlyphase: interrupted; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
