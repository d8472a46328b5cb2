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
test-set noise as well as training noise, since each seed's difference carries both. Seeds whose differences
are all equal have no spread: the interval is that value (so three seeds each 1 point lower is called).

How sure: each difference also carries its two-sided p value and the smallest true difference its seeds could
detect (`detectable`: a paired t test at 5% with 80% power, (t(0.975, n-1) + t(0.8, n-1)) * sd / sqrt(n), from
the observed spread), and `seeds_for(margin)` gives the n at which that reaches a margin. Intervals are per
density; family-wise control over every interval the findings rest on is Holm's step-down correction of
their p values (`holm`), shown beside the uncorrected intervals.
"""

from __future__ import annotations

import functools
import math
import statistics
import warnings
from dataclasses import dataclass, field

from .runs import Condition, by_seed, by_setting

MIN_SEEDS = 3
CONFIDENCE = 0.95
POWER = 0.8  # of the smallest detectable difference
MOST_SEEDS = 1000  # seeds_for gives up beyond this
RESAMPLES = 2000  # bootstrap resamples of the seeds (seeded: the same report every time)


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
    sd: float | None = None  # of the per-seed differences; None below 2 seeds
    p: float | None = None  # two-sided, against no difference; None below 2 seeds
    p_holm: float | None = None  # p after Holm's correction over the report's family (set by the report)
    values: list = field(default_factory=list)  # the per-seed differences, in the order of `seeds`

    @property
    def called(self) -> bool:
        """Whether the data show a difference: n >= MIN_SEEDS and the interval excludes 0."""
        return self.n >= MIN_SEEDS and self.low is not None and (self.low > 0 or self.high < 0)

    @property
    def detectable(self) -> float | None:
        return detectable(self.n, self.sd)

    def seeds_for(self, margin: float) -> int | None:
        return seeds_for(self.sd, margin)


@functools.cache  # a pure function of n, asked for every n up to MOST_SEEDS by each seeds_for
def _power_factor(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) + stats.t.ppf(POWER, n - 1))


def detectable(n: int, sd: float | None) -> float | None:
    """The smallest true paired difference n seeds of spread sd detect (5% two-sided, 80% power); None below 2."""
    if sd is None or n < 2:
        return None
    return _power_factor(n) * sd / math.sqrt(n)


def seeds_for(sd: float | None, margin: float) -> int | None:
    """The fewest seeds whose detectable difference is at most `margin` at spread sd (2 without spread); None when
    unknown (no spread measured) or beyond MOST_SEEDS."""
    if sd is None:
        return None
    return next((n for n in range(2, MOST_SEEDS + 1) if _power_factor(n) * sd / math.sqrt(n) <= margin), None)


def verdict_rule(n: int, low: float | None, high: float | None, margin: float) -> str:
    """The verdict of a paired difference against its reference from an interval [low, high]: matches (above
    -margin: an equivalence bound, not "includes 0"), falls short (below 0 and not matching), undetermined, or too
    few seeds (below MIN_SEEDS, or no interval). The one rule behind the report's verdicts, the figures' marks and
    --seeds=auto's stopping (at its own confidence)."""
    if n < MIN_SEEDS or low is None:
        return "too few seeds"
    if low > -margin:
        return "matches"
    if high < 0:
        return "falls short"
    return "undetermined"


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p values (same order), controlling the family-wise error over all of them."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def p_match(d: Difference, margin: float) -> float | None:
    """One-sided p of "the difference lies above -margin" (the equivalence half of a match); None below 2 seeds."""
    from scipy import stats

    if d.sd is None or d.n < 2:
        return None
    if d.sd < 1e-12:
        return 0.0 if d.mean > -margin else 1.0
    return float(stats.t.sf((d.mean + margin) / (d.sd / math.sqrt(d.n)), d.n - 1))


def p_value(differences: list[float]) -> float | None:
    """Two-sided p of a paired t test against no difference (0 or 1 without spread); None below 2 values."""
    from scipy import stats

    if len(differences) < 2:
        return None
    if max(differences) - min(differences) < 1e-12:
        return 1.0 if abs(statistics.fmean(differences)) < 1e-12 else 0.0
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


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
    sd = statistics.stdev(diffs) if len(diffs) > 1 else None
    return Difference(level, statistics.fmean(subject[s][1] for s in seeds), len(seeds), mean, low, high, seeds, sd,
                      p_value(diffs), values=diffs)


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


def holm_family(found: list[Comparison], by_k: list[dict]) -> dict:
    """Holm's correction over every interval the findings rest on: each comparison's difference at a pruned density
    (against no difference) and each ticket against its dense network across k (against the matching margin).
    Sets `p_holm` on the Differences and the across-k entries; returns the counts the findings state."""
    tested = [d for c in found for d in c.differences if d.level >= 1 and d.n >= MIN_SEEDS and d.p is not None]
    dense = [p for a in by_k for p in a["vs_dense"] if p["n"] >= MIN_SEEDS and p.get("p_match") is not None]
    adjusted = holm([d.p for d in tested] + [p["p_match"] for p in dense])
    for d, value in zip(tested, adjusted):
        d.p_holm = value
    for p, value in zip(dense, adjusted[len(tested):]):
        p["p_holm"] = value
    alpha = 1 - CONFIDENCE
    return {"intervals": len(adjusted), "differences": len(tested), "dense": len(dense),
            "called": sum(d.called for d in tested), "called_holm": sum(d.called and d.p_holm < alpha for d in tested),
            "matches": sum(p["verdict"] == "matches" for p in dense),
            "matches_holm": sum(p["verdict"] == "matches" and p["p_holm"] < alpha for p in dense)}


def bootstrap_smallest_k(by_k: dict[int, dict[int, float]], margin: float) -> tuple[int | None, int | None]:
    """A 95% bootstrap interval over seeds for the smallest k whose ticket-minus-dense difference matches (its t
    interval above -margin), from {k: {seed: difference}}: seeds resampled with replacement (RESAMPLES times,
    seeded), the smallest matching k found in each resample, its 2.5% and 97.5% quantiles in the order of k.
    None stands for "no k run matches" (beyond the largest k). Vectorised over resamples."""
    import numpy as np
    from scipy import stats

    seeds = sorted(set().union(*(set(v) for v in by_k.values()))) if by_k else []
    if len(seeds) < 2:
        return None, None
    ks = sorted(by_k)
    draws = np.random.default_rng(0).integers(len(seeds), size=(RESAMPLES, len(seeds)))
    matches = np.zeros((RESAMPLES, len(ks) + 1), dtype=bool)
    matches[:, -1] = True  # "no k matches" closes every row
    for i, k in enumerate(ks):
        values = np.array([by_k[k].get(seed, np.nan) for seed in seeds])[draws]  # resamples x seeds
        n = (~np.isnan(values)).sum(1)
        with warnings.catch_warnings():  # rows with fewer than 2 values are refused below
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, spread = np.nanmean(values, 1), np.nanstd(values, 1, ddof=1)
        spread = np.nan_to_num(spread)
        spread = np.where(spread < 1e-12, 0.0, spread)  # identical values: the interval is the value
        t = stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(n - 1, 1))
        matches[:, i] = (n >= 2) & (mean - t * spread / np.sqrt(np.maximum(n, 1)) > -margin)
    first = matches.argmax(1)
    low, high = (int(np.quantile(first, q, method="inverted_cdf")) for q in (0.025, 0.975))
    return (ks[low] if low < len(ks) else None), (ks[high] if high < len(ks) else None)
