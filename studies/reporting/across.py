"""The report's answers across k and across pretraining length, as the paper's figures give them.

- Across k (`by_k`, the paper's first figure), for each setting with rewinding (reset = k 0 and `rewind K`)
  at two or more k: ticket accuracy at each table density against k, the paired difference of each k to
  reset, and the paired difference of each ticket to *the same seed's dense network* (its run's level 0).
  A ticket *matches* the dense network when that interval lies above -margin (`--match_margin`, 1 point by
  default): an equivalence bound, not "the interval includes 0", which more noise would make easier. The
  finding is the smallest k that matches at each density. Pretext conditions appear at their k as markers.
- Across budget (`by_budget`, the paper's Section 5), for each pretext task (and its options) of a setting
  run at two or more budgets: ticket accuracy against the budget k beside supervised rewinding to the same
  k (`rewind k`, the like-for-like reference every study runs) and reset; the paired difference task -
  `rewind k` per budget. At a budget the task *matches* when that interval lies above -margin at every pruned
  table density, *falls short* when it excludes 0 from below at one of them without matching there, and is
  *undetermined* otherwise; with fewer than MIN_SEEDS seeds nothing is concluded. Where both have stability
  analyses, the verdicts at the rewind point are set side by side.
Every interval is paired by seed (reporting.paired) and every point is one of the ticket table's densities.
"""

from __future__ import annotations

import json
import math
import statistics

from ..engine import dataset_registry
from ..jobs.identity import task_label
from . import stability as stability_report
from .arguments import DEFAULT_MARGIN
from .findings import density, points
from .paired import CONFIDENCE, MIN_SEEDS, RESAMPLES, Difference, bootstrap_smallest_k, p_match, paired, verdict_rule
from .runs import Condition, by_seed, by_setting


def verdict(d: Difference | None, margin: float) -> str:
    """matches (interval above -margin), falls short (interval below 0, not matching), undetermined, or too few
    seeds / missing."""
    return "missing" if d is None else verdict_rule(d.n, d.low, d.high, margin)


def mean_interval(values: list[float]) -> dict:
    """Mean over seeds with the 95% t interval of the mean (none below 2 values), as fractions."""
    from scipy import stats

    mean = statistics.fmean(values)
    half = None
    if len(values) > 1:
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"n": len(values), "mean": mean, "std": statistics.stdev(values) if len(values) > 1 else None,
            "low": None if half is None else mean - half, "high": None if half is None else mean + half}


def _point(c: Condition, level: int, kind: str = "trunk") -> dict | None:
    """A condition's accuracy at one level: mean and interval over seeds, each seed's value (in the order of seeds,
    so the same records give the same numbers in any order)."""
    found = by_seed(c.records, level, kind)
    if not found:
        return None
    seeds = sorted(found)
    accs = [found[s][0] for s in seeds]
    return {"label": c.label, "k": c.k, "budget": c.budget, "task": c.task, "level": level, **mean_interval(accs),
            "seeds": seeds, "values": accs, "density": statistics.fmean(found[s][1] for s in seeds)}


def condition_points(c: Condition | None, levels: list[tuple[int, float]]) -> list[dict]:
    return [p for p in (_point(c, lvl) for lvl, _ in levels) if p] if c is not None else []


def difference_row(d: Difference | None, margin: float | None = None, **extra) -> dict | None:
    if d is None:
        return None
    out = {**extra, "level": d.level, "density": d.density, "n": d.n, "mean": d.mean, "low": d.low, "high": d.high,
           "called": d.called, "p": d.p, "detectable": d.detectable, "seeds": d.seeds, "values": d.values}
    if margin is not None:
        out |= {"verdict": verdict(d, margin), "p_match": p_match(d, margin), "seeds_for_margin": d.seeds_for(margin)}
    return out


def margin_images(group: list[Condition], margin: float) -> float | None:
    """The margin in test images of the setting's dataset (None for a dataset earlyphase does not know)."""
    try:
        return margin * dataset_registry.entry(str(group[0].details.get("dataset"))).test_images or None
    except KeyError:
        return None


def margin_text(answer: dict) -> str:
    """`1 point (3.6 of the 360 test images)`."""
    margin = answer["margin"]
    text = f"{100 * margin:g} point{'s' * (margin != 0.01)}"
    if answer.get("margin_images"):
        text += f" ({answer['margin_images']:.3g} of the {round(answer['margin_images'] / margin):,} test images)"
    return text


def pruned_levels(columns: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return [(lvl, d) for lvl, d in columns if lvl >= 1]


def dense_by_seed(conditions: list[Condition]) -> dict:
    """{seed: (accuracy, density)} of the dense network (level 0) of reset and rewinding runs: one dense run per
    seed, whatever k its run rewinds to (each seed's first found)."""
    out = {}
    for c in conditions:
        if c.kind in ("reset", "rewind"):
            for seed, value in by_seed(c.records, 0).items():
                out.setdefault(seed, value)
    return out


# ------------------------------------------------------------------------------------------ across k
def across_k(group: list[Condition], columns: list[tuple[int, float]], found, margin: float) -> dict | None:
    """One setting's answer across k, or None with fewer than two k of rewinding."""
    rewinding = sorted((c for c in group if c.kind in ("reset", "rewind")), key=lambda c: c.k or 0)
    if len({c.k for c in rewinding}) < 2:
        return None
    levels = pruned_levels(columns)
    dense = dense_by_seed(group)
    vs_reset = {x.subject.label: x for x in found if x.question == "rewind_vs_reset" and x.subject in rewinding}
    out = {"setting": _setting_name(group), "margin": margin, "margin_images": margin_images(group, margin),
           "levels": [lvl for lvl, _ in levels],
           "densities": [d for _, d in levels],
           "dense": mean_interval([a for a, _ in dense.values()]) if dense else None,
           "points": [], "vs_reset": [], "vs_dense": [], "pretext": [], "smallest_matching_k": []}
    for c in rewinding:
        for lvl, _ in levels:
            out["points"].append(_point(c, lvl))
            ref = vs_reset.get(c.label)
            d = next((d for d in ref.differences if d.level == lvl), None) if ref else None
            out["vs_reset"].append(difference_row(d, label=c.label, k=c.k))
            out["vs_dense"].append(difference_row(paired(by_seed(c.records, lvl), dense, lvl, same_density=False),
                                               margin, label=c.label, k=c.k))
    for c in (c for c in group if c.kind == "pretext"):
        out["pretext"] += [_point(c, lvl) for lvl, _ in levels]
    for key in ("points", "vs_reset", "vs_dense", "pretext"):
        out[key] = [p for p in out[key] if p is not None]
    for lvl, d in levels:
        at = [p for p in out["vs_dense"] if p["level"] == lvl]
        matching = [p["k"] for p in at if p["verdict"] == "matches"]
        per_seed = {c.k or 0: {s: a - dense[s][0] for s, (a, _) in by_seed(c.records, lvl).items() if s in dense}
                    for c in rewinding}
        low, high = bootstrap_smallest_k({k: v for k, v in per_seed.items() if v}, margin)
        out["smallest_matching_k"].append({"level": lvl, "density": d, "k": min(matching) if matching else None,
                                           "n": max((p["n"] for p in at), default=0),
                                           "bootstrap": {"low": low, "high": high, "resamples": RESAMPLES}})
    return out


# ------------------------------------------------------------------------------------------ across budget
def _series_key(c: Condition) -> str:
    own = {k: v for k, v in (c.details.get("pretext") or {}).items() if k not in ("pretrain_steps",
                                                                               "pretrain_iterations")}
    return json.dumps(own, sort_keys=True, default=str)


def _series_name(own: dict) -> str:
    return task_label(own.get("name", "?"), own.get("variant")) + (" sparse" if own.get("sparse") else "")


def across_budget(group: list[Condition], columns: list[tuple[int, float]], found, margin: float,
                  stability: str | None) -> list[dict]:
    """Per pretext task of one setting run at two or more budgets: its points, its reference's, the paired
    differences and a verdict per budget."""
    levels = pruned_levels(columns)
    rewinds = {c.k: c for c in group if c.kind == "rewind"}
    reset = next((c for c in group if c.kind == "reset"), None)
    series: dict[str, list[Condition]] = {}
    for c in sorted((c for c in group if c.kind == "pretext"), key=lambda c: c.k or 0):
        series.setdefault(_series_key(c), []).append(c)
    names = [_series_name(json.loads(key)) for key in series]
    setting = stability_report.setting_in_use(group, stability)
    out = []
    for (key, members), name in zip(series.items(), names):
        if len({c.k for c in members}) < 2:
            continue
        label = name if names.count(name) == 1 else f"{name} {json.loads(key).get('options')}"
        budgets = []
        for c in members:
            reference = rewinds.get(c.k)
            comparison = next((x for x in found if x.question == "pretext" and x.subject is c), None)
            diffs = [next((d for d in comparison.differences if d.level == lvl), None) if comparison else None
                     for lvl, _ in levels]
            dense_diff = next((d for d in comparison.differences if d.level == 0), None) if comparison else None
            budgets.append({
                "budget": c.budget, "k": c.k, "label": c.label, "reference": reference.label if reference else None,
                "points": condition_points(c, levels), "reference_points": condition_points(reference, levels),
                "differences": [x for x in (difference_row(d, margin) for d in diffs) if x],
                "verdict": budget_verdict(diffs, margin, reference is not None),
                "stability": _stability(c, reference, setting),
                **own_dense(c, reference, dense_diff, levels, margin),
            })
        out.append({"task": name, "label": label, "setting": _setting_name(group), "margin": margin,
                    "margin_images": margin_images(group, margin),
                    "scoring_iterations": json.loads(key).get("scoring_iterations"),
                    "levels": [lvl for lvl, _ in levels], "densities": [d for _, d in levels], "budgets": budgets,
                    "reset_points": condition_points(reset, levels)})
    return out


def own_dense(c: Condition, reference: Condition | None, dense_diff: Difference | None,
              levels: list[tuple[int, float]], margin: float) -> dict:
    """A pretext condition beside its own dense network (its runs' level 0): that network's accuracy and its paired
    difference to the reference's, and each ticket minus its own dense network, so "pretraining damaged the
    network" and "the ticket is worse" are told apart."""
    dense = by_seed(c.records, 0)
    ref_dense = by_seed(reference.records, 0) if reference else {}
    return {"dense": mean_interval([a for a, _ in dense.values()]) if dense else None,
            "reference_dense": mean_interval([a for a, _ in ref_dense.values()]) if ref_dense else None,
            "dense_difference": difference_row(dense_diff),
            "vs_own_dense": [x for x in (difference_row(paired(by_seed(c.records, lvl), dense, lvl, same_density=False),
                                                     margin) for lvl, _ in levels) if x]}


def budget_verdict(diffs: list[Difference | None], margin: float, has_reference: bool) -> str:
    if not has_reference:
        return "no reference"
    verdicts = [verdict(d, margin) for d in diffs]
    if not verdicts or any(v in ("missing", "too few seeds") for v in verdicts):
        return "too few seeds" if "too few seeds" in verdicts else "missing"
    if all(v == "matches" for v in verdicts):
        return "matches"
    return "falls short" if "falls short" in verdicts else "undetermined"


def _stability(c: Condition, reference: Condition | None, setting: str | None) -> dict | None:
    if setting is None or reference is None:
        return None
    own, ref = stability_report.summary(c, 0, setting), stability_report.summary(reference, 0, setting)
    if own is None or ref is None:
        return None
    return {"setting": setting, "task": own["verdict"], "reference": ref["verdict"],
            "agree": own["verdict"] == ref["verdict"]}


def _setting_name(group: list[Condition]) -> str:
    return ", ".join(c.label for c in group)


def answers(conditions: list[Condition], found, columns_of, margin: float = DEFAULT_MARGIN,
            stability: str | None = None) -> tuple[list[dict], list[dict]]:
    """(by_k, by_budget) over every setting; columns_of(group) gives a setting's table (level, density) columns."""
    by_k, by_budget = [], []
    for group in by_setting(conditions):
        columns = columns_of(group)
        k = across_k(group, columns, found, margin)
        if k:
            by_k.append(k)
        by_budget += across_budget(group, columns, found, margin, stability)
    return by_k, by_budget


# ------------------------------------------------------------------------------------------ sentences
def _at(p: dict) -> str:
    return f"{points(p['mean'])} [{points(p['low'])}, {points(p['high'])}]" if p["low"] is not None else \
        points(p["mean"])


def sentences_k(answer: dict) -> list[str]:
    margin = margin_text(answer)
    n = max((p["n"] for p in answer["vs_dense"]), default=0)
    if n < MIN_SEEDS:
        return [f"Across k: {n} seed{'s' * (n != 1)} per k, too few to say from which k tickets match the dense "
                f"network ({MIN_SEEDS} or more are needed)."]
    parts = []
    for row in answer["smallest_matching_k"]:
        at = sorted((p for p in answer["vs_dense"] if p["level"] == row["level"]), key=lambda p: p["k"])
        if row["k"] is not None:
            first = next(p for p in at if p["k"] == row["k"])
            later = [p["k"] for p in at if p["k"] > row["k"] and p["verdict"] != "matches"]
            text = f"at {density(row['density'])} from k = {row['k']}it ({_at(first)})"
            if later:  # not monotone: every k's verdict, so the pattern is not hidden behind "from k"
                text += (", though not at every larger k (by k: "
                         + ", ".join(f"{p['k']}it {p['verdict']}" for p in at) + ")")
        else:
            best = max(at, key=lambda p: p["low"] if p["low"] is not None else -math.inf)
            text = f"at {density(row['density'])} at no k run (closest: k = {best['k']}it, {_at(best)})"
        boot = row.get("bootstrap") or {}
        if boot.get("low") is not None or boot.get("high") is not None:
            name = lambda k: f"{k}it" if k is not None else "none run"  # noqa: E731
            text += f"; bootstrap 95% interval of that smallest k: {name(boot['low'])} to {name(boot['high'])}"
        parts.append(text)
    ks = sorted({p["k"] for p in answer["vs_dense"]})
    return [f"Across k ({', '.join(f'{k}it' for k in ks)}; reset is k = 0): tickets match the dense network "
            f"(the 95% interval of ticket minus the same seed's dense network lies above -{margin}) "
            + "; ".join(parts) + "."]


def sentences_budget(series: dict, stability_shown: bool = True) -> list[str]:
    margin = margin_text(series)
    budgets = series["budgets"]
    by = {v: [b for b in budgets if b["verdict"] == v] for v in ("matches", "falls short", "undetermined",
                                                                 "too few seeds", "no reference", "missing")}
    head = (f"**{series['label']}** against supervised rewinding to the same k (matching: the 95% interval of the "
            f"paired difference lies above -{margin} at every pruned density"
            + (f"; each seed also cost {series['scoring_iterations']} iterations of scoring runs, not part of k"
               if series.get("scoring_iterations") else "") + ")")
    if not (by["matches"] or by["falls short"] or by["undetermined"]):
        return [f"{head}: nothing can be concluded at any budget (too few seeds or no reference)."]
    parts = []
    if by["matches"]:
        names = [b["budget"] for b in by["matches"]]
        tail = ""
        first = budgets.index(by["matches"][0])
        if len(names) > 1 and all(b["verdict"] == "matches" for b in budgets[first:]):
            tail = f", from {names[0]} on" if first > 0 else ", at every budget run"
        parts.append(f"matches at {', '.join(names)}{tail}")
    if by["falls short"]:
        parts.append("falls short at " + "; ".join(f"{b['budget']} ({_worst(b)})" for b in by["falls short"]))
    if by["undetermined"]:
        parts.append("is undetermined at " + ", ".join(b["budget"] for b in by["undetermined"]))
    rest = by["too few seeds"] + by["no reference"] + by["missing"]
    if rest:
        parts.append("cannot be judged at " + ", ".join(f"{b['budget']} ({b['verdict']})" for b in rest))
    text = f"{head}: " + "; ".join(parts) + "."
    damaged = [b for b in budgets if (b.get("dense_difference") or {}).get("called")
               and b["dense_difference"]["mean"] < 0]
    if damaged:
        text += " Its own dense network is already worse than rewind k's at " + "; ".join(
            f"{b['budget']} ({100 * b['dense']['mean']:.1f}% vs {100 * b['reference_dense']['mean']:.1f}%, "
            f"{_at(b['dense_difference'])}; its sparsest ticket against its own dense network: "
            f"{_at(min(b['vs_own_dense'], key=lambda d: d['density']))})" for b in damaged if b["vs_own_dense"]) + \
            ": there the pretraining damaged the network, and a shortfall is not the ticket's alone."
    judged = [b for b in budgets if b["stability"]]
    if stability_shown and judged:
        agree = [b for b in judged if b["stability"]["agree"]]
        text += (f" Its stability verdict at the rewind point agrees with rewind k's at {len(agree)} of {len(judged)} "
                 f"budgets (" + "; ".join(f"{b['budget']}: {b['stability']['task']}"
                                          + ("" if b["stability"]["agree"] else f" vs {b['stability']['reference']}")
                                          for b in judged) + ").")
    return [text]


def _worst(budget: dict) -> str:
    """The density where the task falls short of rewind k by most, with its interval."""
    short = [d for d in budget["differences"] if d["verdict"] == "falls short"]
    d = min(short, key=lambda d: d["mean"])
    text = f"at {density(d['density'])}: {_at(d)}"
    largest = min(budget["differences"], key=lambda d: d["mean"])
    if largest["mean"] < d["mean"]:  # a larger mean shortfall whose interval is too wide to call: say so
        text += f"; larger in the mean at {density(largest['density'])}, {_at(largest)}, but not called there"
    return text


def sentences(by_k: list[dict], by_budget: list[dict]) -> list[str]:
    return [s for a in by_k for s in sentences_k(a)] + [s for b in by_budget for s in sentences_budget(b)]
