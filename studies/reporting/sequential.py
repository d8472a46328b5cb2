"""Seeds until decided (`earlyphase study --seeds=auto`): which like-for-like comparisons are still undetermined.

A study with `--seeds=auto` runs MIN_SEEDS seeds, then adds `--seeds_batch` seeds at a time to the units of every
comparison (a pretext condition and its `rewind k`; rewinding to k and reset) whose verdict is undetermined at some
pruned density, until each is decided (matches or falls short at every pruned density) or has `--seeds_max` seeds.

Looking after every batch and stopping once decided would make a plain 95% interval too optimistic (optional
stopping). So the *stopping rule* uses intervals at 1 - 0.05 / L, L the number of looks the cap allows
(Bonferroni over the looks: the chance that any look of a comparison decides wrongly stays under 5%). An interval at
that confidence contains the 95% one on the same seeds, so a comparison decided by the rule has the same verdict in
the report's 95% intervals. The study records every look (study.json `seeds_auto`); the report shows at which n
each comparison was decided, and which were still undetermined at the cap.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..engine.checkpoints import read_json
from .findings import density
from .paired import CONFIDENCE, MIN_SEEDS, Comparison, Difference, comparisons, verdict_rule
from .runs import Condition

QUESTIONS = ("pretext", "rewind_vs_reset")  # the like-for-like comparisons; controls are not the study's question
DECIDED = ("matches", "falls short")


def looks(first: int, batch: int, cap: int) -> int:
    """How many times the rule can look: after the first seeds and after each batch up to the cap."""
    return 1 + math.ceil(max(0, cap - first) / batch)


def stop_confidence(n_looks: int) -> float:
    return 1 - (1 - CONFIDENCE) / n_looks


def verdict_at(d: Difference, margin: float, confidence: float) -> str:
    """The report's verdict (across.verdict) from an interval at `confidence` instead of 95%."""
    from scipy import stats

    if d.n < MIN_SEEDS or d.sd is None:
        return "too few seeds"
    half = 0.0 if d.sd < 1e-12 else stats.t.ppf(0.5 + confidence / 2, d.n - 1) * d.sd / math.sqrt(d.n)
    return verdict_rule(d.n, d.mean - half, d.mean + half, margin)


def status(conditions: list[Condition], margin: float, confidence: float) -> list[dict]:
    """Each like-for-like comparison's verdicts at its pruned densities under the stopping rule, its n, whether it
    is decided, and the IMP runs of its two sides (so the study finds the units to give more seeds)."""
    found, _ = comparisons(conditions)
    return [_status(c, margin, confidence) for c in found if c.question in QUESTIONS]


def _status(c: Comparison, margin: float, confidence: float) -> dict:
    pruned = [d for d in c.differences if d.level >= 1]
    verdicts = {density(d.density): verdict_at(d, margin, confidence) for d in pruned}
    open_ = [d for d in pruned if verdict_at(d, margin, confidence) not in DECIDED]
    needed = [d.seeds_for(margin) for d in open_]  # the n whose detectable difference is the margin (None: > 1000)
    return {"subject": c.subject_label, "reference": c.reference_label, "n": min((d.n for d in pruned), default=0),
            "verdicts": verdicts, "decided": not open_,
            "seeds_needed": None if not needed or None in needed else max(needed),
            "runs": sorted(str(Path(r).resolve()) for r in c.subject.runs + c.reference.runs)}


def recorded(folders) -> list[dict]:
    """The `seeds_auto` records of the study folders among `folders` (a study.json beside them), for the report."""
    out = []
    for folder in folders:
        study = read_json(Path(folder) / "study.json", missing_ok=True) or {}
        if isinstance(study, dict) and isinstance(study.get("seeds_auto"), dict):
            out.append(study["seeds_auto"])
    return out


def sentences(records: list[dict]) -> list[str]:
    """At which n each comparison was decided (the n where the rule stopped adding seeds), or that it was not."""
    lines = []
    for record in records:
        rounds = record.get("looks_taken") or []
        if not rounds:
            continue
        lines.append(f"Seeds were added until decided (`--seeds=auto`): {record['first']} seeds, then "
                     f"{record['batch']} at a time up to {record['cap']}, each comparison stopping when its verdict "
                     f"at every pruned density was decided by intervals at {100 * record['confidence']:.4g}% (up to "
                     f"{record['looks']} looks, Bonferroni over them, so optional stopping keeps 5% overall); the "
                     f"comparisons below show the 95% intervals on the seeds each ended with.")
        history: dict[tuple, list[dict]] = {}
        for look in rounds:
            for s in look["comparisons"]:
                seen = history.setdefault((s["subject"], s["reference"]), [])
                if not seen or seen[-1]["n"] != s["n"]:
                    seen.append(s)
        for (subject, reference), seen in history.items():
            s = seen[-1]
            earlier = [str(e["n"]) for e in seen[:-1] if not e["decided"]]
            before = f" (undetermined at n = {', '.join(earlier)})" if earlier else ""
            if s["decided"]:
                shown = ", ".join(f"{v} at {d}" for d, v in s["verdicts"].items())
                lines.append(f"**{subject}** against **{reference}**: decided at n = {s['n']}{before}: {shown}.")
                continue
            open_ = ", ".join(d for d, v in s["verdicts"].items() if v not in DECIDED)
            need = ("" if "seeds_needed" not in s else  # a look recorded before this estimate was
                    f"; about {s['seeds_needed']} seeds would detect a difference of the margin from the observed "
                    f"spread (`--seeds_max`)" if s["seeds_needed"] else
                    "; the observed spread would need more than 1,000 seeds")
            lines.append(f"**{subject}** against **{reference}**: still undetermined at n = {s['n']}{before} at "
                         f"{open_ or 'no pruned density'}{need}.")
    return lines


def as_json(records: list[dict]) -> list[dict]:
    return json.loads(json.dumps(records))  # a copy, plain JSON
