"""The report's analysis figures: early-phase statistics against iteration, and perturbed tickets.

Each figure is a callable (conditions, out_dir) -> PNG file name, or None when no run has the data, for
`report.write_report(..., extra_figures=...)`; `figures()` lists them (write_report's default). The
conditions are reporting.runs': every run directory read here is one of theirs.

- `early_phase_stats.png`: whole-network statistics (stats.jsonl, see jobs.stats) against the
  iteration on a log axis, one panel per statistic, one colour per condition: its dense level 0
  (solid; the supervised training from the condition's start point) and, for pretext conditions, the
  pretraining itself (dashed; weight statistics only, since its loss and accuracy are the pretext's).
  Mean over the condition's seeds; conditions whose curves coincide (reset and rewind share their
  dense run) are drawn once with a joined label.
- `early_phase_stats_tickets.png`: the same for each condition's deepest IMP level that has statistics
  in every seed (the sparse ticket trained from its rewind point).
- `perturbations.png`: per condition, ticket accuracy against density for the unperturbed ticket
  (solid), each perturbation (dashed) and the controls (dotted), mean +- std over seeds; the report's
  controls table lists the same numbers beside the unperturbed ticket's.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ..engine.checkpoints import read_json, save_figure_atomic
from ..jobs.stats import read_stats
from .plotting import pyplot
from .runs import curve

PANELS = (("train_loss", "training loss"), ("test_accuracy", "test accuracy"), ("grad_norm", "gradient L2 norm"),
          ("weight_norm", "weight L2 norm"), ("dist_init", "L2 distance from init"),
          ("sign_diff_init", "sign differs from init (fraction)"), ("dist_rewind", "L2 distance from rewind point"),
          ("sign_diff_rewind", "sign differs from rewind point (fraction)"))
PRETRAIN_PANELS = {"grad_norm", "weight_norm", "dist_init", "sign_diff_init"}


def mean_series(runs: list[list[dict]]) -> dict[str, list[tuple[int, float]]]:
    """{statistic: [(step, mean over runs)]} at the steps every run recorded it."""
    out = {}
    for key, _ in PANELS:
        per_run = [{r["step"]: r[key] for r in records if r.get(key) is not None} for records in runs]
        if not per_run or not all(per_run):
            continue
        steps = sorted(set.intersection(*(set(p) for p in per_run)))
        if steps:
            out[key] = [(s, statistics.fmean(p[s] for p in per_run)) for s in steps]
    return out


def _pretrain_dir(imp_dir: Path) -> Path | None:
    """The pretraining an IMP run rewound to: its copy beside the run when there is one (a copied or moved runs
    folder shows its own data), else the path the run recorded."""
    config = read_json(Path(imp_dir) / "config.json", missing_ok=True) or {}
    if not config.get("rewind_from"):
        return None
    path = Path(config["rewind_from"]).expanduser()
    folder = path.parent if path.suffix == ".pt" else path
    local = Path(imp_dir).parent / folder.name
    return local if local.is_dir() else folder


def _level_dirs(imp_dir: Path) -> dict[int, Path]:
    return {int(p.name.split("_")[1]): p for p in Path(imp_dir).glob("level_*") if p.name.split("_")[1].isdigit()}


def _dedupe(series: list[dict]) -> list[dict]:
    """Merge series with identical values (same dense run under two conditions) into one, labels joined."""
    out = []
    for s in series:
        key = json.dumps(s["values"], sort_keys=True)
        twin = next((o for o in out if o["key"] == key and o["style"] == s["style"]), None)
        if twin:
            twin["label"] = f"{twin['label']} = {s['label']}"
        else:
            out.append({**s, "key": key})
    return out


def _plot_stats(series: list[dict], path: Path, title: str) -> None:
    plt = pyplot()

    panels = [(k, name) for k, name in PANELS if any(k in s["values"] for s in series)]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows + 0.6), squeeze=False)
    for ax, (key, name) in zip(axes.flat, panels):
        for s in series:
            if key in s["values"]:
                x, y = zip(*s["values"][key])
                ax.plot(x, y, s["style"], color=s["colour"], lw=1.2, marker="." if key == "test_accuracy" else None,
                        ms=3, label=s["label"])
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in list(axes.flat)[1:len(panels)]:  # legend entries from every panel (pretraining lines skip some)
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(labels) / 4), 1, 1))
    save_figure_atomic(fig, path)
    plt.close(fig)


def _colours():
    plt = pyplot()

    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def stats_figure():
    """The dense-phase figure: level 0 of every condition and its pretraining."""
    def make(conditions: list, out_dir: Path) -> str | None:
        colours, series = _colours(), []
        for i, cond in enumerate(conditions):
            colour = colours[i % len(colours)]
            dense = [read_stats(Path(run) / "level_0") for run in cond.runs]
            if dense and all(dense):
                series.append({"label": cond.label, "style": "-", "colour": colour, "values": mean_series(dense)})
            pre = [read_stats(d) for d in filter(None, map(_pretrain_dir, cond.runs))]
            if pre and all(pre):
                values = {k: v for k, v in mean_series(pre).items() if k in PRETRAIN_PANELS}
                series.append(
                    {"label": f"{cond.label}: pretraining", "style": "--", "colour": colour, "values": values}
                )
        series = [s for s in series if s["values"]]
        if not series:
            return None
        name = "early_phase_stats.png"
        _plot_stats(_dedupe(series), Path(out_dir) / name,
                    "Early phase of the dense network (level 0; dashed: pretext pretraining), mean over seeds")
        return name
    return make


def ticket_stats_figure():
    """The sparse-phase figure: each condition's deepest level >= 1 with statistics in every seed."""
    def make(conditions: list, out_dir: Path) -> str | None:
        colours, series = _colours(), []
        for i, cond in enumerate(conditions):
            with_stats = [
                {lvl for lvl, d in _level_dirs(run).items() if lvl >= 1 and read_stats(d)} for run in cond.runs
            ]
            common = set.intersection(*with_stats) if with_stats else set()
            if not common:
                continue
            level = max(common)
            density = statistics.fmean(
                r["density"] for r in cond.records if r["level"] == level and r["kind"] == "trunk"
            )
            runs = [read_stats(Path(run) / f"level_{level}") for run in cond.runs]
            series.append({"label": f"{cond.label}: level {level} ({100 * density:.1f}%)", "style": "-",
                           "colour": colours[i % len(colours)], "values": mean_series(runs)})
        series = [s for s in series if s["values"]]
        if not series:
            return None
        name = "early_phase_stats_tickets.png"
        _plot_stats(
            series,
            Path(out_dir) / name,
            "Early phase of the sparse tickets (deepest level with statistics), mean over seeds",
        )
        return name
    return make


def perturbation_figure():
    """Accuracy vs density: unperturbed ticket and each perturbation, one panel per condition."""
    def make(conditions: list, out_dir: Path) -> str | None:
        plt = pyplot()
        import matplotlib.ticker

        perturbed = [c for c in conditions if any(r["kind"].startswith("perturb_") for r in c.records)]
        if not perturbed:
            return None
        cols = min(3, len(perturbed))
        rows = math.ceil(len(perturbed) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(max(6.5, 5 * cols), 3.8 * rows + 0.4), squeeze=False)
        colours = _colours()
        for ax, cond in zip(axes.flat, perturbed):
            order = list(dict.fromkeys(r["kind"] for r in cond.records))  # tickets.json's canonical order
            kinds = (
                ["trunk"]
                + [k for k in order if k.startswith("perturb_")]
                + [k for k in order if k not in ("trunk",) and not k.startswith("perturb_")]
            )
            for j, kind in enumerate(kinds):
                pts = [p for p in curve(cond.records, kind) if kind != "trunk" or p["level"] >= 1]
                if not pts:
                    continue
                x = [100 * p["density"] for p in pts]
                m = [100 * p["mean"] for p in pts]
                s = [100 * (p["std"] or 0.0) for p in pts]
                control = kind != "trunk" and not kind.startswith("perturb_")
                colour = "black" if kind == "trunk" else "grey" if control else colours[(j - 1) % len(colours)]
                label = (
                    "unperturbed ticket"
                    if kind == "trunk"
                    else f"control: {kind}"
                    if control
                    else kind.removeprefix("perturb_")
                )
                style = "-" if kind == "trunk" else ":" if control else "--"
                ax.plot(x, m, style, color=colour, marker="o", ms=3, label=label)
                ax.fill_between(
                    x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=colour, alpha=0.12
                )
            ax.set_xscale("log")
            ticks = sorted({round(100 * r["density"], 1) for r in cond.records if r["level"] >= 1})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.invert_xaxis()
            ax.set_title(cond.label, fontsize=9)
            ax.set_xlabel("weights remaining (%)", fontsize=8)
            ax.set_ylabel("test accuracy (%)", fontsize=8)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7, loc="lower left")
        for ax in list(axes.flat)[len(perturbed):]:
            ax.axis("off")
        fig.suptitle(
            "Perturbed rewind points vs the unperturbed ticket\n(mean +- std over seeds; dotted: controls)", fontsize=10
        )
        fig.tight_layout()
        name = "perturbations.png"
        save_figure_atomic(fig, Path(out_dir) / name)
        plt.close(fig)
        return name
    return make


def figures() -> list:
    """The analysis figures of a report."""
    return [stats_figure(), ticket_stats_figure(), perturbation_figure()]
