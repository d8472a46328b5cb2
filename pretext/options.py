"""A pretext task's options: how they are declared (`Option`) and how text becomes their values.

No torch here: the application parses flags with the same `parse_bool` before it loads any task.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """A task option's default and its one-line help (shown by `--help` and `earlyphase pretext list`)."""

    default: object
    help: str = ""


def declared_options(task: object) -> dict[str, Option]:
    """A task's (class or instance) options as {name: Option}, whether declared as plain defaults or as
    Option(default, help)."""
    options: dict = getattr(task, "options")
    return {name: value if isinstance(value, Option) else Option(value) for name, value in options.items()}


def parse_bool(text: str) -> bool:
    """true/1/yes or false/0/no (any case): the one spelling of a boolean, for task options and earlyphase's
    fields alike (W&B's sweep agent passes True/False); ValueError otherwise."""
    low = text.strip().lower()
    if low not in ("true", "1", "yes", "false", "0", "no"):
        raise ValueError(f"{text!r} is not true or false")
    return low in ("true", "1", "yes")


def coerce_option(task: str, key: str, value, default):
    """`value` as the type of `default` (bool, int, float or str); text is parsed."""
    kind = type(default)
    try:
        if kind is bool:
            return parse_bool(value) if isinstance(value, str) else bool(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{task} option {key}={value!r}: expected {kind.__name__}") from None


def parse_args(text: str) -> dict:
    """'k=v,k=v' -> {k: 'v'} (the values stay text; the task converts them); a key given twice is refused."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"bad pretext argument {item!r}: write key=value,key=value")
        if key.strip() in out:
            raise ValueError(f"{key.strip()} is given twice: give each key once")
        out[key.strip()] = value.strip()
    return out


def refuse(task: str, checks) -> None:
    """Raise the first failed check of (failed, "name=value: what it must be") pairs as the ValueError
    `TASK name=value: ...` (the application turns it into the one-line error)."""
    for failed, need in checks:
        if failed:
            raise ValueError(f"{task} {need}")
