"""`earlyphase report FOLDER [FOLDER ...] [-o OUT_DIR]`: the comparison, from local run records, offline.

Reads the IMP runs below the folders (a study directory reads exactly its own runs; runs folders of
several machines are merged: reporting.runs), compares conditions like for like with paired
intervals (reporting.paired) and writes, into OUT_DIR (default FOLDER/report):
- report.md and report.html (self-contained: figures embedded; rendered with Python-Markdown):
  the findings in sentences (reporting.findings), the ticket table (one row per condition, one column
  per density: mean +- sample std over seeds, and the paired difference to the condition's reference
  with its 95% interval; `*` marks an interval that excludes 0 with 3 or more seeds), the controls
  table, each condition's settings, and the incomplete or excluded runs;
- report.json: the same numbers (conditions, with their runs named by directory; comparisons with every
  difference and interval; findings; by_k and by_budget), the same for the same records wherever they lie;
- with instability analyses (`--stability`), a stability section and stability.png (reporting.stability);
- accuracy_vs_density.png: one panel per question (rewinding vs reset; each pretext condition vs
  rewinding at its own k, with reset and the other rewinding runs as thin reference lines), mean and
  95% interval band of the mean over seeds; paired_differences.png: the paired differences with their
  intervals, one panel per question; and the analysis figures where runs have the data
  (reporting.analysis: early-phase statistics, perturbations).
Every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

from ..engine.checkpoints import write_json_atomic, write_text_atomic
from ..engine.errors import UsageError
from . import across, across_figures, across_option, anatomy, arguments, crossed, figure_marks, sequential, wandb_source
from . import stability as stability_report
from .arguments import DEFAULT_MARGIN
from .findings import bounds, density, findings, points
from .held_equal import held_equal
from .held_equal import sentences as held_equal_sentences
from .paired import CONFIDENCE, MIN_SEEDS, Comparison, comparisons, holm_family
from .plotting import finish, pyplot
from .report_folder import swapped_in
from .runs import Condition, by_seed, by_setting, collect, curve

TABLE_DENSITIES = (1.0, 0.512, 0.262, 0.168, 0.086)
# ------------------------------------------------------------------------------------------ table columns
def _nearest(points_: list[dict], target: float) -> dict | None:
    """The point whose density is nearest to `target` on a log scale."""
    return min(points_, key=lambda p: abs(math.log(p["density"]) - math.log(target)), default=None)


def table_levels(conditions: list[Condition]) -> list[tuple[int, float]]:
    """(level, density) columns: the levels nearest the paper's table densities, and the sparsest level run."""
    points_ = {}
    for c in conditions:
        for p in curve(c.records):
            points_.setdefault(p["level"], p)
    candidates = sorted(points_.values(), key=lambda p: p["level"])
    chosen = {p["level"] for t in TABLE_DENSITIES if (p := _nearest(candidates, t))}
    if candidates:
        chosen.add(candidates[-1]["level"])
    return [(lvl, points_[lvl]["density"]) for lvl in sorted(chosen)]


# ------------------------------------------------------------------------------------------ cells
def _value(p: dict | None) -> str:
    if p is None:
        return "-"
    return f"{100 * p['mean']:.2f}" + (f" ± {100 * p['std']:.2f}" if p["std"] is not None else "")


def _diff(comparison: Comparison | None, level: int) -> str:
    if comparison is None:
        return ""
    d = next((d for d in comparison.differences if d.level == level), None)
    if d is None:
        return ""
    return f" ({points(d.mean)}{bounds(d)}{'*' if d.called else ''})"


def _by_level(records: list[dict], kind: str = "trunk") -> dict:
    return {p["level"]: p for p in curve(records, kind)}


def ticket_table(conditions: list[Condition], found: list[Comparison]) -> list[str]:
    lines = []
    groups = by_setting(conditions)
    for i, group in enumerate(groups):
        columns = table_levels(group)
        if len(groups) > 1:
            lines += [f"Setting {i + 1} of {len(groups)} ({', '.join(c.label for c in group)}):", ""]
        lines += ["| condition | k | seeds | compared with | " + " | ".join(density(d) for _, d in columns) + " |",
                  "|---|---|---|---|" + "---|" * len(columns)]
        for c in group:
            row = next((x for x in found if x.subject is c and x.question in ("pretext", "rewind_vs_reset")), None)
            seeds = len({r["seed"] for r in c.records})
            values = _by_level(c.records)
            cells = [_value(values.get(lvl)) + _diff(row, lvl) for lvl, _ in columns]
            reference = row.reference.label if row else ""
            lines.append(f"| {c.label} | {c.k if c.k is not None else '?'}it | {seeds} | {reference} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return lines


def control_table(found: list[Comparison]) -> list[str]:
    controls = [c for c in found if c.question == "control"]
    if not controls:
        return ["No controls were run.", ""]
    columns = sorted({(d.level, d.density) for c in controls for d in c.differences})
    levels = [lvl for lvl, _ in columns]
    lines = ["| condition | control | " + " | ".join(f"level {lvl}, {density(d)}" for lvl, d in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for c in controls:
        values = _by_level(c.reference.records, c.reference_kind)
        cells = [_value(values.get(lvl)) + _diff(c, lvl) for lvl in levels]
        lines.append(f"| {c.subject.label} | {c.reference_kind} | " + " | ".join(cells) + " |")
    return lines + [""]


# ------------------------------------------------------------------------------------------ figures
def _band(records: list[dict], kind: str = "trunk") -> list[tuple[float, float, float, float]]:
    """(density %, mean %, low %, high %) per level: the mean and its 95% t interval over seeds."""
    from scipy import stats

    out = []
    for p in curve(records, kind):
        half = 0.0
        if p["n"] > 1 and p["std"]:
            half = stats.t.ppf(0.5 + CONFIDENCE / 2, p["n"] - 1) * p["std"] / math.sqrt(p["n"])
        out.append((100 * p["density"], 100 * p["mean"], 100 * (p["mean"] - half), 100 * (p["mean"] + half)))
    return out


def _panels(found: list[Comparison]) -> list[Comparison]:
    """One panel per question of conditions: all rewinding-vs-reset of a setting together, each pretext alone."""
    panels, seen = [], set()
    for c in found:
        if c.question == "rewind_vs_reset":
            if c.reference.setting not in seen:
                seen.add(c.reference.setting)
                panels.append(c)
        elif c.question == "pretext":
            panels.append(c)
    return panels


def _grid(n: int):
    plt = pyplot()
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.7 * rows + 0.5), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return plt, fig, list(axes.flat)[:n]


def _density_axis(ax, densities: list[float]) -> None:
    import matplotlib.ticker

    ax.set_xscale("log")
    ticks = sorted({float(f"{d:.3g}") for d in densities}, reverse=True)
    ticks = ticks[::max(1, -(-len(ticks) // 8))]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, which="both")


def accuracy_figure(conditions: list[Condition], found: list[Comparison], path: Path) -> bool:
    """One panel per question (rewinding against reset; each pretext condition against rewinding to its k): mean
    accuracy with its 95% interval, each seed's accuracy as a dot (up to SEED_DOTS seeds), the setting's other
    reset and rewinding runs as thin grey lines; legends inside the panel's empty lower left."""
    panels = _panels(found)
    if not panels:
        return False
    pyplot()  # before any matplotlib import: it sets the backend
    from matplotlib.lines import Line2D

    plt, fig, axes = _grid(len(panels))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes, panels):
        group = [c for c in conditions if c.setting == panel.subject.setting]
        if panel.question == "rewind_vs_reset":
            shown = [c for c in group if c.kind in ("reset", "rewind")]
            title = "rewinding vs reset"
        else:
            shown = [panel.subject, panel.reference]
            title = f"{panel.subject.label}\nvs {panel.reference.label} (same k)"
        others = [c for c in group if c.kind in ("reset", "rewind") and c not in shown]
        for c in others:  # the paper's baselines stay as thin reference lines
            pts = _band(c.records)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", color="grey", lw=0.8, alpha=0.7)
        densities, handles = [], []
        for i, c in enumerate(shown):  # the reference in black, what is compared with it in colour
            pts = _band(c.records)
            colour = "black" if c is panel.reference else colours[i % len(colours)]
            x = [p[0] for p in pts]
            densities += x
            ax.plot(x, [p[1] for p in pts], "-o", color=colour, ms=3)
            ax.fill_between(x, [p[2] for p in pts], [p[3] for p in pts], color=colour, alpha=0.12)
            for lvl, d in zip(sorted({r["level"] for r in c.records if r["kind"] == "trunk"}), x):
                accs = [100 * a for a, _ in by_seed(c.records, lvl).values()]
                if 1 < len(accs) <= figure_marks.SEED_DOTS:
                    ax.plot([d] * len(accs), accs, ".", ms=3, color=colour, alpha=0.4)
            handles.append(Line2D([], [], color=colour, marker="o", ms=3, label=c.label))
        if others:
            handles.append(Line2D([], [], color="grey", ls="--", lw=0.8, label="other reset / rewinding"))
        _density_axis(ax, densities)
        low, high = ax.get_ylim()
        ax.set_ylim(low, min(high, 100.0))
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.legend(handles=handles, fontsize=6, loc="lower left", framealpha=0.85)
    low = min(ax.get_ylim()[0] for ax in axes)
    for ax in axes:  # one accuracy range for every panel
        ax.set_ylim(low, min(100.0, max(a.get_ylim()[1] for a in axes)))
    return finish(plt, fig, path, f"Ticket accuracy: mean with its {CONFIDENCE:.0%} interval (unpaired), dots: "
                  f"seeds; paired differences: the next figure")


QUESTION_ORDER = {"rewind_vs_reset": 0, "pretext": 1, "control": 2}


def difference_figure(found: list[Comparison], path: Path, margin: float = DEFAULT_MARGIN) -> bool:
    """One panel per comparison, in the order a reader asks (rewinding against reset, each pretext condition,
    then the controls), marked by verdict, each seed's difference as a dot; one y range per kind of question
    (controls differ by tens of points, the like-for-like comparisons by a few), the matching bound on the
    like-for-like ones."""
    shown = sorted((c for c in found if c.differences), key=lambda c: QUESTION_ORDER.get(c.question, 3))
    if not shown:
        return False
    plt, fig, axes = _grid(len(shown))
    extents: dict[bool, tuple[list, list]] = {}
    for ax, c in zip(axes, shown):
        rows = [across.difference_row(d) for d in c.differences]
        like_for_like = c.question != "control"
        figure_marks.differences(ax, rows, lambda r: 100 * r["density"], "tab:blue", margin)
        if like_for_like:
            figure_marks.bound(ax, margin)
        else:
            ax.axhline(0, color="black", lw=0.8)
        _density_axis(ax, [100 * r["density"] for r in rows])
        what = (f"{c.subject.label}: ticket minus {c.reference_kind}" if c.question == "control"
                else f"{c.subject_label}\nminus {c.reference_label}")
        ax.set_title(f"{what} (n = {c.n})", fontsize=8)
        ax.set_ylabel("difference (points)", fontsize=8)
        axes_of, values = extents.setdefault(like_for_like, ([], []))
        axes_of.append(ax)
        values += figure_marks.row_extent(rows, margin if like_for_like else 0.0)
    for axes_of, values in extents.values():
        figure_marks.shared_y(axes_of, values)
    densities = [100 * d.density for c in shown for d in c.differences]
    for ax in axes:  # one x range too, so a density stands at one place in every panel
        ax.set_xlim(max(densities) * 1.15, min(densities) / 1.15)
    figure_marks.outside(axes[min(len(axes), 3) - 1], figure_marks.verdict_handles())
    return finish(plt, fig, path, f"Paired differences by seed with {CONFIDENCE:.0%} t intervals, marked by verdict "
                  f"(matching bound -{100 * margin:g} points)")


def finding_sections(conditions, found, notes, incomplete, stability: str | None = None, by_k=(),
                     by_budget=(), family: dict | None = None, margin: float = DEFAULT_MARGIN,
                     held: list[dict] = (), more: dict | None = None) -> list[tuple[str, list[str]]]:
    """(title, sentences) in the order a reader asks: the answers across k and budget (a sweep's questions),
    each like-for-like comparison, why a condition falls short (crossed tickets, the rewind points' anatomy), the
    seeds each was decided at (--seeds=auto), stability. `more`: by_option, crossed, anatomy, seeds_auto. Sections
    without sentences are left out."""
    more = more or {}
    excluded = [i for i in incomplete if i.get("excluded")]
    sections = [("Across k and across pretraining length", across.sentences(by_k, by_budget)),
                ("Like-for-like comparisons", findings(found, notes, excluded, family, margin)),
                ("Across an option", across_option.sentences(more.get("by_option", []))),
                ("Why a condition falls short", crossed.sentences(more.get("crossed", []))
                 + anatomy.sentences(more.get("anatomy", [])) + _no_weights(conditions, found, more)),
                ("Seeds until decided", sequential.sentences(more.get("seeds_auto", []))),
                ("Stability to SGD noise", stability_report.sentences(conditions, stability)),
                ("What was held equal", held_equal_sentences(held))]
    return [(title, lines) for title, lines in sections if lines]


def _no_weights(conditions, found, more: dict) -> list[str]:
    """Said where records came from W&B (verified by their manifest, no weights): why nothing is split."""
    from_wandb = any(r.get("verified_by") == "manifest" for c in conditions for r in c.records)
    if not from_wandb or more.get("anatomy") or more.get("crossed") or not any(
            c.question in ("pretext", "rewind_vs_reset") for c in found):
        return []
    return ["Records from W&B carry no weights and no crossed tickets, so this report cannot say whether a "
            "difference lies in the mask or the weights: run `earlyphase report` on the runs folder for that."]


def scoring_iterations(c) -> int | None:
    """The supervised iterations a condition spent scoring examples before its pretraining (subset easy/hard)."""
    return (c.details.get("pretext") or {}).get("scoring_iterations")


CAPTIONS = {  # what each figure answers, printed under it
    "accuracy_vs_k.png": "Does a ticket rewound to k match the dense network, and from which k? Left: accuracy "
                         "against k per density (ringed: the smallest k that matches); right: rewinding to k minus "
                         "reset, paired by seed.",
    "pretext_vs_budget.png": "Does pretraining for k steps give as good a rewind point as k supervised steps? Left: "
                             "each task against its budget beside rewinding to the same k, reset and both dense "
                             "networks; right: task minus rewind k, paired by seed, marked by verdict.",
    "accuracy_vs_density.png": "How accurate is each condition's ticket as it is pruned? Mean accuracy with its 95% "
                               "interval against the weights remaining, each seed a dot.",
    "paired_differences.png": "Which differences are real? Each comparison's paired difference per density with its "
                              "95% interval, marked by verdict, each seed a dot.",
    "stability.png": "Is the rewind point stable to SGD noise? Instability against k (left) and the test error along "
                     "the linear path between two copies (right).",
    "early_phase_stats.png": "How do the weights move in the early phase? Whole-network statistics of the dense "
                             "runs (and the pretrainings) against the iteration.",
    "early_phase_stats_tickets.png": "The same statistics for each condition's sparsest ticket.",
    "perturbations.png": "Do the controls and perturbed rewind points fall short of the ticket? Accuracy against "
                         "density, mean ± std over seeds.",
}


def per_seed_table(conditions: list[Condition]) -> list[str]:
    """Each condition's ticket accuracy per seed and level (the numbers behind every mean and interval)."""
    lines = ["## Per-seed accuracy", "", "Test accuracy (%) of each seed's ticket, by level (density).", ""]
    for c in conditions:
        levels = sorted({r["level"] for r in c.records if r["kind"] == "trunk"})
        seeds = sorted({r["seed"] for r in c.records if r["kind"] == "trunk"})
        values = {lvl: by_seed(c.records, lvl) for lvl in levels}
        lines += [f"**{c.label}**", "", "| level (density) | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|---|" + "---|" * len(seeds)]
        for lvl in levels:
            d = next(iter(values[lvl].values()))[1]
            cells = [f"{100 * values[lvl][s][0]:.2f}" if s in values[lvl] else "-" for s in seeds]
            lines.append(f"| {lvl} ({density(d)}) | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def render_markdown(conditions, found, sections: list[tuple[str, list[str]]], incomplete, figures: list[str],
                    stability: str | None = None, by_k=(), by_budget=(), sources: str = "",
                    more: dict | None = None) -> str:
    more = more or {}
    lines = ["# earlyphase report", "", "## Findings", ""]
    for title, sentences in sections:
        lines += [f"### {title}", ""] if len(sections) > 1 else []
        lines += [f"- {s}" for s in sentences] + [""]
    lines += ["", f"Differences are paired by seed (same initialisation and data order): the mean of the per-seed "
                  f"differences in accuracy points and its {CONFIDENCE:.0%} t interval; a difference is called only "
                  f"when the interval excludes 0 with {MIN_SEEDS} or more seeds. Comparisons stay within one setting "
                  f"and one k: a pretext condition against supervised rewinding to its own k, rewinding against "
                  f"reset, each ticket against its controls.", ""]
    for number, fig in enumerate(figures, 1):
        lines += [f"![{fig}]({fig})", "", f"*Figure {number} ({fig}). {CAPTIONS.get(fig, '')}*", ""]
    lines += ["## Tickets", "",
              "Test accuracy (%) by density: mean ± sample std over seeds; in brackets the paired difference to the "
              "condition in *compared with* and its 95% interval (`*`: the interval excludes 0, n ≥ 3).", ""]
    lines += ticket_table(conditions, found)
    lines += across_figures.tables(by_k, by_budget)
    lines += across_option.table(more.get("by_option", []))
    lines += crossed.table(more.get("crossed", []))
    lines += anatomy.table(more.get("anatomy", []))
    lines += stability_report.table(conditions, stability)
    lines += ["## Controls", "",
              "Controls and perturbed rewind points: accuracy (%) mean ± std; in brackets the ticket's paired "
              "advantage over it (ticket − control) and its 95% interval.", ""]
    lines += control_table(found)
    lines += ["## Conditions", ""]
    for c in conditions:
        seeds = sorted({r["seed"] for r in c.records})
        shown = {k: v for k, v in c.details.items() if v not in (None, "")}
        cost = scoring_iterations(c)
        scored = f" (+ {cost} iterations of scoring runs per seed, beside the budget)" if cost else ""
        lines += [f"### {c.label}", "", f"k = {c.k}it{scored}; seeds: {seeds}; runs: {len(c.runs)}", "",
                  "```", json.dumps(shown, indent=1, sort_keys=True, default=str), "```", ""]
    lines += ["## Incomplete and excluded runs", ""]
    lines += [f"- {i['run']}: {i.get('condition', '?')} seed {i.get('seed', '?')}: {i['why']}" for i in incomplete] or [
        "None."
    ]
    lines += [""] + per_seed_table(conditions)
    if sources:
        lines += ["", "## Sources", "", sources]
    return "\n".join(lines) + "\n"


def render_html(markdown_text: str, out_dir: Path) -> str:
    """A self-contained page: Python-Markdown's rendering, figures embedded as base64 PNG."""
    import markdown

    # a table of contents first; the tables scroll sideways rather than wrap their cells into paragraphs
    body = markdown.markdown("[TOC]\n\n" + markdown_text, extensions=["tables", "fenced_code", "toc"])

    def embed(match: re.Match) -> str:
        path = out_dir / match.group(1)
        if not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"/]+\.png)"', embed, body)
    style = ("body{font-family:sans-serif;max-width:72em;margin:auto;padding:0 1em}table{border-collapse:collapse;"
             "font-size:90%;display:block;overflow-x:auto}"
             "td,th{border:1px solid #ccc;padding:2px 6px;white-space:nowrap}img{max-width:100%}"
             ".toc{background:#f6f6f6;padding:2px 1em;font-size:90%;columns:2}"
             "p em:only-child{color:#444}"
             "pre{background:#f6f6f6;padding:4px}code{background:#f6f6f6}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>earlyphase report</title><style>{style}</style>"
            f"</head><body>\n{body}\n</body></html>\n")


def _json(conditions, found, sentences: list[str], incomplete, stability: str | None = None, by_k=(),
          by_budget=(), family: dict | None = None, margin: float = DEFAULT_MARGIN, held=(),
          more: dict | None = None) -> dict:
    def diff(d):
        return {"level": d.level, "density": d.density, "n": d.n, "mean": d.mean, "low": d.low, "high": d.high,
                "called": d.called, "seeds": d.seeds, "values": d.values, "p": d.p, "p_holm": d.p_holm,
                "detectable": d.detectable, "seeds_for_margin": d.seeds_for(margin)}

    return {"conditions": [{"label": c.label, "kind": c.kind, "k": c.k, "seeds": sorted({r["seed"] for r in c.records}),
                            "curve": curve(c.records), "runs": sorted(r.name for r in c.runs),
                            **({"scoring_iterations": scoring_iterations(c)} if scoring_iterations(c) else {})}
                           for c in conditions],
            "comparisons": [{"question": c.question, "subject": c.subject_label, "reference": c.reference_label,
                             "differences": [diff(d) for d in c.differences]} for c in found],
            "findings": sentences,
            "stability": stability_report.as_json(conditions, stability),
            "by_k": list(by_k), "by_budget": list(by_budget), "family": family, "held_equal": list(held),
            **{key: (more or {}).get(key, []) for key in ("by_option", "crossed", "anatomy")},
            "seeds_auto": sequential.as_json((more or {}).get("seeds_auto", [])),
            "confidence": CONFIDENCE, "min_seeds": MIN_SEEDS, "match_margin": margin, "incomplete": incomplete}


def write_report(folders, out_dir: Path, extra_figures=None, stability: str | None = None,
                 match_margin: float = DEFAULT_MARGIN) -> Path:
    """Write report.md, report.html, report.json and the figures into out_dir; returns out_dir.

    folders: study directories, runs folders or run directories (several are merged). extra_figures: None =
    the standard analyses (reporting.analysis), each drawn only where runs have the data; () = none.
    stability: the path setting the findings use (`bn=MODE,points=N`; default: reporting.stability's choice).
    match_margin: the equivalence bound of "tickets match" (a fraction: 0.01 = one point)."""
    folders = [Path(f) for f in ([folders] if isinstance(folders, (str, Path)) else folders)]
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"no runs folder at {folder}: pass the --out folder of your runs or a study directory")
    conditions, incomplete = collect(folders)
    if not any(c.records for c in conditions):
        pending = f" ({len(incomplete)} runs or units not finished)" if incomplete else ""
        raise UsageError(f"no finished IMP level under {', '.join(map(str, folders))}{pending}: run or finish "
                         f"`earlyphase study` or `earlyphase imp` there first")
    conditions = [c for c in conditions if c.records]
    found, notes = comparisons(conditions)
    by_k, by_budget = across.answers(conditions, found, table_levels, match_margin, stability)
    family = holm_family(found, by_k)
    held = held_equal(conditions)
    more = {"by_option": across_option.answers(conditions, found, table_levels, match_margin),
            "crossed": crossed.answers(conditions, found, crossed.collect_crossed(folders)),
            "anatomy": anatomy.anatomy(found), "seeds_auto": sequential.recorded(folders)}
    out_dir = Path(out_dir)
    with swapped_in(out_dir) as staging:  # built aside, swapped in whole (report_folder.py)
        _write(staging, conditions, found, notes, incomplete, stability, by_k, by_budget, family, held,
               match_margin, extra_figures, more)
    return out_dir


def _write(out_dir: Path, conditions, found, notes, incomplete, stability, by_k, by_budget, family, held,
           match_margin: float, extra_figures, more: dict | None = None) -> None:
    """The report's files into out_dir (a staging folder)."""
    drawn = [("accuracy_vs_k.png", lambda p: across_figures.accuracy_vs_k(by_k, p)),
             ("pretext_vs_budget.png", lambda p: across_figures.pretext_vs_budget(by_budget, p)),
             ("accuracy_vs_density.png", lambda p: accuracy_figure(conditions, found, p)),
             ("paired_differences.png", lambda p: difference_figure(found, p, match_margin)),
             ("pretext_vs_option.png", lambda p: across_option.figure((more or {}).get("by_option", []), p)),
             ("crossed.png", lambda p: crossed.figure((more or {}).get("crossed", []), p)),
             ("anatomy.png", lambda p: anatomy.figure((more or {}).get("anatomy", []), p)),
             ("stability.png", lambda p: stability_report.figure(conditions, p, stability))]
    figures = [name for name, draw in drawn if draw(out_dir / name)]
    if extra_figures is None:
        from .analysis import figures as analysis_figures

        extra_figures = analysis_figures()
    for make in extra_figures:  # callables (conditions, out_dir) -> file name | None
        name = make(conditions, out_dir)
        if name:
            figures.append(name)
    sections = finding_sections(conditions, found, notes, incomplete, stability, by_k, by_budget, family,
                                match_margin, held, more)
    sentences = [s for _, lines in sections for s in lines]
    markdown_text = render_markdown(conditions, found, sections, incomplete, figures, stability, by_k, by_budget,
                                    verification_note(conditions), more)
    write_text_atomic(out_dir / "report.md", markdown_text)
    write_text_atomic(out_dir / "report.html", render_html(markdown_text, out_dir))
    write_json_atomic(out_dir / "report.json", _json(conditions, found, sentences, incomplete, stability, by_k,
                                                     by_budget, family, match_margin, held, more))


def verification_note(conditions: list[Condition]) -> str:
    """How the parts shown were verified: by their final.pt (local runs) or by the records manifest (W&B)."""
    by = [r.get("verified_by") for c in conditions for r in c.records]
    manifest = by.count("manifest")
    if not manifest:
        return ""
    return (f"{len(by) - manifest} parts were verified by their final.pt (its archive's CRCs) and {manifest} by the "
            f"sha256 their run's records manifest lists (records from W&B, downloaded without weights: the weights "
            f"stay on the machine that trained them).")


def _log_mode(asked: str | None) -> str | None:
    """The W&B mode --wandb_log asks for; refused up front where W&B is off, before any work."""
    if asked is None:
        return None
    from ..jobs.wandb_log import default_mode

    mode = default_mode() if asked == "default" else asked
    if mode == "disabled":
        raise UsageError("--wandb_log: W&B is off here (no API key, WANDB_MODE unset or disabled): run `wandb login`, "
                         "or use --wandb_log=offline and `wandb sync` later")
    return mode


def main(argv: list[str]) -> int:
    """earlyphase report [FOLDER ...] [-o OUT_DIR] [--wandb=ENTITY/PROJECT[/SWEEP_ID]] ..."""
    opts, folders = arguments.report(argv)
    out = opts.out_dir
    mode = _log_mode(opts.wandb_log)
    if opts.wandb:
        entity, project, sweep = wandb_source.parse_path(opts.wandb)
        if out is None:
            out = Path("reports") / "_".join(x for x in (entity, project, sweep) if x)
        folders += wandb_source.records(opts.wandb, opts.wandb_cache)
    out_dir = write_report(folders, Path(out).expanduser() if out else folders[0] / "report",
                           match_margin=opts.match_margin / 100)
    if mode is not None:
        from ..jobs.wandb_log import WandbLogger

        entity, project, _ = wandb_source.parse_path(opts.wandb) if opts.wandb else (None, "earlyphase", None)
        logger = WandbLogger(mode, project, entity, directory=out_dir)
        logger.report(out_dir, out_dir.name)
        logger.close()
    print(f"report: {out_dir / 'report.md'} and report.html")
    print(out_dir)
    return 0
