"""Why a condition falls short, its mask or its weights (report.json `crossed`, crossed.png), from the crossed
tickets of jobs.imp_cross.

For a condition C against its reference R at a level, per seed (accuracies of that level's tickets):
  total       = C - R                                  (the comparison the report already makes)
  mask        = crossed_mask - R      (C's mask, R's weights: what C's mask alone costs)
  weights     = crossed_weights - R   (R's mask, C's weights: what C's starting weights alone cost)
  interaction = total - mask - weights
each with its paired 95% interval over the seeds that have all four. A part *carries* the shortfall when its
interval lies below 0. Crossed records are used only when both runs they name are runs of the compared conditions,
and only parts whose final.pt is the one their run wrote (reporting.runs.verified).
"""

from __future__ import annotations

from pathlib import Path

from ..engine import records
from .findings import density, points
from .paired import MIN_SEEDS, Comparison, interval
from .runs import by_seed, verified

PARTS = ("total", "mask", "weights", "interaction")


def collect_crossed(folders) -> list[dict]:
    """Every verified crossed record below the folders (a study's own, from its study.json; else cross_* runs),
    each with the `subject` and `reference` run names its config.json gives."""
    out = []
    for folder in (Path(f) for f in folders):
        study = records.read(folder / "study.json", records.STUDY, missing_ok=True, fix="rerun the study") \
            if (folder / "study.json").is_file() else None
        dirs = [folder.parent / name for name in (study or {}).get("crossed", [])] if study else \
            sorted(folder.glob("cross_*"))
        for run in dirs:
            config = records.read(run / "config.json", records.CROSS_CONFIG, missing_ok=True, fix="move it away")
            found = records.read(run / "crossed.json", records.CROSSED, missing_ok=True, fix="move it away")
            if not config or not found:
                continue
            good, _ = verified(run, found)
            out += [{**r, "subject": config["subject"], "reference": config["reference"]} for r in good]
    return out


def _runs(c) -> set[str]:
    return {Path(r).name for r in c.runs}


def comparison_crossed(c: Comparison, crossed: list[dict]) -> list[dict]:
    """The decomposition of one comparison at each level its crossed records cover."""
    subject_runs, reference_runs = _runs(c.subject), _runs(c.reference)
    mine = [r for r in crossed if r["subject"] in subject_runs and r["reference"] in reference_runs]
    out = []
    for level in sorted({r["level"] for r in mine}):
        own, ref = by_seed(c.subject.records, level), by_seed(c.reference.records, level)
        kinds = {kind: {r["seed"]: r["test_accuracy"] for r in mine if r["level"] == level and r["kind"] == kind}
                 for kind in ("crossed_mask", "crossed_weights")}
        seeds = sorted(s for s in own if s in ref and all(s in v for v in kinds.values()))
        if not seeds:
            continue
        values = {"total": [own[s][0] - ref[s][0] for s in seeds],
                  "mask": [kinds["crossed_mask"][s] - ref[s][0] for s in seeds],
                  "weights": [kinds["crossed_weights"][s] - ref[s][0] for s in seeds]}
        values["interaction"] = [t - m - w for t, m, w in zip(values["total"], values["mask"], values["weights"])]
        parts = {}
        for name in PARTS:
            mean, low, high = interval(values[name])
            parts[name] = {"mean": mean, "low": low, "high": high, "n": len(seeds), "values": values[name]}
        out.append({"subject": c.subject_label, "reference": c.reference_label, "question": c.question,
                    "level": level, "density": own[seeds[0]][1], "seeds": seeds, "n": len(seeds), **parts,
                    "crossed_accuracy": {k: [v[s] for s in seeds] for k, v in kinds.items()}})
    return out


def answers(conditions, found: list[Comparison], crossed: list[dict]) -> list[dict]:
    return [row for c in found if c.question in ("pretext", "rewind_vs_reset")
            for row in comparison_crossed(c, crossed)]


def _shown(part: dict) -> str:
    return f"{points(part['mean'])} points" + (f" [{points(part['low'])}, {points(part['high'])}]"
                                               if part["low"] is not None else "")


def _below(part: dict) -> bool:
    return part["n"] >= MIN_SEEDS and part["high"] is not None and part["high"] < 0


def sentences(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        head = f"**{row['subject']}** against **{row['reference']}** at {density(row['density'])} (n = {row['n']})"
        if row["n"] < MIN_SEEDS:
            out.append(f"{head}: too few seeds to split the difference ({MIN_SEEDS} or more are needed).")
            continue
        mask, weights = _below(row["mask"]), _below(row["weights"])
        parts = (f"mask {_shown(row['mask'])}; weights {_shown(row['weights'])}; interaction "
                 f"{_shown(row['interaction'])} (crossed tickets: one's mask from the other's rewind point, paired by "
                 f"seed)")
        if _below(row["total"]):
            where = {(True, False): "lies in its mask", (False, True): "lies in its weights",
                     (True, True): "lies in both its mask and its weights",
                     (False, False): "is carried by neither its mask nor its weights alone"}[mask, weights]
            out.append(f"{head}: its shortfall ({_shown(row['total'])}) {where}: {parts}.")
            continue
        alone = [name for name, below in (("its mask", mask), ("its weights", weights)) if below]
        costs = (f"; apart, {' and '.join(alone)} alone cost accuracy, which mask and weights together do not "
                 f"(their interaction makes it up)" if alone else "")
        out.append(f"{head}: no shortfall is shown ({_shown(row['total'])}){costs}: {parts}.")
    return out


def table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Crossed tickets: mask or weights", "",
             "Each condition's difference to its reference split by crossed tickets (its mask trained from the "
             "reference's rewind point; the reference's mask from its rewind point): points, paired by seed, 95% "
             "interval.", "", "| condition | reference | density | n | total | mask | weights | interaction |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = " | ".join(_shown(row[p]).replace(" points", "") for p in PARTS)
        lines.append(f"| {row['subject']} | {row['reference']} | {density(row['density'])} | {row['n']} | {cells} |")
    return lines + [""]


def figure(rows: list[dict], path) -> bool:
    """crossed.png: per comparison and level, the total difference and its mask, weights and interaction parts."""
    if not rows:
        return False
    from . import figure_marks as marks
    from .plotting import finish, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows) + 3), 4.2))
    colours = {"total": "black", "mask": "tab:blue", "weights": "tab:orange", "interaction": "grey"}
    for i, row in enumerate(rows):
        for j, name in enumerate(PARTS):
            part = dict(row[name])
            marks.differences(ax, [part], lambda _, x=i + (j - 1.5) * 0.18: x, colours[name], 0.0)
    for name, colour in colours.items():
        ax.plot([], [], "s", color=colour, label=name)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(rows)), [f"{r['subject']}\nvs {r['reference']}\n{density(r['density'])}" for r in rows],
                  fontsize=7)
    ax.set_ylabel("difference to the reference (points)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    marks.outside(ax)
    return finish(plt, fig, path, "Crossed tickets: the difference split into its mask and its weights (95% intervals)")
