"""The report's findings: plain sentences generated from the paired intervals (reporting.paired), nothing else.

Each sentence names the comparison, the densities where the 95% interval of the paired difference
excludes 0 (with the difference in points, its interval and n), and says where no difference is
detected. With fewer than MIN_SEEDS seeds it says that nothing can be concluded. "No difference
detected" is not "equal": the sentence gives the interval, which bounds what the data cannot rule out.
"""

from __future__ import annotations

from .paired import MIN_SEEDS, MOST_SEEDS, Comparison, Difference


def density(d: float) -> str:
    return f"{100 * d:.3g}%"


def points(x: float) -> str:
    return f"{100 * x:+.2f}"


def bounds(d: Difference) -> str:
    """` [-2.31, -0.09]`: the interval in points, or nothing where there is none (fewer than 2 seeds)."""
    return f" [{points(d.low)}, {points(d.high)}]" if d.low is not None else ""


def interval_text(d: Difference) -> str:
    """`-1.20 points [-2.31, -0.09] at 1.56% (n = 3)`."""
    return f"{points(d.mean)} points{bounds(d)} at {density(d.density)} (n = {d.n})"


_VERBS = {  # question -> (subject better, subject worse, no difference detected)
    "pretext": ("exceeds", "falls short of", "is not distinguishable from"),
    "rewind_vs_reset": ("beats", "falls below", "is not distinguishable from"),
    "control": ("beats", "falls below", "is not distinguishable from"),
}


def _what(c: Comparison) -> tuple[str, str]:
    """(subject, reference) as a sentence names them."""
    if c.question == "pretext":
        return f"**{c.subject.label}**", f"supervised rewinding to the same k (**{c.reference.label}**)"
    if c.question == "rewind_vs_reset":
        return f"Rewinding (**{c.subject.label}**)", "resetting to the initialisation (**reset**)"
    return f"The ticket of **{c.subject.label}**", f"its control **{c.reference_kind}**"


def power_text(d: Difference, margin: float) -> str:
    """How large a difference these seeds could see at this density, and how many seeds would see the margin."""
    if d.detectable is None:
        return ""
    need = d.seeds_for(margin)
    more = (f"{need} seeds would detect {100 * margin:g} point{'s' * (margin != 0.01)}" if need else
            f"no number of seeds up to {MOST_SEEDS} would detect {100 * margin:g} point{'s' * (margin != 0.01)}")
    return (f" With n = {d.n}, the smallest difference these seeds could detect at {density(d.density)} is "
            f"{100 * d.detectable:.2f} points (5% two-sided, 80% power, from the observed spread); {more}.")


def sentence(c: Comparison, margin: float = 0.01) -> str:
    pruned = [d for d in c.differences if d.level >= 1 and d.n >= MIN_SEEDS]
    text = _sentence(c) + (power_text(min(pruned, key=lambda d: d.density), margin) if pruned else "")
    dense = next((d for d in c.differences if d.level == 0), None) if c.question == "pretext" else None
    if dense is not None and dense.called:
        text += (f" Its dense network (level 0) already {'trails' if dense.mean < 0 else 'leads'} rewind k's by "
                 f"{points(dense.mean)} points{bounds(dense)}: the tickets start from that network, so part of any "
                 f"difference is the pretraining's, not the ticket's.")
    return text


def _sentence(c: Comparison) -> str:
    subject, reference = _what(c)
    pruned = [d for d in c.differences if d.level >= 1]
    if not pruned:
        return f"{subject} vs {reference}: no pruned level with seeds in common yet."
    n = max(d.n for d in pruned)
    if n < MIN_SEEDS:
        return (f"{subject} vs {reference}: {n} seed{'s' * (n != 1)} in common, too few to conclude anything "
                f"({MIN_SEEDS} or more are needed).")
    better, worse, same = _VERBS[c.question]
    above = [d for d in pruned if d.called and d.mean > 0]
    below = [d for d in pruned if d.called and d.mean < 0]
    parts = []
    if below:
        parts.append(f"{subject} {worse} {reference} at {len(below)} of {len(pruned)} pruned densities: "
                     + "; ".join(interval_text(d) for d in below))
    if above:
        lead = f"{subject} {better} {reference}" if not below else f"it {better} it"
        parts.append(f"{lead} at {len(above)} of {len(pruned)} pruned densities: "
                     + "; ".join(interval_text(d) for d in above))
    if not parts:
        sparsest = min(pruned, key=lambda d: d.density)
        return (f"{subject} {same} {reference} at any of the {len(pruned)} pruned densities (the 95% intervals "
                f"include 0; at the sparsest: {interval_text(sparsest)}).")
    rest = [d for d in pruned if not d.called]
    if rest:
        parts.append("no difference is detected at " + ", ".join(density(d.density) for d in rest))
    return "; ".join(parts) + "."


def family_sentence(family: dict) -> str:
    """What Holm's correction over every interval the findings rest on leaves standing (paired.holm_family)."""
    n = family["intervals"]
    text = (f"These findings rest on {n} intervals at 95% ({family['differences']} differences at pruned densities"
            + (f", {family['dense']} tickets against their dense networks across k" if family["dense"] else "")
            + f"); uncorrected, about {0.05 * n:.1f} of them would exclude 0 (or match) by chance even if no condition "
            f"differed. With Holm's correction over all {n}, {family['called_holm']} of the {family['called']} "
            f"differences called still are")
    if family["dense"]:
        text += (f" and {family['matches_holm']} of the {family['matches']} matches across k still match (choosing "
                 f"the smallest matching k among several is part of that family)")
    return text + "; the intervals shown are the uncorrected ones."


def findings(comparisons: list[Comparison], notes: list[str], excluded: list[dict], family: dict | None = None,
             margin: float = 0.01) -> list[str]:
    """The findings, in the order a reader asks: pretext vs supervised at k, rewinding vs reset, controls."""
    order = ("pretext", "rewind_vs_reset", "control")
    lines = [sentence(c, margin) for q in order for c in comparisons if c.question == q]
    lines += notes
    if family and family["intervals"] >= 5:
        lines.append(family_sentence(family))
    if excluded:
        lines.append(f"{len(excluded)} run(s) made under the earlier protocol (pretext levels trained [0, T)) are "
                     f"excluded; see 'Incomplete and excluded runs'.")
    return lines or ["Nothing to compare: the report needs at least two conditions of one setting, or controls."]
