"""Flags: `--field=value` arguments into dataclass configs, the one parser for every kind of value.

A config's fields are its flags, each declared with its kind (`option`, `replicate`, `content`, `parts`,
`platform`, `component`: see jobs.config) and help. `parse_overrides` and `parse_command_line` read `--key=value`,
`--key value`, a bare boolean `--flag`, aliases such as `-o`; `_convert` turns each value into its field's type
(booleans by pretext.options.parse_bool, the spelling task options use too); `split_list` reads every
comma-separated field. This module imports neither torch nor the tasks, so a command refuses bad flags
without loading them.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field, fields

from earlyphase.pretext.options import parse_bool

from ..engine.errors import UsageError
from ..engine.folders import refuse_control_characters  # noqa: F401  (the flags' check too)

KINDS = ("option", "replicate", "content", "parts", "platform")
UNNAMED = ("parts", "platform")  # kinds that name no run


def _field(kind: str, default, help: str, empty: bool = False, bare: str | None = None):
    """empty: the value "" means something the help states (its default is None); text fields whose default is ""
    take "" anyway. bare: the value the flag means when given without one (`--wandb_log` alone)."""
    metadata = {"kind": kind, "help": help, "empty": empty or default == "", "bare": bare}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def option(default, help: str = "", empty: bool = False):
    return _field("option", default, help, empty)


def replicate(default, help: str = ""):
    return _field("replicate", default, help)


def content(default, help: str = ""):
    return _field("content", default, help)


def parts(default, help: str = "", empty: bool = False):
    """Which parts of a run to train (levels, controls, perturbations, stability analyses): out of the run's name,
    so asking for more later reuses the run directory; each part is named by its own folder."""
    return _field("parts", default, help, empty)


def platform(default, help: str = "", empty: bool = False, bare: str | None = None):
    return _field("platform", default, help, empty, bare)


def component(cls, help: str = ""):
    """A config held inside another (the study holds an IMP config, ...): its fields are set by the same flags."""
    return _field("component", cls, help)


def field_kind(f: dataclasses.Field) -> str:
    return f.metadata.get("kind", "option")


def leaves(cfg) -> list[tuple[object, dataclasses.Field]]:
    """(owner, field) for every flag-settable field of a config, through its components, each name once."""
    out, seen = [], set()
    for f in fields(cfg):
        if field_kind(f) == "component":
            for owner, leaf in leaves(getattr(cfg, f.name)):
                if leaf.name not in seen:
                    seen.add(leaf.name)
                    out.append((owner, leaf))
        elif f.name not in seen:
            seen.add(f.name)
            out.append((cfg, f))
    return out


def _convert(name: str, text: str, hint, empty_ok: bool = False):
    """The value of --name=text as the field's type. Empty is a value only where the field's help says what it
    means (no controls, no tracking, no milestones, ...); anywhere else it is refused, not read as unset."""
    refuse_control_characters(f"--{name}", text)
    if text == "" and not empty_ok:
        raise UsageError(f"--{name} is empty: give it a value, or leave the flag out for its default")
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        hint = args[0]
    try:
        if hint is bool:
            return parse_bool(text)
        if hint is int:
            return int(text)
        if hint is float:
            value = float(text)
            if not math.isfinite(value):
                raise UsageError(f"--{name}={text}: expected a finite number")
            return value
        return str(text)
    except ValueError:
        raise UsageError(f"--{name}={text}: expected {hint.__name__}") from None


def parse_overrides(cls, argv: list[str], base=None, defaults: dict | None = None):
    """Parse `--key=value` / `--key value` / `--flag` arguments into an instance of `cls` (or onto `base`),
    composed configs included: a flag sets its field in every component that has it. `defaults`: values for the
    fields the arguments leave out (a command's own defaults, e.g. `earlyphase stability`'s levels).

    Unknown keys are refused with the closest valid key suggested. A value never starts with `--`: in
    `--out --training_steps=3it` the second flag is not --out's value (`--out` is refused as missing one).
    A key given twice is refused: which one was meant is not ours to guess (last-wins hid typos in sweeps).
    """
    cfg, positional = parse_command_line(cls, argv, base, defaults)
    if positional:
        raise UsageError(f"unexpected argument {positional[0]!r}: options are written --name=value")
    return cfg


def parse_command_line(cls, argv: list[str], base=None, defaults: dict | None = None,
                       aliases: dict | None = None) -> tuple[object, list[str]]:
    """(the config, the positional arguments): parse_overrides' rules, plus `aliases` ({"-o": "out_dir"}) and
    fields whose `bare` metadata is the value a flag without one means (`--wandb_log`)."""
    cfg = base if base is not None else cls()
    hints = field_types(cfg)
    names = list(hints)
    fields_ = {f.name: f for _, f in leaves(cfg)}
    values, positional = {}, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        head, eq, rest = arg.partition("=")
        if head in (aliases or {}):
            arg = f"--{aliases[head]}{eq}{rest}"
        if not arg.startswith("--"):
            positional.append(arg)
            i += 1
            continue
        key, eq, text = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in hints:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean --{close[0]}?" if close else "; run with --help to list the options"
            raise UsageError(f"unknown option --{key}{hint}")
        bare = "true" if hints[key] is bool else fields_[key].metadata.get("bare")
        if not eq:
            if bare is not None and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
                text = bare
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                i += 1
                text = argv[i]
            else:
                raise UsageError(f"--{key} needs a value: --{key}=VALUE")
        if key in values:
            raise UsageError(f"--{key} is given twice: give each option once")
        values[key] = _convert(key, text, hints[key], fields_[key].metadata.get("empty", False))
        i += 1
    return with_values(cfg, {**(defaults or {}), **values}), positional


def split_list(text: str | None) -> list[str]:
    """A comma-separated field's entries, stripped: the one reading of every list field. An empty field is no
    entries; an empty entry among others (`0,,1`, a trailing comma) is refused, since it usually hides a typo."""
    if not (text or "").strip():
        return []
    entries = [t.strip() for t in text.split(",")]
    if not all(entries):
        raise UsageError(f"{text!r} has an empty entry between commas: write each entry once, e.g. 0,1,2")
    return entries


def field_types(cfg) -> dict:
    """{flag name: type} of every leaf field."""
    return {f.name: typing.get_type_hints(type(owner))[f.name] for owner, f in leaves(cfg)}


def with_values(cfg, values: dict):
    """A copy of `cfg` with `values` set in every component that has each field."""
    changes = {}
    for f in fields(cfg):
        if field_kind(f) == "component":
            changes[f.name] = with_values(getattr(cfg, f.name), values)
        elif f.name in values:
            changes[f.name] = values[f.name]
    return dataclasses.replace(cfg, **changes)


def flat(cfg) -> dict:
    """Every flag's value (a composed config's components flattened), e.g. for a W&B run's config."""
    return {f.name: getattr(owner, f.name) for owner, f in leaves(cfg)}
