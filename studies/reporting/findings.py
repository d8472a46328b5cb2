"""The report's findings: plain sentences generated from the paired intervals (reporting.paired), nothing else.

Each sentence names the comparison, the densities where the 95% interval of the paired difference
excludes 0 (with the difference in points, its interval and n), and says where no difference is
detected. With fewer than MIN_SEEDS seeds it says that nothing can be concluded. "No difference
detected" is not "equal": the sentence gives the interval, which bounds what the data cannot rule out.
"""

from __future__ import annotations

from .paired import MIN_SEEDS, Comparison, Difference


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


def sentence(c: Comparison) -> str:
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


def findings(comparisons: list[Comparison], notes: list[str], excluded: list[dict]) -> list[str]:
    """The findings, in the order a reader asks: pretext vs supervised at k, rewinding vs reset, controls."""
    order = ("pretext", "rewind_vs_reset", "control")
    lines = [sentence(c) for q in order for c in comparisons if c.question == q]
    lines += notes
    tested = [d for c in comparisons for d in c.differences if d.level >= 1 and d.n >= MIN_SEEDS]
    if len(tested) >= 5:
        lines.append(f"These rest on {len(tested)} intervals at 95%, uncorrected: even if no condition differed, about "
                     f"{0.05 * len(tested):.1f} of them would exclude 0 by chance, so a single call at one density is "
                     f"weak evidence on its own.")
    if excluded:
        lines.append(f"{len(excluded)} run(s) made under the earlier protocol (pretext levels trained [0, T)) are "
                     f"excluded; see 'Incomplete and excluded runs'.")
    return lines or ["Nothing to compare: the report needs at least two conditions of one setting, or controls."]
