"""What a job tells its sinks (W&B's LevelRouter, or a test's list), typed: a sink is a callable taking one event.

A training's evaluation records (engine.run_dir) and early-phase statistics (jobs.stats) are plain dicts of
numbers; everything else is one of the classes below. An IMP part's events, records included, arrive wrapped in
`InPart` (its level, kind and density), so a sink can route them by part. Who sends what:
- Identity: train, pretrain and imp, once, before training;
- InPart(record dict | PartDone): imp's parts (imp_parts.in_part), stability's results (imp_stability);
- Tickets: imp, after each level; RecordsWritten: imp, after each level's records are on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Identity:
    """Who the run is (its resolved config without paths, its condition: jobs.identity's fields)."""

    fields: dict


@dataclass(frozen=True)
class PartDone:
    """A part has finished training in this process (a part found finished sends none)."""

    test_accuracy: float


@dataclass(frozen=True)
class Tickets:
    """The IMP run's ticket records so far (tickets.json's rows)."""

    records: list


@dataclass(frozen=True)
class RecordsWritten:
    """The IMP run's records are on disk up to `level` (W&B logs them as an artifact)."""

    run_dir: Path
    level: int


@dataclass(frozen=True)
class InPart:
    """An event of one IMP part: trunk, a control, a perturbation or a stability copy of `level`."""

    level: int
    kind: str
    density: float | None
    event: dict | PartDone


def in_part(sinks, level: int, kind: str, density: float | None) -> list:
    """The sinks, each wrapping what it is sent in the part's InPart."""
    return [lambda event, sink=sink: sink(InPart(level, kind, density, event)) for sink in sinks]
