"""`earlyphase imp`, its records: tickets.json (one record per finished part), the printed table, and the check that
a run directory's config.json still names it."""

from __future__ import annotations

import re
from pathlib import Path

from earlyphase.imp import controls as imp_controls
from earlyphase.imp import masks as imp_masks
from earlyphase.imp import perturb as imp_perturb

from ..engine import checkpoints, records
from ..engine.errors import UsageError
from ..engine.run_dir import load_bound
from .identity import recorded_imp_run_name
from .imp_setup import ImpRun, control_seed


def _record(imp_run: ImpRun, level: int, kind: str, part: Path) -> dict:
    summary = records.read(part / "summary.json", records.SUMMARY, fix="move it away to train that part again")
    density_path = part / "density.json"
    density = (records.read(density_path, records.DENSITY, fix="move it away: it is rebuilt from mask.pt")
               ["density"] if density_path.exists() else imp_masks.density(load_bound(part / "mask.pt")))
    if level == 0:
        rewind = imp_run.level0_description
    elif imp_controls.reinitialises(kind):
        rewind = f"fresh initialisation (seed {control_seed(imp_run, kind, level)})"
    elif kind.startswith("perturb_"):
        rewind = f"{imp_run.rewind_description}, perturbed: {kind.removeprefix('perturb_')}"
    else:
        rewind = imp_run.rewind_description
    record = {"level": level, "kind": kind, "density": density, "test_accuracy": summary["test_accuracy"],
              "train_loss": summary["train_loss"], "start_step": summary["start_step"],
              "end_step": summary["end_step"], "seed": imp_run.cfg.seed, "rewind": rewind,
              "run_dir": part.relative_to(imp_run.out).as_posix()}
    if kind.startswith("perturb_"):
        info = checkpoints.read_json(part / "perturbation.json", missing_ok=True,
                                     fix="move it away: it is rewritten when the part is rerun") or {}
        record.update(
            perturbation=info.get("perturbation"), perturb_noise=info.get("noise"), control_seed=info.get("seed")
        )
    elif kind != "trunk":
        record["control_seed"] = control_seed(imp_run, kind, level)
    return record


def collect_tickets(imp_run: ImpRun) -> list[dict]:
    """Records of every finished part in the run directory (levels ascending, trunk before controls)."""
    levels = sorted(int(m.group(1)) for p in imp_run.out.glob("level_*") if (m := re.fullmatch(r"level_(\d+)", p.name)))
    records = []
    for level in levels:
        trunk = imp_run.out / f"level_{level}"
        perturbed = sorted((p for p in trunk.glob("perturb_*") if p.is_dir()), key=perturb_order)
        for kind, part in (
            [("trunk", trunk)] + [(c, trunk / c) for c in imp_controls.CONTROLS] + [(p.name, p) for p in perturbed]
        ):
            if (part / "summary.json").exists():
                records.append(_record(imp_run, level, kind, part))
    return records


def perturb_order(part: Path) -> tuple:
    """Canonical order of perturbation parts (imp.perturb.PERTURBATIONS; noise scales by name)."""
    name = part.name.removeprefix("perturb_")
    base = name if name in imp_perturb.PERTURBATIONS else "noise"
    return imp_perturb.PERTURBATIONS.index(base), name


def write_tickets(imp_run: ImpRun) -> list[dict]:
    records = collect_tickets(imp_run)
    checkpoints.write_json_atomic(imp_run.out / "tickets.json", records)
    return records


def format_table(records: list[dict]) -> str:
    """level | density % | trunk accuracy | one column per control present."""
    kinds = [c for c in imp_controls.CONTROLS if any(rec["kind"] == c for rec in records)]
    kinds += sorted(
        {rec["kind"] for rec in records if rec["kind"].startswith("perturb_")}, key=lambda k: perturb_order(Path(k))
    )
    by_level = {}
    for rec in records:
        by_level.setdefault(rec["level"], {})[rec["kind"]] = rec
    header = ["level", "density %", "trunk acc"] + [f"{k} acc" for k in kinds]
    rows = []
    for level, parts in sorted(by_level.items()):
        trunk = parts.get("trunk")
        cells = [str(level), f"{100 * trunk['density']:.2f}" if trunk else "-",
                 f"{trunk['test_accuracy']:.4f}" if trunk else "-"]
        cells += [f"{parts[k]['test_accuracy']:.4f}" if k in parts else "-" for k in kinds]
        rows.append(cells)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header] + rows)


def check_recorded_config(out: Path) -> None:
    """A run directory's config.json must name it: one edited after the run (lr 0.1 -> 0.5) would have the run's
    old results reported under the new config, or be silently rewritten. Platform fields (levels, controls, ...)
    may differ: they name nothing, and the new record replaces the old."""
    path = out / "config.json"
    recorded = records.read(path, records.IMP_CONFIG, missing_ok=True, fix=f"move {out} away to run it again")
    named = recorded_imp_run_name(recorded) if recorded is not None else out.name
    if named != out.name:
        raise UsageError(f"{path} names another run ({named}): it was edited after the run; put back "
                         f"the config it ran with, or move {out} away to run it again")
