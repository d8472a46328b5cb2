"""What a report's comparisons held equal, per setting, read from the runs' own records (report.json `held_equal`).

For each setting: T (the run's length in iterations) and the iterations per epoch; for each k run, k in iterations,
in epochs and as a share of T, the supervised iterations every IMP level trains (T - k) and the learning rate the
schedule gives at k (where the levels resume it); the thread counts the runs used (CPU results depend on them);
and the protocol: pretraining for k iterations replaces the run's first k, so a pretext condition and `rewind k`
differ in the task alone.
"""

from __future__ import annotations

from types import SimpleNamespace

from ..engine import records
from ..engine.errors import UsageError
from ..jobs import setup
from .runs import Condition, by_setting

PROTOCOL = ("pretraining for k iterations replaces the run's first k: every level of every condition at k trains "
            "[k, T) with the schedule continuing from k, with the same seeds and data order")


def _read(run, name: str, shape) -> dict:
    """A record of the run, checked; {} where the run has none (records from W&B hold no level summaries)."""
    return records.read(run / name, shape, fix="move the run away or rerun the command that made it",
                        missing_ok=True) or {}


def _lr_at(config: dict, per_epoch: int | None):
    """The schedule's learning rate as a function of k, or None where the config does not say it."""
    if per_epoch is None and "ep" in f"{config.get('milestone_steps')}{config.get('warmup_steps')}":
        return None  # epochs to iterations needs the run's iterations per epoch
    try:
        return setup.schedule(SimpleNamespace(**config), per_epoch or 1).lr_at
    except (AttributeError, TypeError, ValueError, UsageError):
        return None


def held_equal(conditions: list[Condition]) -> list[dict]:
    out = []
    for group in by_setting(conditions):
        runs = [run for c in group for run in c.runs]
        if not runs:
            continue
        config = _read(runs[0], "config.json", records.IMP_CONFIG)
        per_epoch = _read(runs[0] / "level_0", "summary.json", records.SUMMARY).get("iterations_per_epoch")
        total = config.get("training_steps_it") or max((r.get("end_step") or 0 for c in group for r in c.records),
                                                       default=0) or None
        lr_at = _lr_at(config, per_epoch)
        threads = sorted({_read(run, "config.json", records.IMP_CONFIG).get("threads") for run in runs} - {None})
        ks = sorted({c.k or 0 for c in group})
        out.append({
            "setting": ", ".join(c.label for c in group), "T": total, "iterations_per_epoch": per_epoch,
            "batch_size": config.get("batch_size"), "threads": threads, "protocol": PROTOCOL,
            "k": [{"k": k, "epochs": k / per_epoch if per_epoch else None, "share_of_T": k / total if total else None,
                   "supervised_iterations_per_level": total - k if total else None,
                   "lr_at_k": lr_at(k) if lr_at else None,
                   "conditions": [c.label for c in group if (c.k or 0) == k]} for k in ks]})
    return out


def sentences(held: list[dict]) -> list[str]:
    """One sentence per setting, for the report's methods paragraph."""
    lines = []
    for h in held:
        if not h["T"]:
            continue
        ks = "; ".join(_k_text(row) for row in h["k"])
        per_epoch = (f" ({h['iterations_per_epoch']} per epoch at batch {h['batch_size']})"
                     if h["iterations_per_epoch"] else "")
        threads = ", ".join(map(str, h["threads"])) or "not recorded"
        lines.append(f"Held equal ({h['setting']}): T = {h['T']}it{per_epoch}; {ks}; threads {threads}; {PROTOCOL}.")
    return lines


def _k_text(row: dict) -> str:
    facts = [f"{row['epochs']:.3g} epochs" if row["epochs"] is not None else "",
             f"{100 * row['share_of_T']:.3g}% of T",
             f"every level trains T - k = {row['supervised_iterations_per_level']}it"
             + (f" from lr {row['lr_at_k']:g}" if row["lr_at_k"] is not None else "")]
    return f"k = {row['k']}it ({', '.join(f for f in facts if f)})"
