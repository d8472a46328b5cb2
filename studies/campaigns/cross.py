"""`earlyphase cross RUNS [--levels=sparsest|none|L,...]`: the crossed tickets of every like-for-like pair in a runs
folder, for runs a sweep trained apart (a study crosses its own pairs itself).

The pairs are the report's comparisons (a task at k with `rewind k`, rewinding to k with reset, within one setting),
each seed whose two IMP runs are both in the folder; each is crossed at the levels asked (default: each pair's
sparsest level both runs finished) by jobs.imp_cross, into the folder's `cross_HASH` runs, which `earlyphase report`
then reads. Resumable and skipped when done, as every run. Run it after the sweep's agents, where the runs are:

    earlyphase sweep run sweeps/pretext_vs_rewind-quick.yaml --out=runs
    earlyphase cross runs
    earlyphase report runs -o report
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ..engine import records, schedule
from ..engine.errors import UsageError
from ..jobs import imp as imp_job
from ..jobs import imp_cross
from ..jobs.config import ImpConfig
from ..reporting.paired import comparisons
from ..reporting.runs import collect
from . import arguments


def _imp_run(run: Path):
    """The IMP run of a run directory, prepared from its config.json (its rewind point by the path it recorded, or
    the copy beside it in this folder)."""
    config = records.read(run / "config.json", records.IMP_CONFIG, fix="move the run away or rerun it")
    names = {f.name for f in dataclasses.fields(ImpConfig)}
    cfg = ImpConfig(**{k: v for k, v in config.items() if k in names})
    cfg = dataclasses.replace(cfg, out=str(run.parent))
    if cfg.rewind_from:
        recorded = Path(cfg.rewind_from)
        local = run.parent / (recorded.parent.name if recorded.suffix == ".pt" else recorded.name)
        cfg = dataclasses.replace(cfg, rewind_from=str(local if local.exists() else recorded))
    imp_run = imp_job.prepare(cfg)
    if imp_run.out.resolve() != run.resolve():
        raise UsageError(f"{run}: its config.json names {imp_run.out.name}; cross runs as earlyphase wrote them")
    return imp_run


def _finished(c, seed) -> int:
    """The deepest level a condition's run of `seed` finished (its ticket records, as the report read them)."""
    return max((r["level"] for r in c.records if r["seed"] == seed and r["kind"] == "trunk"), default=0)


def pairs(folder: Path) -> list[tuple[Path, Path, int]]:
    """(subject run, reference run, deepest level both finished) of each like-for-like pair and seed in the folder."""
    conditions, _ = collect([folder])
    found, _ = comparisons([c for c in conditions if c.records])
    out = []
    for c in (c for c in found if c.question in ("pretext", "rewind_vs_reset")):
        mine, theirs = c.subject.run_of_seed, c.reference.run_of_seed
        out += [(mine[s], theirs[s], min(_finished(c.subject, s), _finished(c.reference, s)))
                for s in sorted(mine) if s in theirs]
    return out


def main(argv: list[str]) -> int:
    folder, levels_text = arguments.cross(argv)
    found = pairs(folder)
    jobs = []
    for subject, reference, finished in found:
        levels = [lvl for lvl in imp_cross.levels_named(levels_text, finished, "--levels") if 1 <= lvl <= finished]
        if levels:
            jobs.append(imp_cross.work(_imp_run(subject), _imp_run(reference), levels))
    print(f"cross: {len(jobs)} pairs in {folder}", file=sys.stderr)
    done = schedule.run(schedule.chain(jobs)) if jobs else []
    for out, _ in done:
        print(out)
    return 0
