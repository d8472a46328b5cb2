"""Crossed tickets: a ticket is a mask and a set of starting weights; crossing a condition C with its like-for-like
reference R separates the two. At a level L, `crossed_mask` trains C's level-L mask from R's rewind point and
`crossed_weights` trains R's level-L mask from C's rewind point (reporting.crossed splits C - R into a mask part,
a weights part and their interaction).

Each crossed part trains from its *weights'* rewind point with that run's plan (its k, data order and seed, the
optimiser state rewound and masked as the trunk's is): for a task against `rewind k` both runs share k, T, seed and
data order, so both parts use R's; for rewinding to k against reset, R's mask on rewinding's weights trains [k, T).
Crossing R with itself is R's own trunk training, bit for bit (tests/test_crossed.py).

Run directory `cross_HASH` beside the IMP runs, named by the two runs' names (and VERSION): config.json (the two
runs), `level_L/crossed_mask/` and `level_L/crossed_weights/` (each a run directory: resumable, locked, skipped when
finished, its mask.pt and final.pt bound to it), and crossed.json (one record per finished part, rebuilt from the
parts' summary.json, in tickets.json's form).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from earlyphase.imp.rewinding import rewound_state

from ..engine import checkpoints, records
from ..engine.errors import UsageError
from ..engine.schedule import Job
from .flags import split_list
from .imp_mask_files import ensure_mask, load_mask
from .imp_parts import momentum_for, part_training, rewind_point
from .imp_setup import ImpRun

VERSION = 1
KINDS = ("crossed_mask", "crossed_weights")


def levels_named(text: str, last: int, flag: str) -> list[int]:
    """The levels a crossing setting names: `sparsest` ([last], none below level 1), `none` or empty, or level
    numbers (`1,3`, sorted, each once; the caller checks them against what it ran)."""
    text = text.strip()
    if text == "sparsest":
        return [last] if last >= 1 else []
    if text in ("", "none"):
        return []
    try:
        return sorted({int(x) for x in split_list(text)})
    except ValueError:
        raise UsageError(f"{flag}={text}: write sparsest, none or level numbers, e.g. 1,3") from None


def cross_dir(subject: ImpRun, reference: ImpRun) -> Path:
    digest = hashlib.sha256(f"{subject.out.name}|{reference.out.name}|{VERSION}".encode()).hexdigest()[:12]
    return reference.out.parent / f"cross_{digest}"


def _part(weights_run: ImpRun, point: tuple, mask_run: ImpRun, level: int, part: Path, kind: str, sinks) -> object:
    """The crossed training of mask_run's level-`level` mask from weights_run's rewind point (`point`: its model
    state and momentum, imp_parts.rewind_point)."""
    mask_file = mask_run.out / f"level_{level}" / "mask.pt"
    if not mask_file.is_file():
        raise UsageError(f"{mask_file} is missing: finish level {level} of {mask_run.out.name} before crossing it")
    mask = ensure_mask(part, weights_run, lambda: load_mask(mask_file, mask_run))
    model, momentum = point
    return part_training(weights_run, part, rewound_state(model, mask), mask, start=weights_run.k,
                         save_at=(weights_run.k,), momentum=momentum_for(weights_run, momentum, mask), sinks=sinks,
                         level=level, kind=kind)


def work(subject: ImpRun, reference: ImpRun, levels: list[int], sinks=()) -> Job:
    """The crossed parts of (subject, reference) at `levels`, as one scheduler step; returns (dir, records)."""
    if subject.cfg.seed != reference.cfg.seed:
        raise UsageError(f"crossing {subject.out.name} with {reference.out.name}: their seeds differ; cross a "
                         f"condition with its reference of the same seed")
    out = cross_dir(subject, reference)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json_atomic(out / "config.json", {"subject": subject.out.name, "reference": reference.out.name,
                                                        "seed": subject.cfg.seed, "version": VERSION})
    parts = []
    # each rewind point read (and checked against its run) once, whatever the levels
    points = {"subject": rewind_point(subject), "reference": rewind_point(reference)} if levels else {}
    for level in levels:
        folder = out / f"level_{level}"
        parts += [_part(reference, points["reference"], subject, level, folder / "crossed_mask", "crossed_mask",
                        sinks),
                  _part(subject, points["subject"], reference, level, folder / "crossed_weights", "crossed_weights",
                        sinks)]
    yield parts
    return out, write_records(out, subject.cfg.seed)


def write_records(out: Path, seed) -> list[dict]:
    """crossed.json from the finished parts' summary.json files."""
    found = []
    for summary_path in sorted(out.glob("level_*/crossed_*/summary.json")):
        summary = records.read(summary_path, records.SUMMARY, fix="move its part away to train it again")
        part = summary_path.parent
        density = records.read(part / "density.json", records.DENSITY, missing_ok=True, fix="move it away") or {}
        found.append({"level": int(part.parent.name.split("_")[1]), "kind": part.name, "seed": seed,
                      "test_accuracy": summary["test_accuracy"], "density": density.get("density"),
                      "run_dir": f"{part.parent.name}/{part.name}"})
    checkpoints.write_json_atomic(out / "crossed.json", found)
    return found
