"""The shapes of the JSON records earlyphase writes and reads back, checked in one place.

A record read back (a run's summary.json, a level's density.json, an IMP run's tickets.json and config.json, a
study's study.json, a stability.json, a sweep's ledger.json, W&B's records manifest) is JSON whose shape another
program, a kill or a hand may have changed. `read(path, SHAPE, fix)` returns it only if it has the shape the
reader relies on; otherwise it is one line naming the file, what is wrong and the fix, in the shape every damaged
file gets: `PATH is corrupt (WHAT): FIX`. A shape is a small value: `NUMBER` (finite, not a boolean),
`FRACTION` (a number in [0, 1]), `COUNT` (a whole number >= 0), `TEXT`, `Maybe(shape)` (or null),
`ListOf(shape)`, `MapOf(shape)` (any keys) and `Obj({key: shape}, optional=(key, ...))` (those keys required but
the optional ones; others allowed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import read_json
from .errors import UsageError


@dataclass(frozen=True)
class _Kind:
    name: str

    def problem(self, value) -> str | None:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.name == "text":
            return None if isinstance(value, str) else "not text"
        if not number or not math.isfinite(value):
            return "not a finite number"
        if self.name == "fraction" and not 0 <= value <= 1:
            return "not in [0, 1]"
        if self.name == "count" and (value < 0 or value != int(value)):
            return "not a whole number >= 0"
        return None


NUMBER, FRACTION, COUNT, TEXT = _Kind("number"), _Kind("fraction"), _Kind("count"), _Kind("text")


@dataclass(frozen=True)
class Maybe:
    shape: object


@dataclass(frozen=True)
class ListOf:
    shape: object


@dataclass(frozen=True)
class MapOf:
    shape: object


@dataclass(frozen=True)
class Obj:
    keys: dict
    optional: tuple = ()  # keys that may be absent


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problem(value, shape, where: str = "") -> str | None:
    """What is wrong with `value` against `shape` (None: nothing), naming the place (`level 2: test_accuracy`)."""
    at = f"{where} " if where else ""
    if isinstance(shape, Maybe):
        return None if value is None else problem(value, shape.shape, where)
    if isinstance(shape, _Kind):
        why = shape.problem(value)
        return f"{at}{_short(value)} is {why}" if why else None
    if isinstance(shape, ListOf):
        if not isinstance(value, list):
            return f"{at}is not a list".strip()
        return next((p for i, v in enumerate(value) if (p := problem(v, shape.shape, f"{where}[{i}]"))), None)
    if not isinstance(value, dict):
        return f"{at}is not a JSON object".strip()
    if isinstance(shape, MapOf):
        return next((p for k, v in value.items() if (p := problem(v, shape.shape, f"{where}[{k!r}]"))), None)
    missing = [k for k in shape.keys if k not in value and k not in shape.optional]
    if missing:
        return f"{at}has no {missing[0]!r}".strip()
    return next((p for k, s in shape.keys.items()
                 if k in value and (p := problem(value[k], s, f"{where}.{k}" if where else k))), None)


def read(path: Path, shape, fix: str, *, missing_ok: bool = False):
    """The record at `path` if it has `shape`; else one line naming the file, what is wrong and `fix`. A missing
    file is None with missing_ok."""
    record = read_json(path, fix=fix, missing_ok=missing_ok, kind=object)
    if record is None and missing_ok:
        return None
    why = problem(record, shape)
    if why:
        raise UsageError(f"{path} is corrupt ({why}): {fix}")
    return record


# ---------------------------------------------------------------------------------------------- the records
SUMMARY = Obj({"test_accuracy": Maybe(FRACTION), "test_loss": Maybe(NUMBER), "train_loss": Maybe(NUMBER),
               "start_step": COUNT, "end_step": COUNT, "files": MapOf(TEXT)}, optional=("files",))
DENSITY = Obj({"density": FRACTION})
TICKETS = ListOf(Obj({"level": COUNT, "kind": TEXT, "density": FRACTION, "test_accuracy": FRACTION}))
IMP_CONFIG = Obj({"seed": COUNT, "levels": COUNT, "rewind_step_it": Maybe(COUNT), "rewind_from": Maybe(TEXT)},
                 optional=("rewind_step_it", "rewind_from"))
STUDY = Obj({"units": ListOf(Obj({"imp_dir": TEXT}, optional=("imp_dir",))), "crossed": ListOf(TEXT)},
            optional=("crossed",))
PATH_POINT = Obj({"alpha": NUMBER, "test_error": NUMBER})
STABILITY = MapOf(Obj({"level": COUNT, "instability": NUMBER, "train_instability": NUMBER, "density": FRACTION,
                       "path": ListOf(PATH_POINT)}))
LEDGER = MapOf(Obj({"argv": ListOf(TEXT), "returncode": NUMBER, "log": Maybe(TEXT)}))
MANIFEST = Obj({"final_sha256": MapOf(TEXT)})
CROSS_CONFIG = Obj({"subject": TEXT, "reference": TEXT, "seed": COUNT})
CROSSED = ListOf(Obj({"level": COUNT, "kind": TEXT, "seed": COUNT, "test_accuracy": FRACTION, "density": FRACTION,
                      "run_dir": TEXT}))
