"""The figures and pivoted tables of the answers across k and across budget (reporting.across).

- accuracy_vs_k.png: per setting, ticket test accuracy against k (reset at k = 0 on a symlog axis), one line
  per table density with the 95% interval of the mean over seeds, the dense network as a band and pretext
  conditions as markers at their k; beside it the paired difference of each k to reset, per density.
- pretext_vs_budget.png: per task, ticket accuracy against its budget k (solid) beside supervised rewinding
  to the same k (dashed) and reset (dotted), one colour per table density; beside it the paired difference
  task - rewind k per budget with its interval and the matching bound -margin.
Filled markers: an interval that excludes 0 (with MIN_SEEDS seeds or more); hollow: it does not.
"""

from __future__ import annotations

from pathlib import Path

from .findings import density, points
from .paired import MIN_SEEDS
from .plotting import finish, pyplot

MARKERS = "s^vD<>PX*"
VERDICT_WORDS = {"matches": "matches", "falls short": "short", "undetermined": "undetermined",
                 "too few seeds": "too few seeds", "missing": "-"}


def _k_axis(ax, ks: list[int]) -> None:
    import matplotlib.ticker

    positive = sorted(k for k in ks if k > 0)
    ax.set_xscale("symlog", linthresh=positive[0] if positive else 1, linscale=0.6)
    ax.set_xticks(sorted(set(ks)), [str(k) for k in sorted(set(ks))])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("k (iterations)", fontsize=8)


def _style(ax, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _bars(rows: list[dict], scale: float = 100.0) -> list[list[float]]:
    return [[scale * (r["mean"] - r["low"]) if r["low"] is not None else 0 for r in rows],
            [scale * (r["high"] - r["mean"]) if r["high"] is not None else 0 for r in rows]]


def _differences(ax, rows: list[dict], x_of, colour, label=None) -> None:
    """Paired differences with error bars: filled where called, hollow where not."""
    if not rows:
        return
    x = [x_of(r) for r in rows]
    y = [100 * r["mean"] for r in rows]
    ax.errorbar(x, y, yerr=_bars(rows), fmt="none", ecolor=colour, capsize=3, lw=1)
    for xi, yi, r in zip(x, y, rows):
        ax.plot([xi], [yi], "o", ms=5, color=colour, markerfacecolor=colour if r["called"] else "white")
    if label:
        ax.plot([], [], "o", color=colour, label=label)


def _offset(k: int, i: int, n: int) -> float:
    """k shifted a little per density, so error bars of one k do not cover each other."""
    return k * (1 + 0.06 * (i - (n - 1) / 2)) if k > 0 else 0.08 * (i - (n - 1) / 2)


def accuracy_vs_k(by_k: list[dict], path: Path) -> bool:
    if not by_k:
        return False
    plt = pyplot()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(by_k), 2, figsize=(11, 4.0 * len(by_k) + 0.4), squeeze=False)
    for (left, right), answer in zip(axes, by_k):
        ks = sorted({p["k"] for p in answer["points"]})
        if answer["dense"]:
            dense = answer["dense"]
            if dense["low"] is not None:
                left.axhspan(100 * dense["low"], 100 * dense["high"], color="grey", alpha=0.18,
                             label="dense network (95% interval)")
            left.axhline(100 * dense["mean"], color="grey", lw=0.8)
        levels = sorted({p["level"] for p in answer["points"]})
        tasks = sorted({p["task"] for p in answer["pretext"]})
        for i, level in enumerate(levels):
            colour = colours[i % len(colours)]
            rows = sorted((p for p in answer["points"] if p["level"] == level), key=lambda p: p["k"])
            left.errorbar([_offset(p["k"], i, len(levels)) for p in rows], [100 * p["mean"] for p in rows],
                          yerr=_bars(rows), fmt="-o", ms=4, color=colour, capsize=2, lw=1.2,
                          label=f"{density(rows[0]['density'])} of weights")
            for j, task in enumerate(tasks):
                marks = [p for p in answer["pretext"] if p["level"] == level and p["task"] == task]
                left.plot([_offset(p["k"], i, len(levels)) for p in marks], [100 * p["mean"] for p in marks],
                          MARKERS[j % len(MARKERS)], ms=6, color=colour, markeredgecolor="black", mew=0.5)
            _differences(right, sorted((r for r in answer["vs_reset"] if r["level"] == level), key=lambda r: r["k"]),
                         lambda r, i=i: _offset(r["k"], i, len(levels)), colour,
                         f"{density(rows[0]['density'])}")
        for j, task in enumerate(tasks):
            left.plot([], [], MARKERS[j % len(MARKERS)], color="white", markeredgecolor="black",
                      label=f"{task} (at its budget k)")
        _k_axis(left, ks + [p["k"] for p in answer["pretext"]])
        _k_axis(right, ks)
        right.axhline(0, color="black", lw=0.8)
        _style(left, "Ticket accuracy against the rewind step k (mean, 95% interval)", "test accuracy (%)")
        _style(right, "Rewinding to k minus reset, paired by seed (95% interval)", "difference (points)")
        left.legend(fontsize=7, loc="best", framealpha=0.85)
        if right.get_legend_handles_labels()[0]:  # no paired differences (fewer than 2 seeds): no legend
            right.legend(fontsize=7, title="density", title_fontsize=7, loc="best", framealpha=0.85)
    return finish(plt, fig, path, f"Across k: one line per density; pretext conditions as markers at their k. Filled: "
                   f"interval excludes 0 ({MIN_SEEDS}+ seeds)")


def pretext_vs_budget(by_budget: list[dict], path: Path) -> bool:
    if not by_budget:
        return False
    from matplotlib.lines import Line2D

    plt = pyplot()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(by_budget), 2, figsize=(11, 3.8 * len(by_budget) + 0.4), squeeze=False)
    for (left, right), series in zip(axes, by_budget):
        ks = [b["k"] for b in series["budgets"]]
        for i, (lvl, d) in enumerate(zip(series["levels"], series["densities"])):
            colour = colours[i % len(colours)]
            own = [(b["k"], p) for b in series["budgets"] for p in b["points"] if p["level"] == lvl]
            ref = [(b["k"], p) for b in series["budgets"] for p in b["reference_points"] if p["level"] == lvl]
            for rows, style in ((own, "-o"), (ref, "--s")):
                if rows:
                    left.errorbar([_offset(k, i, len(series["densities"])) for k, _ in rows],
                                  [100 * p["mean"] for _, p in rows], yerr=_bars([p for _, p in rows]), fmt=style,
                                  ms=4, color=colour, capsize=2, lw=1.2 if style == "-o" else 0.9)
            for p in series["reset_points"]:
                if p["level"] == lvl:
                    left.axhline(100 * p["mean"], color=colour, ls=":", lw=1)
            diffs = [(b["k"], x) for b in series["budgets"] for x in b["differences"] if x["level"] == lvl]
            _differences(right, [x for _, x in diffs], lambda x, diffs=diffs, i=i: _offset(
                next(k for k, y in diffs if y is x), i, len(series["densities"])), colour, density(d))
        handles = [Line2D([], [], color="black", ls="-", marker="o", ms=4, label=series["label"]),
                   Line2D([], [], color="black", ls="--", marker="s", ms=4, label="rewind k (same k)"),
                   Line2D([], [], color="black", ls=":", label="reset (k = 0)")]
        handles += [Line2D([], [], color=colours[i % len(colours)], lw=3, label=f"{density(d)} of weights")
                    for i, d in enumerate(series["densities"])]
        left.legend(handles=handles, fontsize=7, loc="best", framealpha=0.85)
        for ax in (left, right):
            ax.set_xscale("log")
            ax.set_xticks(sorted(set(ks)), [f"{k}" for k in sorted(set(ks))])
            ax.minorticks_off()
            ax.set_xlabel("pretraining budget k (iterations)", fontsize=8)
        right.axhline(0, color="black", lw=0.8)
        right.axhline(-100 * series["margin"], color="grey", ls=":", lw=1, label=f"matching bound "
                      f"(-{100 * series['margin']:g})")
        right.legend(fontsize=7, title="density", title_fontsize=7, loc="best", framealpha=0.85)
        cost = f" (+{series['scoring_iterations']}it scoring)" if series.get("scoring_iterations") else ""
        _style(left, f"{series['label']}{cost}: ticket accuracy against its budget", "test accuracy (%)")
        _style(right, f"{series['label']} minus rewind k, paired by seed (95% interval)", "difference (points)")
    return finish(plt, fig, path, "Across pretraining length: each task beside supervised rewinding to the same k. "
                   f"Filled: interval excludes 0 ({MIN_SEEDS}+ seeds)")


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
    lines = [f"**{series['label']}** (setting: {series['setting']}): ticket accuracy (%) of the task and of "
             f"rewind k at each budget, and their paired difference with its 95% interval and verdict (matching "
             f"bound -{100 * series['margin']:g}).", "",
             "| budget | k | rewind k | " + " | ".join(density(d) for _, d in ds) + " | verdict | stability at k |",
             "|---|---|---|" + "---|" * (len(ds) + 2)]
    for b in series["budgets"]:
        cells = []
        for lvl, _ in ds:
            own = next((p for p in b["points"] if p["level"] == lvl), None)
            ref = next((p for p in b["reference_points"] if p["level"] == lvl), None)
            diff = next((x for x in b["differences"] if x["level"] == lvl), None)
            cells.append(f"{_cell(own)} vs {_cell(ref)}: {_diff(diff, word=True)}")
        s = b["stability"]
        shown = "-" if s is None else (f"{s['task']} (rewind k: {s['reference']})")
        lines.append(f"| {b['budget']} | {b['k']}it | {b['reference'] or 'none'} | " + " | ".join(cells)
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
        for series in by_budget:
            lines += table_budget(series)
    return lines
