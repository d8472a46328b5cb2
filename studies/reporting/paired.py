"""Like-for-like comparisons between conditions, and the paired statistics every claim rests on.

What is compared (each within one *setting*: same data, model, T, schedule, pruning, precision):
- `pretext`: a pretext condition pretrained for k steps against supervised rewinding to the same k (the
  `rewind` condition with that k; `supervised` pretraining for k steps is that very run). A pretext
  condition without such a reference is not compared, and the report says so: never against another k,
  another budget or another setting.
- `rewind_vs_reset`: rewinding to k (> 0) against resetting to the initialisation (k = 0).
- `control`: at every pruned level, a condition's ticket against each of its controls (random
  reinitialisation, random pruning) and perturbed rewind points, which share its data order.

How: seeds are paired (the same seed is the same initialisation and data order in both conditions), so
the statistic is the per-seed difference of test accuracy at one level (same density in both; a level
whose densities differ is skipped), its mean and a 95% confidence interval from Student's t over the
seeds (scipy.stats.ttest_1samp). A difference is *called* only when the interval excludes 0 and there
are at least MIN_SEEDS seeds; with fewer, the report says nothing can be concluded. The interval covers
test-set noise as well as training noise, since each seed's difference carries both. Intervals are per
density and not corrected for the number of densities and conditions compared. Seeds whose differences
are all equal have no spread: the interval is that value (so three seeds each 1 point lower is called).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from .runs import Condition, by_seed, by_setting

MIN_SEEDS = 3
CONFIDENCE = 0.95


@dataclass
class Difference:
    """subject - reference at one level, paired by seed (accuracies as fractions)."""

    level: int
    density: float
    n: int
    mean: float
    low: float | None = None  # the 95% interval; None with fewer than 2 seeds
    high: float | None = None
    seeds: list = field(default_factory=list)

    @property
    def called(self) -> bool:
        """Whether the data show a difference: n >= MIN_SEEDS and the interval excludes 0."""
        return self.n >= MIN_SEEDS and self.low is not None and (self.low > 0 or self.high < 0)


def interval(differences: list[float]) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the mean of paired differences and its 95% t interval (None below 2 values).

    Identical differences have no spread: the interval is the single value."""
    from scipy import stats

    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, None, None
    if max(differences) - min(differences) < 1e-12:  # equal up to float rounding of the accuracies
        return mean, mean, mean
    low, high = stats.ttest_1samp(differences, 0.0).confidence_interval(CONFIDENCE)
    return mean, float(low), float(high)


def paired(subject: dict, reference: dict, level: int, same_density: bool = True) -> Difference | None:
    """The paired difference of two {seed: (accuracy, density)} maps at one level; None without common seeds
    or when the two densities differ (not the same level of pruning), unless same_density is False (a ticket
    against its dense network); the difference's density is the subject's."""
    seeds = sorted(set(subject) & set(reference))
    if not seeds or (same_density and any(not math.isclose(subject[s][1], reference[s][1], rel_tol=1e-9)
                                          for s in seeds)):
        return None
    diffs = [subject[s][0] - reference[s][0] for s in seeds]
    mean, low, high = interval(diffs)
    return Difference(level, statistics.fmean(subject[s][1] for s in seeds), len(seeds), mean, low, high, seeds)


@dataclass
class Comparison:
    question: str  # pretext, rewind_vs_reset or control
    subject: Condition
    reference: Condition
    subject_kind: str = "trunk"
    reference_kind: str = "trunk"
    differences: list = field(default_factory=list)  # Difference per level, ascending

    @property
    def subject_label(self) -> str:
        return self.subject.label if self.subject_kind == "trunk" else f"{self.subject.label}: {self.subject_kind}"

    @property
    def reference_label(self) -> str:
        if self.question == "control":
            return f"{self.reference.label}: {self.reference_kind}"
        return self.reference.label

    @property
    def n(self) -> int:
        return max((d.n for d in self.differences), default=0)


def _compare(question: str, subject: Condition, reference: Condition, first_level: int,
             subject_kind: str = "trunk", reference_kind: str = "trunk") -> Comparison:
    levels = sorted({r["level"] for r in subject.records if r["kind"] == subject_kind and r["level"] >= first_level})
    found = (paired(by_seed(subject.records, lvl, subject_kind), by_seed(reference.records, lvl, reference_kind), lvl)
             for lvl in levels)
    return Comparison(question, subject, reference, subject_kind, reference_kind, [d for d in found if d])


def comparisons(conditions: list[Condition]) -> tuple[list[Comparison], list[str]]:
    """Every like-for-like comparison among `conditions`, and a note for each condition left without one."""
    out, notes = [], []
    for group in by_setting(conditions):
        resets = [c for c in group if c.kind == "reset"]
        rewinds = {c.k: c for c in group if c.kind == "rewind"}
        for k in sorted(rewinds):
            for reset in resets:  # level 0 is the same dense run in both: compare the pruned levels
                out.append(_compare("rewind_vs_reset", rewinds[k], reset, 1))
        for c in (c for c in group if c.kind == "pretext"):
            if c.k in rewinds:
                out.append(_compare("pretext", c, rewinds[c.k], 0))
            else:
                notes.append(f"{c.label}: no supervised rewinding to the same k ({c.k}it) in the same setting, so it "
                             f"is not compared (add `--conditions=rewind --rewind_step={c.k}it` runs, or run it "
                             f"through `earlyphase study`, which adds them)")
    for c in conditions:
        kinds = list(dict.fromkeys(r["kind"] for r in c.records if r["kind"] != "trunk"))
        out += [_compare("control", c, c, 1, "trunk", kind) for kind in kinds]
    return out, notes
