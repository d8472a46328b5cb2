"""`earlyphase study`: one command runs a whole comparison, then writes the report.

For each condition and seed: pretrain (pretext conditions) -> IMP levels (+ controls where asked) ->
ticket records; then `report.write_report` over exactly this study's IMP runs. Conditions:
- `reset`: IMP rewinding to 0it (the original lottery-ticket reset);
- `rewind`: standard rewinding to `--rewind_step` of the dense run;
- every pretext task that `earlyphase pretext list` shows (built-in and plugins), each pretrained for
  `--pretrain_steps` (or its entry in `--pretrain_budgets=name=steps,...`), its result the rewind point.

All units reuse the run directories of `earlyphase pretrain` and `earlyphase imp` under `--out`, so killing
and rerunning a study finishes only the remaining work, and a unit shared with another study or sweep is
never redone. `--concurrent=K` advances all units in lock-step and runs their trainings K at a time
on one device (earlyphase.studies.schedule); with the default engine the results are the sequential
study's bit for bit, in the same run directories. The study itself writes `study_HASH/study.json` (its
units and their run directories) and `study_HASH/report/`.

Presets (`--preset`) set defaults field by field; every flag given on the command line wins:
- `quick` (default): digits, all conditions, seeds 0,1, a small budget (see PRESETS: width 12, 5 epochs,
  3 levels of 75% down to 1.6% density), the random-reinit control for `rewind`; sized to finish in
  under 3 minutes on 2 CPU cores.
- `paper`: CIFAR-10 with the paper's training (160 epochs, batch 128), 8 levels of 20%, seeds 0,1,2,
  k = 500it, controls random_reinit and random_prune_layerwise for `rewind`, pretext budgets of
  PRESETS["paper"]["pretrain_budgets"]. Meant for GPU machines.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, fields

from . import imp_job, pretrain_job, schedule
from .checkpoints import write_json_atomic
from .config import option, parse_overrides, platform, run_dir
from .wandb_log import wandb_logger
from .errors import UsageError
from .imp_job import ImpConfig
from .pretrain_job import PretrainConfig
from .report import write_report
from .schedule import Job

PRESETS = {
    # 2 seeds x 7 conditions x 4 trainings (+ 3 controls per seed), about 2 s each on 2 CPU cores.
    "quick": dict(dataset="digits", seeds="0,1", width=12, batch_size=128, training_steps="5ep",
                  milestone_steps="3ep,4ep", eval_every=5, levels=3, prune_fraction=0.75, rewind_step="12it",
                  pretrain_steps="24it", controls="random_reinit", control_conditions="rewind"),
    "paper": dict(dataset="cifar10", seeds="0,1,2", levels=8, prune_fraction=0.2, rewind_step="500it",
                  pretrain_steps="500it", pretrain_budgets="rotation=40ep,simclr=40ep,random_labels=500it,blur=500it",
                  controls="random_reinit,random_prune_layerwise", control_conditions="rewind", eval_every=4),
}
BASELINES = ("reset", "rewind")


@dataclass
class StudyConfig(ImpConfig, PretrainConfig):
    """A comparison of rewind points: the fields of `earlyphase imp` and `earlyphase pretrain`, plus these."""

    preset: str = platform("quick", "quick (digits, CPU, minutes) or paper (CIFAR-10, GPU); sets defaults")
    conditions: str = option("all", "comma-separated: reset, rewind and pretext names; all = every one")
    seeds: str = option("0,1", "comma-separated seeds; each condition runs once per seed")
    pretrain_budgets: str = option("", "per-task pretraining lengths overriding --pretrain_steps: rotation=2ep,...")
    control_conditions: str = option("rewind", "conditions that also run --controls (all = every one)")


def parse(argv: list[str]) -> StudyConfig:
    preset = "quick"
    for arg in argv:
        if arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    if preset not in PRESETS:
        raise UsageError(f"--preset={preset}: choose one of {', '.join(PRESETS)}")
    return parse_overrides(StudyConfig, argv, base=StudyConfig(preset=preset, **PRESETS[preset]))


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def available_conditions() -> list[str]:
    from earlyphase.pretext import registry

    return list(BASELINES) + [p.name for p in registry.discover() if p.task is not None]


def plan_units(cfg: StudyConfig) -> list[dict]:
    """The study's units in order: one per (condition, seed), validated before anything runs."""
    known = available_conditions()
    wanted = known if cfg.conditions.strip() == "all" else _split(cfg.conditions)
    unknown = [c for c in wanted if c not in known]
    if unknown or not wanted:
        raise UsageError(f"--conditions: unknown {', '.join(unknown) or '(none given)'}; available: {', '.join(known)} (or all)")
    try:
        seeds = [int(s) for s in _split(cfg.seeds)]
    except ValueError:
        raise UsageError(f"--seeds={cfg.seeds}: write integers, e.g. --seeds=0,1,2") from None
    if not seeds:
        raise UsageError("--seeds: give at least one seed, e.g. --seeds=0")
    budgets = {}
    for item in _split(cfg.pretrain_budgets):
        name, eq, steps = item.partition("=")
        if not eq or name not in known:
            raise UsageError(f"--pretrain_budgets: {item!r} is not name=steps with a known task (e.g. rotation=2ep)")
        budgets[name] = steps
    with_controls = known if cfg.control_conditions.strip() == "all" else _split(cfg.control_conditions)
    return [{"condition": c, "seed": s, "pretrain_steps": budgets.get(c, cfg.pretrain_steps),
             "controls": cfg.controls if c in with_controls else ""} for c in wanted for s in seeds]


def _fields_of(cls, cfg) -> dict:
    return {f.name: getattr(cfg, f.name) for f in fields(cls)}


def unit_configs(cfg: StudyConfig, unit: dict) -> tuple[PretrainConfig | None, ImpConfig]:
    imp = ImpConfig(**_fields_of(ImpConfig, cfg))
    imp = dataclasses.replace(imp, seed=unit["seed"], controls=unit["controls"])
    if unit["condition"] == "reset":
        return None, dataclasses.replace(imp, rewind_step="0it", rewind_from=None)
    if unit["condition"] == "rewind":
        return None, dataclasses.replace(imp, rewind_from=None)
    pre = PretrainConfig(**_fields_of(PretrainConfig, cfg))
    pre = dataclasses.replace(pre, seed=unit["seed"], pretext=unit["condition"], pretrain_steps=unit["pretrain_steps"])
    return pre, dataclasses.replace(imp, rewind_step=None)  # the pretrained point is the rewind point


def validate_units(cfg: StudyConfig, units: list[dict]) -> None:
    """Check every unit's configs up front, so a typo fails before hours of work, not after."""
    for unit in units:
        pre, imp = unit_configs(cfg, unit)
        if pre is not None:
            pretrain_job.validate(pre)
        imp_job.prepare(dataclasses.replace(imp, rewind_from=None))  # checks only; writes nothing


def work(cfg: StudyConfig) -> Job:
    """The study as a scheduler job: its units one after another, or all in lock-step with --concurrent > 1
    (so their trainings run together); returns (study dir, report dir)."""
    units = plan_units(cfg)
    validate_units(cfg, units)
    out = run_dir("study", cfg)
    out.mkdir(parents=True, exist_ok=True)
    logger = wandb_logger(cfg, group=out.name)
    record = {"config": dataclasses.asdict(cfg), "units": units}
    write_json_atomic(out / "study.json", record)
    started = time.monotonic()

    def unit_job(i: int, unit: dict) -> Job:
        name = f"{unit['condition']} seed {unit['seed']}"
        print(f"[{i}/{len(units)}] {name} ({time.monotonic() - started:.0f}s)", file=sys.stderr)
        pre, imp = unit_configs(cfg, unit)
        if pre is not None:
            with logger.router(f"{name}: pretrain", dataclasses.asdict(pre), "pretrain") as sink:
                pre_dir, _ = yield from pretrain_job.work(pre, sinks=[sink])
            unit["pretrain_dir"] = str(pre_dir)
            imp = dataclasses.replace(imp, rewind_from=str(pre_dir))
        with logger.router(name, dataclasses.asdict(imp)) as sink:
            imp_dir, _ = yield from imp_job.work(imp, sinks=[sink])
        unit["imp_dir"] = str(imp_dir)
        write_json_atomic(out / "study.json", record)

    jobs = [unit_job(i, unit) for i, unit in enumerate(units, 1)]
    try:
        yield from (schedule.gather(jobs) if cfg.concurrent > 1 else schedule.chain(jobs))
    finally:
        logger.close()
    report_dir = write_report(out.parent, out / "report", imp_dirs=[u["imp_dir"] for u in units])
    print(f"study done in {time.monotonic() - started:.0f}s: report at {report_dir / 'report.md'}", file=sys.stderr)
    return out, report_dir


def run(cfg: StudyConfig) -> tuple:
    return schedule.run(work(cfg), cfg.concurrent, cfg.concurrent_engine)


def main(argv: list[str]) -> int:
    cfg = parse(argv)
    out, report_dir = run(cfg)
    print((report_dir / "report.md").read_text().split("## Controls")[0].rstrip())
    print(out)
    return 0
