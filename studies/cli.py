"""The `earlyphase` command: dispatches to one module per subcommand, imported only when used."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

from .campaigns.commands import COMMANDS
from .engine.errors import OneLineError, UsageError, os_error_message
from .engine.threads import die_with_parent

USAGE = "usage: earlyphase COMMAND [--field=value ...]   (earlyphase COMMAND --help lists the fields)"
HELP_FLAGS = ("-h", "--help")


def _help(name: str, args: list[str]) -> str:
    """The command's fields with the values that `args` (the command's other arguments) would give them, from its
    arguments parser alone (no torch); or its usage line."""
    command = COMMANDS[name]
    lines = [f"earlyphase {name}: {command.description}"]
    if command.usage:
        return "\n".join(lines + [command.usage_line()])
    from .jobs.config import describe_options, resolved

    try:
        cfg, problem = resolved(command.parse(args)), ""
    except UsageError as err:
        cfg, problem = None, str(err)
    if args:
        lines.append(f"values as set by: {' '.join(args)}" if cfg is not None else
                     f"values: the defaults (the other arguments do not parse: {problem})")
    shown = type(cfg) if cfg is not None else type(command.parse([]))
    lines += ["", describe_options(shown, cfg)]
    if not getattr(shown, "has_task_options", True):
        lines.append("  --TASK_OPTION=value  [the task's]  each installed task's options, e.g. "
                     "--simclr_temperature=0.2 (`earlyphase pretext` lists them with their defaults; given here, "
                     "they are listed with the rest)")
    for preset, values in command.presets().items():
        lines.append(f"\n--preset={preset} sets: " + " ".join(f"--{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE + "\n\ncommands:\n" + "\n".join(f"  {n:<10} {c.description}" for n, c in COMMANDS.items()))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise UsageError(f"unknown command {name!r}: choose one of {', '.join(COMMANDS)}")
    if any(arg in HELP_FLAGS for arg in rest):  # anywhere: `earlyphase imp --dataset=cifar10 --help`
        print(_help(name, [arg for arg in rest if arg not in HELP_FLAGS]))
        return 0
    if COMMANDS[name].arguments:  # a flag error in one line before torch is imported
        COMMANDS[name].parse(rest)
    return importlib.import_module(COMMANDS[name].module).main(rest)


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
    except OneLineError as err:  # bad input, a diverged training
        print(f"earlyphase: error: {one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a folder that became unusable: one line; any other OSError is a bug
        command = (sys.argv[1:] if argv is None else argv)[:1]
        message = os_error_message(err, flag="-o" if command == ["report"] else "--out")
        if message is None:
            raise
        print(f"earlyphase: error: {one_line(message)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `earlyphase pretext | head`: the reader left; no traceback (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt as interrupt:
        print("earlyphase: interrupted; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
