"""Comparison reports from local run records: which condition stands in for standard rewinding, and where.

`earlyphase report RUNS_DIR [-o OUT_DIR] [--reference=LABEL]` reads every IMP run below RUNS_DIR
(`imp_*/config.json` + `tickets.json`) and writes report.md, report.html (self-contained, figures
embedded) and PNG figures. It needs no network.

Conditions are derived from each IMP run's own config, so runs made by a study, a sweep or by hand are
all understood: no `rewind_from` and rewind step 0 -> `reset`; no `rewind_from` otherwise -> `rewind K`;
a `rewind_from` made by `earlyphase pretrain` -> the pretext name and its budget (`rotation 400it`, with
`sparse` for masked pretraining). Runs that differ only in their seed form one condition (mean and
sample standard deviation over seeds). The reference condition for differences is `--reference`, else the
`rewind` condition with the most seeds (ties: the smallest K).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

TABLE_DENSITIES = (1.0, 0.512, 0.262, 0.168, 0.086)
# config fields that say nothing about the condition itself
_NOT_CONDITION = {"seed", "out", "rewind_from", "device", "data_dir", "download", "levels", "controls",
                  "eval_every", "checkpoint_every", "wandb", "wandb_project", "wandb_entity", "wandb_group", "kind",
                  "rewind_from_sha256", "mask", "mask_digest", "compile", "concurrent", "preset",
                  "perturb", "perturb_noise", "perturb_kinds", "track_steps"}


@dataclass
class Condition:
    label: str
    key: str
    details: dict
    records: list = field(default_factory=list)  # ticket records, each with "seed"
    runs: list = field(default_factory=list)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pretrain_config(rewind_from: str, imp_dir: Path) -> dict | None:
    path = Path(rewind_from).expanduser()
    if not path.is_absolute() and not path.exists():
        path = imp_dir.parent / path
    folder = path if path.is_dir() else path.parent
    return _read_json(folder / "config.json")


def describe_condition(config: dict, imp_dir: Path) -> tuple[str, dict]:
    """(label, details) of an IMP run's condition, from its config (and its rewind point's config)."""
    details = {k: v for k, v in config.items() if k not in _NOT_CONDITION}
    if config.get("rewind_from"):
        pre = _pretrain_config(config["rewind_from"], imp_dir) or {}
        name = pre.get("pretext", Path(config["rewind_from"]).name)
        budget = pre.get("pretrain_steps") or ""
        sparse = " sparse" if pre.get("mask") else ""
        details.update({f"pretrain.{k}": v for k, v in pre.items() if k not in _NOT_CONDITION})
        details["pretrain.sparse"] = bool(pre.get("mask"))
        return f"{name} {budget}{sparse}".strip(), details
    step = str(config.get("rewind_step", "0it"))
    return ("reset" if step in ("0it", "0ep", "0ep0it") else f"rewind {step}"), details


def imp_runs(runs_dir: Path) -> list[Path]:
    """The IMP runs a report covers: a study's own (its study.json), else every imp_* below runs_dir."""
    study = _read_json(Path(runs_dir) / "study.json")
    if study and all("imp_dir" in u for u in study.get("units", [])):
        return [Path(u["imp_dir"]) for u in study["units"]]
    return [p.parent for p in sorted(Path(runs_dir).rglob("imp_*/config.json"))]


def collect(runs_dir: Path, imp_dirs=None) -> tuple[list[Condition], list[dict]]:
    """Conditions with their ticket records, and the incomplete runs (listed, never dropped silently)."""
    conditions: dict[str, Condition] = {}
    incomplete = []
    for imp_dir in (imp_runs(runs_dir) if imp_dirs is None else [Path(d) for d in imp_dirs]):
        config_path = imp_dir / "config.json"
        config = _read_json(config_path)
        if config is None:
            incomplete.append({"run": str(imp_dir), "why": "config.json unreadable"})
            continue
        label, details = describe_condition(config, imp_dir)
        key = json.dumps(details, sort_keys=True, default=str)
        cond = conditions.setdefault(key, Condition(label, key, details))
        tickets = _read_json(imp_dir / "tickets.json")
        if not tickets:
            incomplete.append({"run": str(imp_dir), "condition": label, "seed": config.get("seed"), "why": "no tickets.json yet"})
            continue
        cond.runs.append(str(imp_dir))
        cond.records += [{**r, "seed": r.get("seed", config.get("seed"))} for r in tickets]
        done = {r["level"] for r in tickets if r.get("kind") == "trunk"}
        wanted = set(range(int(config.get("levels", 0)) + 1))
        missing = sorted(wanted - done)
        controls = [c for c in str(config.get("controls") or "").split(",") if c] + list(config.get("perturb_kinds") or [])
        missing_controls = [(lvl, c) for lvl in sorted(done - {0}) for c in controls
                            if not any(r["level"] == lvl and r["kind"] == c for r in tickets)]
        if missing or missing_controls:
            why = []
            if missing:
                why.append(f"levels {missing} not finished")
            if missing_controls:
                why.append(f"{len(missing_controls)} controls not finished")
            incomplete.append({"run": str(imp_dir), "condition": label, "seed": config.get("seed"), "why": "; ".join(why)})
    result = list(conditions.values())
    labels = [c.label for c in result]
    for c in result:  # same label, different settings: tell them apart
        if labels.count(c.label) > 1:
            c.label = f"{c.label} [{hashlib.sha256(c.key.encode()).hexdigest()[:6]}]"
    return sorted(result, key=lambda c: c.label), incomplete


# ------------------------------------------------------------------------------------------ aggregation
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def curve(records: list[dict], kind: str = "trunk") -> list[dict]:
    """Per level: mean density, mean/std accuracy over seeds, and n."""
    levels = sorted({r["level"] for r in records if r["kind"] == kind})
    out = []
    for level in levels:
        rows = [r for r in records if r["kind"] == kind and r["level"] == level and r.get("test_accuracy") is not None]
        if not rows:
            continue
        mean, std = mean_std([r["test_accuracy"] for r in rows])
        out.append({"level": level, "density": statistics.fmean(r["density"] for r in rows), "mean": mean, "std": std, "n": len(rows)})
    return out


def nearest(points: list[dict], density: float) -> dict | None:
    """The point whose density is nearest to `density` on a log scale."""
    if not points:
        return None
    return min(points, key=lambda p: abs(math.log(p["density"]) - math.log(density)))


def pick_reference(conditions: list[Condition], requested: str | None) -> Condition | None:
    if requested:
        for c in conditions:
            if c.label == requested:
                return c
        raise UsageError(f"--reference={requested}: no such condition; have {', '.join(c.label for c in conditions)}")
    rewinds = [c for c in conditions if c.label.startswith("rewind ")]
    if not rewinds:
        return None
    seeds = lambda c: len({r["seed"] for r in c.records})  # noqa: E731
    return sorted(rewinds, key=lambda c: (-seeds(c), _step_it(c.label)))[0]


def _step_it(label: str) -> float:
    text = label.split()[-1]
    return float(text[:-2]) if text.endswith("it") and text[:-2].isdigit() else math.inf


def density_table(conditions: list[Condition], reference: Condition | None, densities=TABLE_DENSITIES) -> list[dict]:
    """Rows: condition x target density -> nearest level's mean +- std, difference to the reference, and
    whether the two means lie within one std (the larger of the two) of each other. A level nearest to
    several targets is shown once; the sparsest level run is added when it lies below every target."""
    ref_curve = curve(reference.records) if reference else []
    rows = []
    for cond in conditions:
        points = curve(cond.records)
        shown = set()
        lowest = min((p["density"] for p in points), default=None)
        for target in (*densities, *([lowest] if lowest is not None and lowest < min(densities) else [])):
            point = nearest(points, target)
            if point is None or point["level"] in shown:  # coarse pruning: one row per level
                continue
            shown.add(point["level"])
            row = {"condition": cond.label, "target": target, **point}
            ref = nearest(ref_curve, point["density"]) if reference else None
            if ref is not None and cond is not reference:
                row["diff"] = point["mean"] - ref["mean"]
                row["within_std"] = abs(row["diff"]) <= max(point["std"], ref["std"])
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ output
def _plot(conditions: list[Condition], reference: Condition | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, cond in enumerate(conditions):
        colour = colours[i % len(colours)]
        for kind in sorted({r["kind"] for r in cond.records}):
            pts = curve(cond.records, kind)
            if not pts:
                continue
            x = [100 * p["density"] for p in pts]
            m = [100 * p["mean"] for p in pts]
            s = [100 * p["std"] for p in pts]
            style = "-" if kind == "trunk" else "--"
            label = cond.label if kind == "trunk" else f"{cond.label}: {kind}"
            ax.plot(x, m, style, color=colour, marker="o" if kind == "trunk" else None, ms=3, label=label)
            ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=colour, alpha=0.15)
    dense_from = reference or (conditions[0] if conditions else None)
    dense = [p for p in curve(dense_from.records) if p["level"] == 0] if dense_from else []
    if dense:
        ax.axhline(100 * dense[0]["mean"], color="grey", lw=0.8, ls=":", label=f"dense ({dense_from.label})")
    ax.set_xscale("log")
    levels = sorted({float(f"{100 * r['density']:.2g}") for c in conditions for r in c.records
                     if r.get("density") and r.get("kind") == "trunk"}, reverse=True)
    if levels:
        ticks = levels[::max(1, -(-len(levels) // 10))]  # the densities run, at most ~10 labels
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Ticket accuracy vs density (mean +- std over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(p: float | None) -> str:
    return "-" if p is None else f"{100 * p:.2f}"


def render_markdown(conditions, reference, rows, incomplete, figures: list[str]) -> str:
    lines = ["# earlyphase report", ""]
    lines += [f"Reference for differences: **{reference.label}**." if reference else "No standard-rewinding condition found: no differences.", ""]
    for fig in figures:
        lines += [f"![{fig}]({fig})", ""]
    lines += ["## Accuracy at fixed densities", "",
              "Test accuracy (%), mean +- std over seeds, at the level nearest each target density; "
              "diff is to the reference; `~` marks a condition within one std of it.", "",
              "| condition | target density | density | level | accuracy | n | diff | |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = f"{100 * r['diff']:+.2f}" if "diff" in r else ""
        mark = "~" if r.get("within_std") else ""
        lines.append(f"| {r['condition']} | {100 * r['target']:.1f}% | {100 * r['density']:.1f}% | {r['level']} | "
                     f"{_fmt(r['mean'])} +- {_fmt(r['std'])} | {r['n']} | {diff} | {mark} |")
    lines += ["", "## Controls", ""]
    control_rows = [(c.label, k, p) for c in conditions for k in sorted({r["kind"] for r in c.records} - {"trunk"})
                    for p in curve(c.records, k)]
    if control_rows:
        # beside each control or perturbation: the unperturbed ticket of the same level, and the difference
        ticket = {(c.label, p["level"]): p["mean"] for c in conditions for p in curve(c.records)}
        lines += ["Controls and perturbed rewind points (`perturb_*`); ticket = the same level's unperturbed ticket, "
                  "diff = accuracy - ticket.", "",
                  "| condition | control | level | density | accuracy | n | ticket | diff |", "|---|---|---|---|---|---|---|---|"]
        for c, k, p in control_rows:
            t = ticket.get((c, p["level"]))
            diff = f"{100 * (p['mean'] - t):+.2f}" if t is not None else ""
            lines.append(f"| {c} | {k} | {p['level']} | {100 * p['density']:.1f}% | {_fmt(p['mean'])} +- {_fmt(p['std'])} | "
                         f"{p['n']} | {_fmt(t)} | {diff} |")
    else:
        lines.append("No controls were run.")
    lines += ["", "## Conditions", ""]
    for c in conditions:
        seeds = sorted({r["seed"] for r in c.records})
        shown = {k: v for k, v in c.details.items() if v not in (None, "")}
        lines += [f"### {c.label}", "", f"seeds: {seeds}; runs: {len(c.runs)}", "",
                  "```", json.dumps(shown, indent=1, sort_keys=True, default=str), "```", ""]
    lines += ["## Incomplete runs", ""]
    lines += [f"- {i['run']}: {i.get('condition', '?')} seed {i.get('seed', '?')}: {i['why']}" for i in incomplete] or ["None."]
    return "\n".join(lines) + "\n"


def render_html(markdown: str, out_dir: Path) -> str:
    """A self-contained page: the markdown's tables and text, figures embedded as base64 PNG."""
    body, in_code, in_table = [], False, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            body.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            body.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            body.append(("<table>" if not in_table else "") + "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            in_table = True
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1:-1]
            data = base64.b64encode((out_dir / name).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if in_table:
        body.append("</table>")
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>earlyphase report</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"


def write_report(runs_dir: Path, out_dir: Path, reference: str | None = None, extra_figures=None, imp_dirs=None) -> Path:
    """Write report.md, report.html and the figures into out_dir; returns out_dir.

    extra_figures: None = the standard analyses (studies.analysis_report: early-phase statistics and
    perturbations, each drawn only where runs have them); () = none."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if not runs_dir.is_dir():
        raise UsageError(f"no runs folder at {runs_dir}: pass the --out folder of your runs")
    conditions, incomplete = collect(runs_dir, imp_dirs)
    if not conditions:
        raise UsageError(f"no IMP runs under {runs_dir}: run `earlyphase study` or `earlyphase imp` first")
    ref = pick_reference(conditions, reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = ["accuracy_vs_density.png"]
    _plot(conditions, ref, out_dir / figures[0])
    if extra_figures is None:
        from .analysis_report import figures as analysis_figures  # imports this module: import late

        extra_figures = analysis_figures(imp_dirs)
    for make in extra_figures:  # analyses add their own figures: callables (runs_dir, out_dir) -> file name | None
        name = make(runs_dir, out_dir)
        if name:
            figures.append(name)
    rows = density_table(conditions, ref)
    markdown = render_markdown(conditions, ref, rows, incomplete, figures)
    (out_dir / "report.md").write_text(markdown)
    (out_dir / "report.html").write_text(render_html(markdown, out_dir))
    (out_dir / "report.json").write_text(json.dumps({"reference": ref.label if ref else None, "table": rows,
                                                      "incomplete": incomplete}, indent=1, default=str))
    return out_dir


def main(argv: list[str]) -> int:
    """earlyphase report RUNS_DIR [-o OUT_DIR] [--reference=LABEL]"""
    positional, out, reference = [], None, None
    args = iter(argv)
    for arg in args:
        if arg in ("-o", "--out_dir", "--output"):
            out = next(args, None)
            if out is None:
                raise UsageError(f"{arg} needs a folder: -o OUT_DIR")
        elif arg.startswith(("--out_dir=", "--output=")):
            out = arg.split("=", 1)[1]
        elif arg.startswith("--reference="):
            reference = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}: usage: earlyphase report RUNS_DIR [-o OUT_DIR] [--reference=LABEL]")
        else:
            positional.append(arg)
    if len(positional) != 1:
        raise UsageError("usage: earlyphase report RUNS_DIR [-o OUT_DIR] [--reference=LABEL]")
    runs_dir = Path(positional[0]).expanduser()
    out_dir = write_report(runs_dir, Path(out).expanduser() if out else runs_dir / "report", reference)
    print(f"report: {out_dir / 'report.md'} and report.html")
    print(out_dir)
    return 0
