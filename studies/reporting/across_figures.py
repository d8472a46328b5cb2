"""The figures and pivoted tables of the answers across k and across budget (reporting.across).

- accuracy_vs_k.png: per setting, ticket test accuracy against k (reset at k = 0 on a symlog axis, ticks at the k
  values run, labelled as the text labels them), one line per table density with the 95% interval of the mean over
  seeds, the dense network as a band, the smallest k whose ticket matches the dense network ringed; pretext
  conditions as markers with their intervals beside their k (offset, so they do not hide the rewinding line);
  beside it the paired difference of each k to reset, per density, marked by verdict (figure_marks).
- pretext_vs_budget.png: per task, ticket accuracy against its budget k (solid) beside supervised rewinding to the
  same k (dashed), reset (dotted, labelled at the right edge) and the dense networks (grey: rewinding's, and the
  task's own at each budget, so a damaged network shows); beside it the paired difference task - rewind k per
  budget, marked by verdict, with the matching bound -margin and each seed's difference.
Legends stand outside the axes; y axes of accuracy end at 100.
"""

from __future__ import annotations

from pathlib import Path

from . import figure_marks as marks
from .findings import density, points
from .plotting import finish, pyplot

MARKERS = "s^vD<>PX*"
VERDICT_WORDS = {"matches": "matches", "falls short": "short", "undetermined": "undetermined",
                 "too few seeds": "too few seeds", "missing": "-"}


def _style(ax, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _bars(rows: list[dict], scale: float = 100.0) -> list[list[float]]:
    return [[scale * (r["mean"] - r["low"]) if r["low"] is not None else 0 for r in rows],
            [scale * (r["high"] - r["mean"]) if r["high"] is not None else 0 for r in rows]]


def _offset(k: int, i: int, n: int) -> float:
    """k shifted a little per density, so error bars of one k do not cover each other."""
    return k * (1 + 0.06 * (i - (n - 1) / 2)) if k > 0 else 0.08 * (i - (n - 1) / 2)


def _beside(k: int, j: int) -> float:
    """Where pretext task j's marker stands: right of k, clear of the densities' offsets."""
    return k * (1.28 + 0.14 * j)


def _cap_accuracy(ax) -> None:
    low, high = ax.get_ylim()
    ax.set_ylim(low, min(high, 100.0))


def _labels(points_: list[dict]) -> dict[int, str]:
    return {p["k"]: p.get("budget") or f"{p['k']}it" for p in points_}


def accuracy_vs_k(by_k: list[dict], path: Path) -> bool:
    if not by_k:
        return False
    plt = pyplot()  # before any matplotlib import: it sets the backend (a bad MPLBACKEND stops matplotlib's import)
    from matplotlib.lines import Line2D

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(by_k), 2, figsize=(13, 4.2 * len(by_k) + 0.4), squeeze=False)
    for (left, right), answer in zip(axes, by_k):
        levels = sorted({p["level"] for p in answer["points"]})
        tasks = sorted({p["task"] for p in answer["pretext"]})
        handles = []
        if answer["dense"]:
            dense = answer["dense"]
            if dense["low"] is not None:
                left.axhspan(100 * dense["low"], 100 * dense["high"], color="grey", alpha=0.18)
            left.axhline(100 * dense["mean"], color="grey", lw=0.8)
            handles.append(plt.Rectangle((0, 0), 1, 1, color="grey", alpha=0.3, label="dense network (95% interval)"))
        smallest = {s["level"]: s["k"] for s in answer["smallest_matching_k"]}
        for i, level in enumerate(levels):
            colour = colours[i % len(colours)]
            rows = sorted((p for p in answer["points"] if p["level"] == level), key=lambda p: p["k"])
            x = [_offset(p["k"], i, len(levels)) for p in rows]
            left.errorbar(x, [100 * p["mean"] for p in rows], yerr=_bars(rows), fmt="-o", ms=4, color=colour,
                          capsize=2, lw=1.2)
            handles.append(Line2D([], [], color=colour, marker="o", ms=4, label=f"{density(rows[0]['density'])} "
                                  "of weights"))
            first = next((p for p in rows if p["k"] == smallest.get(level)), None)
            if first is not None:
                left.plot([_offset(first["k"], i, len(levels))], [100 * first["mean"]], "o", ms=13, mfc="none",
                          color=colour, mew=1.5)
            for j, task in enumerate(tasks):
                marks_ = [p for p in answer["pretext"] if p["level"] == level and p["task"] == task]
                left.errorbar([_beside(p["k"], j) for p in marks_], [100 * p["mean"] for p in marks_],
                              yerr=_bars(marks_), fmt=MARKERS[j % len(MARKERS)], ms=6, color=colour,
                              markeredgecolor="black", mew=0.5, capsize=2, lw=0.8)
            marks.differences(right, sorted((r for r in answer["vs_reset"] if r["level"] == level),
                                            key=lambda r: r["k"]),
                              lambda r, i=i: _offset(r["k"], i, len(levels)), colour, answer["margin"])
        if smallest and any(v is not None for v in smallest.values()):
            handles.append(Line2D([], [], ls="none", marker="o", ms=11, mfc="none", color="black", mew=1.5,
                                  label="smallest k that matches\nthe dense network"))
        handles += [Line2D([], [], ls="none", marker=MARKERS[j % len(MARKERS)], color="lightgrey",
                           markeredgecolor="black", label=f"{task} (beside its k)") for j, task in enumerate(tasks)]
        labels = _labels(answer["points"])
        marks.k_axis(left, labels | _labels(answer["pretext"]), "rewind step k")
        beside = [_beside(p["k"], j) for j, task in enumerate(tasks) for p in answer["pretext"] if p["task"] == task]
        if beside:  # the markers right of the largest k stay inside the frame
            left.set_xlim(right=max(left.get_xlim()[1], 1.15 * max(beside)))
        marks.k_axis(right, {k: v for k, v in labels.items() if k > 0}, "rewind step k")
        marks.bound(right, answer["margin"])
        _cap_accuracy(left)
        _style(left, "Ticket accuracy against the rewind step k (mean, 95% interval)", "test accuracy (%)")
        _style(right, "Rewinding to k minus reset, paired by seed (95% interval)", "difference (points)")
        marks.outside(left, handles)
        density_handles = [Line2D([], [], color=colours[i % len(colours)], lw=3,
                                  label=density(next(p["density"] for p in answer["points"] if p["level"] == lvl)))
                           for i, lvl in enumerate(levels)]
        marks.outside(right, density_handles + marks.verdict_handles())
    return finish(plt, fig, path, "Across k: one line per density, pretext conditions as markers beside their k; "
                  "differences marked by verdict")


def pretext_vs_budget(by_budget: list[dict], path: Path) -> bool:
    if not by_budget:
        return False
    plt = pyplot()  # before any matplotlib import: it sets the backend (a bad MPLBACKEND stops matplotlib's import)
    from matplotlib.lines import Line2D

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(by_budget), 2, figsize=(13, 4.0 * len(by_budget) + 0.4), squeeze=False)
    extent = []
    for (left, right), series in zip(axes, by_budget):
        budgets = series["budgets"]
        n = len(series["densities"])
        for i, (lvl, d) in enumerate(zip(series["levels"], series["densities"])):
            colour = colours[i % len(colours)]
            own = [(b["k"], p) for b in budgets for p in b["points"] if p["level"] == lvl]
            ref = [(b["k"], p) for b in budgets for p in b["reference_points"] if p["level"] == lvl]
            for rows, style in ((own, "-o"), (ref, "--s")):
                if rows:
                    left.errorbar([_offset(k, i, n) for k, _ in rows], [100 * p["mean"] for _, p in rows],
                                  yerr=_bars([p for _, p in rows]), fmt=style, ms=4, color=colour, capsize=2,
                                  lw=1.2 if style == "-o" else 0.9)
            for p in series["reset_points"]:
                if p["level"] == lvl:
                    left.axhline(100 * p["mean"], color=colour, ls=":", lw=1)
                    left.annotate(f"reset {density(d)}", (0.0, 100 * p["mean"]), xycoords=("axes fraction", "data"),
                                  xytext=(3, 1), textcoords="offset points", fontsize=6, color=colour, va="bottom")
            diffs = [dict(x, k=b["k"]) for b in budgets for x in b["differences"] if x["level"] == lvl]
            marks.differences(right, diffs, lambda x, i=i: _offset(x["k"], i, n), colour, series["margin"])
            extent += marks.row_extent(diffs, series["margin"])
        ref_dense = [(b["k"], b["reference_dense"]) for b in budgets if b.get("reference_dense")]
        own_dense = [(b["k"], b["dense"]) for b in budgets if b.get("dense")]
        if ref_dense:
            left.plot([k for k, _ in ref_dense], [100 * p["mean"] for _, p in ref_dense], "--", color="grey", lw=1.5)
        if own_dense:
            left.errorbar([k for k, _ in own_dense], [100 * p["mean"] for _, p in own_dense],
                          yerr=_bars([p for _, p in own_dense]), fmt="-D", color="grey", ms=4, lw=1.5, capsize=2)
        handles = [Line2D([], [], color="black", ls="-", marker="o", ms=4, label=series["label"]),
                   Line2D([], [], color="black", ls="--", marker="s", ms=4, label="rewind k (same k)"),
                   Line2D([], [], color="black", ls=":", label="reset (k = 0)"),
                   Line2D([], [], color="grey", ls="-", marker="D", ms=4, label=f"dense: {series['label']}'s own"),
                   Line2D([], [], color="grey", ls="--", lw=1.5, label="dense: rewind k's")]
        handles += [Line2D([], [], color=colours[i % len(colours)], lw=3, label=f"{density(d)} of weights")
                    for i, d in enumerate(series["densities"])]
        labels = {b["k"]: b["budget"] for b in budgets}
        for ax in (left, right):
            marks.k_axis(ax, labels, "pretraining budget k")
        marks.bound(right, series["margin"])
        _cap_accuracy(left)
        marks.outside(left, handles)
        marks.outside(right, [Line2D([], [], color=colours[i % len(colours)], lw=3, label=density(d))
                              for i, d in enumerate(series["densities"])] + marks.verdict_handles())
        cost = f" (+{series['scoring_iterations']}it scoring)" if series.get("scoring_iterations") else ""
        _style(left, f"{series['label']}{cost}: ticket accuracy against its budget", "test accuracy (%)")
        _style(right, f"{series['label']} minus rewind k, paired by seed (95% interval)", "difference (points)")
    marks.shared_y([r for _, r in axes], extent)
    return finish(plt, fig, path, "Across pretraining length: each task beside supervised rewinding to the same k; "
                  "differences marked by verdict")


# ------------------------------------------------------------------------------------------ tables
def _cell(p: dict | None) -> str:
    if p is None:
        return "-"
    return f"{100 * p['mean']:.2f}" + (f" ± {100 * p['std']:.2f}" if p.get("std") is not None else "")


def _diff(d: dict | None, word: bool = False) -> str:
    if d is None:
        return "-"
    text = f"{points(d['mean'])}" + (f" [{points(d['low'])}, {points(d['high'])}]" if d["low"] is not None else "")
    if word:
        return f"{text} {VERDICT_WORDS.get(d['verdict'], d['verdict'])}"
    return text + ("*" if d["called"] else "")


def table_k(answer: dict) -> list[str]:
    """Two pivoted tables: accuracy by k (with the difference to reset), and ticket minus dense by k."""
    ds = list(zip(answer["levels"], answer["densities"]))
    margin = f"{100 * answer['margin']:g}"
    head = "| k | condition | " + " | ".join(density(d) for _, d in ds) + " |"
    rule = "|---|---|" + "---|" * len(ds)
    lines = [f"Setting: {answer['setting']}.", "",
             "Ticket accuracy (%) by rewind step k: mean ± std over seeds; in brackets the paired difference to reset "
             "and its 95% interval (`*`: excludes 0)." + (f" Dense network: {_cell(answer['dense'])}."
                                                          if answer["dense"] else ""), "", head, rule]
    for k, label in sorted({(p["k"], p["label"]) for p in answer["points"]}):
        cells = []
        for lvl, _ in ds:
            p = next((p for p in answer["points"] if p["k"] == k and p["level"] == lvl), None)
            r = next((r for r in answer["vs_reset"] if r["k"] == k and r["level"] == lvl), None)
            cells.append(_cell(p) + (f" ({_diff(r)})" if r else ""))
        lines.append(f"| {k}it | {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Ticket minus the same seed's dense network (points, 95% interval): *matches* when the interval "
                  f"lies above -{margin}; *short* when it lies below 0 without matching.", "", head, rule]
    for k, label in sorted({(p["k"], p["label"]) for p in answer["vs_dense"]}):
        cells = [_diff(next((p for p in answer["vs_dense"] if p["k"] == k and p["level"] == lvl), None),
                       word=True) for lvl, _ in ds]
        lines.append(f"| {k}it | {label} | " + " | ".join(cells) + " |")
    first = " ".join(f"{density(r['density'])}: {r['k']}it;" if r["k"] is not None else
                     f"{density(r['density'])}: none;" for r in answer["smallest_matching_k"])
    return lines + ["", f"Smallest k that matches: {first.rstrip(';')}.", ""]


def table_budget(series: dict) -> list[str]:
    ds = list(zip(series["levels"], series["densities"]))
    lines = [f"**{series['label']}**: at each budget, the task's dense network against rewind k's (accuracy %, "
             f"and their paired difference: a negative one means pretraining damaged the network), then the ticket "
             f"accuracy of the task and of rewind k and their paired difference with its 95% interval and verdict "
             f"(matching bound -{100 * series['margin']:g}).", "",
             "| budget | k | rewind k | dense: own vs rewind k's | " + " | ".join(density(d) for _, d in ds)
             + " | verdict | stability at k |",
             "|---|---|---|---|" + "---|" * (len(ds) + 2)]
    for b in series["budgets"]:
        cells = []
        for lvl, _ in ds:
            own = next((p for p in b["points"] if p["level"] == lvl), None)
            ref = next((p for p in b["reference_points"] if p["level"] == lvl), None)
            diff = next((x for x in b["differences"] if x["level"] == lvl), None)
            cells.append(f"{_cell(own)} vs {_cell(ref)}: {_diff(diff, word=True)}")
        s = b["stability"]
        shown = "-" if s is None else (f"{s['task']} (rewind k: {s['reference']})")
        dense = (f"{_cell(b.get('dense'))} vs {_cell(b.get('reference_dense'))}"
                 + (f": {_diff(b['dense_difference'])}" if b.get("dense_difference") else ""))
        lines.append(f"| {b['budget']} | {b['k']}it | {b['reference'] or 'none'} | {dense} | " + " | ".join(cells)
                     + f" | {b['verdict']} | {shown} |")
    return lines + [""]


def tables(by_k: list[dict], by_budget: list[dict]) -> list[str]:
    lines = []
    if by_k:
        lines += ["## Across k", ""]
        for answer in by_k:
            lines += table_k(answer)
    if by_budget:
        lines += ["## Across pretraining length", ""]
        shown = {a["setting"] for a in by_k} if len(by_k) == 1 else set()  # a single setting is said once
        for series in by_budget:  # the setting once, before its first task
            if series["setting"] not in shown:
                shown.add(series["setting"])
                lines += [f"Setting: {series['setting']}.", ""]
            lines += table_budget(series)
    return lines
