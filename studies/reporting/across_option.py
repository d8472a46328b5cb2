"""Across any option (report.json `by_option`, pretext_vs_option.png): a pretext task against one of its options
swept at one budget (random_labels `fraction`, blur `factor`, subset `fraction`, a plugin's temperature), beside
supervised rewinding to the same k.

A series is one task at one budget k in one setting whose conditions differ in exactly one option (every other
option equal); it needs two or more values of it. For each value: the ticket's accuracy, the paired difference task -
`rewind k` at each pruned table density and a verdict in the same form as across budget (matches at every density,
falls short at one, else undetermined; too few seeds below MIN_SEEDS), and the task's own dense network beside
rewinding's. Values are ordered as numbers where they are numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from .across import budget_verdict, condition_points, difference_row, margin_images, own_dense, pruned_levels
from .findings import density
from .runs import Condition, by_setting


def _options(c: Condition) -> dict:
    return dict((c.details.get("pretext") or {}).get("options") or {})


def _order(value):
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, float(value), "") if number else (1, 0, str(value))


def series_of(group: list[Condition]) -> list[tuple[str, str, list[Condition]]]:
    """(task, option, members) for every option that varies alone among a task's conditions at one budget."""
    out = []
    by_task: dict[tuple, list[Condition]] = {}
    for c in (c for c in group if c.kind == "pretext"):
        by_task.setdefault((c.task, c.k, json.dumps((c.details.get("pretext") or {}).get("sparse"))), []).append(c)
    for (task, _, _), members in by_task.items():
        keys = sorted({key for c in members for key in _options(c)})
        for key in keys:
            rest: dict[str, list[Condition]] = {}
            for c in members:
                others = {k: v for k, v in _options(c).items() if k != key}
                rest.setdefault(json.dumps(others, sort_keys=True, default=str), []).append(c)
            for same in rest.values():
                if len({json.dumps(_options(c).get(key), default=str) for c in same}) >= 2:
                    out.append((task, key, sorted(same, key=lambda c: _order(_options(c).get(key)))))
    return out


def across_option(group: list[Condition], columns, found, margin: float) -> list[dict]:
    levels = pruned_levels(columns)
    rewinds = {c.k: c for c in group if c.kind == "rewind"}
    reset = next((c for c in group if c.kind == "reset"), None)
    out = []
    for task, key, members in series_of(group):
        k = members[0].k
        reference = rewinds.get(k)
        values = []
        for c in members:
            comparison = next((x for x in found if x.question == "pretext" and x.subject is c), None)
            diffs = [next((d for d in comparison.differences if d.level == lvl), None) if comparison else None
                     for lvl, _ in levels]
            dense_diff = next((d for d in comparison.differences if d.level == 0), None) if comparison else None
            values.append({"value": _options(c).get(key), "label": c.label, "points": condition_points(c, levels),
                           "differences": [x for x in (difference_row(d, margin) for d in diffs) if x],
                           "verdict": budget_verdict(diffs, margin, reference is not None),
                           **own_dense(c, reference, dense_diff, levels, margin)})
        out.append({"task": task, "option": key, "k": k, "budget": members[0].budget,
                    "label": f"{task} {members[0].budget} across {key}",
                    "setting": ", ".join(c.label for c in group), "margin": margin,
                    "margin_images": margin_images(group, margin), "reference": reference.label if reference else None,
                    "levels": [lvl for lvl, _ in levels], "densities": [d for _, d in levels], "values": values,
                    "reference_points": condition_points(reference, levels),
                    "reset_points": condition_points(reset, levels)})
    return out


def answers(conditions: list[Condition], found, columns_of, margin: float) -> list[dict]:
    return [s for group in by_setting(conditions) for s in across_option(group, columns_of(group), found, margin)]


def sentences(by_option: list[dict]) -> list[str]:
    """One sentence per series, in the form of the budget sentences: at which values the task matches rewind k."""
    out = []
    for s in by_option:
        groups = {}
        for v in s["values"]:
            groups.setdefault(v["verdict"], []).append(f"{s['option']} = {v['value']}")
        damaged = [f"{s['option']} = {v['value']}" for v in s["values"] if v.get("dense_difference")
                   and v["dense_difference"].get("high") is not None and v["dense_difference"]["high"] < 0]
        parts = [f"{verdict} at {', '.join(vals)}" for verdict, vals in groups.items()]
        text = (f"**{s['task']} {s['budget']}** against supervised rewinding to the same k ({s['reference']}) across "
                f"its option {s['option']} (matching: the interval lies above -{100 * s['margin']:g} points at every "
                f"pruned density): " + "; ".join(parts) + ".")
        if damaged:
            text += f" Its dense network itself falls short of {s['reference']}'s at {', '.join(damaged)}."
        out.append(text)
    return out


def table(by_option: list[dict]) -> list[str]:
    if not by_option:
        return []
    lines = ["## Across an option", ""]
    for s in by_option:
        ds = list(zip(s["levels"], s["densities"]))
        lines += [f"**{s['label']}** (against {s['reference']}): accuracy (%) of the task's ticket and its paired "
                  f"difference to {s['reference']} with its 95% interval, by value.", "",
                  f"| {s['option']} | " + " | ".join(density(d) for _, d in ds) + " | verdict |",
                  "|---|" + "---|" * (len(ds) + 1)]
        for v in s["values"]:
            cells = []
            for lvl, _ in ds:
                p = next((p for p in v["points"] if p["level"] == lvl), None)
                d = next((d for d in v["differences"] if d["level"] == lvl), None)
                cell = "-" if p is None else f"{100 * p['mean']:.2f}"
                if d is not None and d["low"] is not None:
                    cell += f" ({100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}])"
                cells.append(cell)
            lines.append(f"| {v['value']} | " + " | ".join(cells) + f" | {v['verdict']} |")
        lines.append("")
    return lines


def figure(by_option: list[dict], path: Path) -> bool:
    """pretext_vs_option.png: per series, ticket accuracy against the option (rewind k as dashed reference lines,
    reset dotted) and the paired difference to rewind k marked by verdict."""
    if not by_option:
        return False
    from . import figure_marks as marks
    from .plotting import finish, pyplot

    plt = pyplot()
    from matplotlib.lines import Line2D

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(by_option), 2, figsize=(13, 4.0 * len(by_option) + 0.4), squeeze=False)
    for (left, right), s in zip(axes, by_option):
        numeric = all(isinstance(v["value"], (int, float)) and not isinstance(v["value"], bool) for v in s["values"])
        xs = [v["value"] if numeric else i for i, v in enumerate(s["values"])]
        span = (max(xs) - min(xs)) or 1
        n = len(s["densities"])
        for i, lvl in enumerate(s["levels"]):
            colour = colours[i % len(colours)]
            shift = 0.012 * span * (i - (n - 1) / 2)
            rows = [(x, next((p for p in v["points"] if p["level"] == lvl), None)) for x, v in zip(xs, s["values"])]
            rows = [(x, p) for x, p in rows if p]
            left.errorbar([x + shift for x, _ in rows], [100 * p["mean"] for _, p in rows],
                          yerr=[[100 * (p["mean"] - p["low"]) if p["low"] is not None else 0 for _, p in rows],
                                [100 * (p["high"] - p["mean"]) if p["high"] is not None else 0 for _, p in rows]],
                          fmt="-o", ms=4, color=colour, capsize=2)
            for p in s["reference_points"]:
                if p["level"] == lvl:
                    left.axhline(100 * p["mean"], color=colour, ls="--", lw=1)
            for p in s["reset_points"]:
                if p["level"] == lvl:
                    left.axhline(100 * p["mean"], color=colour, ls=":", lw=0.8)
            diffs = [dict(d, x=x) for x, v in zip(xs, s["values"]) for d in v["differences"] if d["level"] == lvl]
            marks.differences(right, diffs, lambda d, shift=shift: d["x"] + shift, colour, s["margin"])
        marks.bound(right, s["margin"])
        for ax in (left, right):
            ax.set_xticks(xs, [str(v["value"]) for v in s["values"]])
            ax.set_xlabel(f"{s['task']} option {s['option']} (budget {s['budget']})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        left.set_ylim(top=min(100.0, left.get_ylim()[1]))
        left.set_ylabel("test accuracy (%)", fontsize=8)
        right.set_ylabel("difference (points)", fontsize=8)
        left.set_title(f"{s['label']}: ticket accuracy", fontsize=9)
        right.set_title(f"minus {s['reference']}, paired by seed (95% interval)", fontsize=9)
        handles = [Line2D([], [], color="black", marker="o", label=s["task"]),
                   Line2D([], [], color="black", ls="--", label=f"{s['reference']} (same k)"),
                   Line2D([], [], color="black", ls=":", label="reset")]
        handles += [Line2D([], [], color=colours[i % len(colours)], lw=3, label=density(d))
                    for i, d in enumerate(s["densities"])]
        marks.outside(left, handles)
        marks.outside(right, marks.verdict_handles())
    return finish(plt, fig, path, "Across an option: a task at one budget against supervised rewinding to the same k")
