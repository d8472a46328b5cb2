"""`earlyphase study`: one command runs a whole comparison, then writes the report.

For each condition and seed: pretrain (pretext conditions) -> IMP levels (+ controls, stability where
asked) -> ticket records; then `report.write_report` over exactly this study's IMP runs. Conditions:
- `reset`: IMP rewinding to 0it (the original lottery-ticket reset);
- `rewind`: standard rewinding to `--rewind_step` of the dense run;
- every pretext task that `earlyphase pretext list` shows (built-in and plugins), each pretrained for
  `--pretrain_steps` (or its entry in `--pretrain_budgets=name=steps,...`), its result the rewind point.
Like for like: each pretext budget K brings rewinding to K (the same k and supervised budget), and
`supervised` for K steps *is* that unit (plan_units).

All units reuse the run directories of `earlyphase pretrain` and `earlyphase imp` under `--out`, so killing
and rerunning a study finishes only the remaining work, and a unit shared with another study or sweep is
never redone. `--concurrent=K` advances all units in lock-step and runs their trainings K at a time
on one device (earlyphase.studies.engine.schedule); with the default engine the results are the sequential
study's bit for bit, in the same run directories. The study itself writes `study_HASH/study.json` (its
units and their run directories, relative to the runs folder) and `study_HASH/report/`.

Presets (`--preset`) set defaults field by field; every flag given on the command line wins:
- `quick` (default): digits, the default conditions (jobs.config.MAIN_CONDITIONS: reset, rewind and the
  paper's four tasks), seeds 0,1,2, one k = 6it of T = 138it for every condition, 3 levels of 75% down to
  1.6% density, the random-reinit control for `rewind`, the stability of every rewind point (PRESETS); its
  time on 2 CPU cores is measured in the README.
- `paper`: CIFAR-10 with the paper's training (160 epochs, batch 128), 8 levels of 20%, seeds 0,1,2,
  k = 500it, controls random_reinit and random_prune_layerwise for `rewind`, pretext budgets of
  PRESETS["paper"]["pretrain_budgets"] (each with rewinding to the same step). Meant for GPU machines.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from ..engine import schedule, threads
from ..engine.checkpoints import write_json_atomic
from ..engine.errors import UsageError
from ..engine.interpolation import PathSettings
from ..engine.schedule import Job
from ..jobs import imp as imp_job
from ..jobs import imp_cross, setup
from ..jobs import pretrain as pretrain_job
from ..jobs.config import ImpConfig, PretrainConfig, StudyConfig, run_dir
from ..jobs.flags import flat, split_list
from ..jobs.setup import SEED_LIMIT
from ..jobs.wandb_log import wandb_logger
from ..reporting import sequential
from ..reporting.arguments import DEFAULT_MARGIN
from ..reporting.paired import MIN_SEEDS
from ..reporting.report import write_report
from ..reporting.runs import collect
from . import arguments, shared_work
from .arguments import PRESETS  # noqa: F401  (the presets, as the docstring names them)

BASELINES = ("reset", "rewind")
CLAIMS = "claims"  # study_HASH/claims/: which process works on which unit or pair (shared_work)


def parse(argv: list[str]) -> StudyConfig:
    return arguments.study(argv, with_tasks=True)


def available_conditions() -> list[str]:
    from earlyphase.pretext import registry

    return list(BASELINES) + [p.name for p in registry.discover() if p.task is not None]


def broken_plugins() -> list[str]:
    """`NAME (DISTRIBUTION): ERROR` of each installed task that failed to load (`all` cannot include it)."""
    from earlyphase.pretext import registry

    return [f"{p.name} ({p.distribution}): {p.error}" for p in registry.discover() if p.task is None]


def _warn_broken(text: str) -> None:
    """`all` names every task that loads; one that does not is said, not dropped silently."""
    if text.strip() == "all":
        for broken in broken_plugins():
            print(f"earlyphase: warning: --conditions=all leaves out the pretext task {broken}", file=sys.stderr)


def _names(flag: str, text: str, known: list[str]) -> list[str]:
    """The condition names of a flag (`all` = every known one), each known and given once."""
    names = known if text.strip() == "all" else split_list(text)
    unknown = [c for c in names if c not in known]
    if unknown:
        raise UsageError(f"--{flag}: unknown {', '.join(unknown)}; available: {', '.join(known)} (or all)")
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise UsageError(f"--{flag}: {', '.join(twice)} given twice; name each condition once")
    return names


def _seeds(text: str) -> list[int]:
    if text.strip() == "auto":  # the first look of --seeds=auto (reporting.sequential)
        return list(range(MIN_SEEDS))
    try:
        seeds = [int(s) for s in split_list(text)]
    except ValueError:
        raise UsageError(f"--seeds={text}: write integers, e.g. --seeds=0,1,2") from None
    if not seeds:
        raise UsageError("--seeds: give at least one seed, e.g. --seeds=0,1,2")
    outside = [s for s in seeds if not 0 <= s < SEED_LIMIT]
    if outside:
        raise UsageError(
            f"--seeds={text}: seed {outside[0]} is outside 0 ... 2**64 - 1; use whole numbers such as 0,1,2"
        )
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UsageError(f"--seeds={text}: seed {twice[0]} is given twice; each seed is one replicate")
    return seeds


def _budgets(cfg: StudyConfig, known: list[str]) -> dict:
    budgets = {}
    for item in split_list(cfg.pretrain_budgets):
        name, eq, steps = item.partition("=")
        if not eq or name not in known or name in BASELINES:
            raise UsageError(f"--pretrain_budgets: {item!r} is not name=steps with a pretext task (e.g. rotation=2ep)")
        if name in budgets:
            raise UsageError(f"--pretrain_budgets: {name} is given twice; give each task one budget")
        budgets[name] = steps
    return budgets


CONDITION = re.compile(r"(?P<name>[^\[\]=]+)(\[(?P<options>[^\[\]]*)\])?(=(?P<steps>.*))?")


def _conditions(cfg: StudyConfig, known: list[str]) -> list[tuple[str, str | None, str]]:
    """(name, budget or None, task options) of each --conditions entry: NAME, or NAME=STEPS for a budget of its own
    (rewinding to STEPS for rewind and supervised, pretraining for STEPS for a pretext task), and a pretext task's
    options in brackets, `subset[select=easy;fraction=0.1]=6it` (as --pretext_args, `;` between them, so one
    study or sweep can hold several settings of one task); each entry once."""
    text = cfg.conditions.strip()
    items = [(name, None, "") for name in known] if text == "all" else []
    for item in [] if text == "all" else split_list(text):
        match = CONDITION.fullmatch(item.strip())
        if not match:
            raise UsageError(f"--conditions: {item!r} is not NAME, NAME=STEPS or NAME[key=value;...]=STEPS")
        name, steps = match["name"].strip(), (match["steps"] or "").strip()
        options = ",".join(o.strip() for o in (match["options"] or "").split(";") if o.strip())
        if name not in known:
            raise UsageError(f"--conditions: unknown {name}; available: {', '.join(known)} (or all)")
        if match["steps"] is not None and not steps:
            raise UsageError(f"--conditions: {item!r} has no budget: write {name}=STEPS, e.g. {name}=6it, or {name}")
        if match["steps"] is not None and name == "reset":
            raise UsageError(f"--conditions: {item!r}: reset is rewinding to 0it and takes no budget; write reset")
        if options and name in BASELINES + ("supervised",):
            raise UsageError(f"--conditions: {item!r}: only a pretext task takes options in brackets")
        items.append((name, steps or None, options))
    twice = sorted({f"{n}[{o}]={b}" if o else f"{n}={b}" if b else n for n, b, o in items
                    if items.count((n, b, o)) > 1})
    if twice:
        raise UsageError(f"--conditions: {', '.join(twice)} given twice; name each condition once")
    return items


def plan_units(cfg: StudyConfig) -> list[dict]:
    """The study's units in order, one per (IMP run, seed); validated before anything runs.

    Like for like: a pretext condition pretrained for k steps replaces the run's first k iterations, so it is
    compared with rewinding to the same k, which the study runs too (`reference_for`; `--references=false`
    leaves them to other runs, as the sweeps do). `supervised` for k steps *is* rewinding to k (same weights,
    momentum and levels), so it is that unit, not a second one. Each unit: condition (reset, rewind or a
    pretext task), seed, rewind_step (reset and rewind) or pretrain_steps (pretext), controls, and
    `asked_by`: the conditions that asked for it."""
    known = available_conditions()
    _warn_broken(cfg.conditions)
    wanted = _conditions(cfg, known)
    if not wanted:
        raise UsageError(f"--conditions: give at least one; available: {', '.join(known)} (or all)")
    with_controls = set(_names("control_conditions", cfg.control_conditions, known))
    budgets = _budgets(cfg, known)
    seeds = _seeds(cfg.seeds)
    cross_levels(cfg)  # refused now, not after the units have trained
    if cfg.seeds.strip() == "auto" and not (cfg.seeds_batch >= 1 and MIN_SEEDS <= cfg.seeds_max <= 1000):
        raise UsageError(f"--seeds=auto: --seeds_batch must be 1 or more and --seeds_max {MIN_SEEDS} ... 1000 (got "
                         f"{cfg.seeds_batch} and {cfg.seeds_max}); e.g. --seeds_batch=2 --seeds_max=9")
    runs: dict[tuple, dict] = {}

    def add(condition: str, steps: str, asked_by: str, reference_for: str | None = None, options: str = "") -> None:
        unit = runs.setdefault((condition, steps, options), {"condition": condition, "steps": steps,
                                                             "options": options, "asked_by": [],
                                                             "reference_for": [], "controls": False})
        unit["asked_by"] += [] if reference_for else [asked_by]
        unit["reference_for"] += [reference_for] if reference_for else []
        unit["controls"] |= asked_by in with_controls and not reference_for

    for c, own, options in wanted:
        if c == "reset":
            add("reset", "0it", c)
        elif c == "rewind":
            add("rewind", own or cfg.imp.rewind_step, c)
        elif c == "supervised":
            add("rewind", own or budgets.get(c, cfg.pretrain.pretrain_steps), c)
        else:
            budget = own or budgets.get(c, cfg.pretrain.pretrain_steps)
            add(c, budget, c, options=options)
            if cfg.references:
                add("rewind", budget, c, reference_for=c)
    units = []
    for run in runs.values():
        for seed in seeds:
            step_field = "rewind_step" if run["condition"] in BASELINES else "pretrain_steps"
            options = {"options": run["options"]} if run["options"] else {}  # none: study.json as it was
            units.append({"condition": run["condition"], "seed": seed, step_field: run["steps"], **options,
                          "controls": cfg.imp.controls if run["controls"] else "", "asked_by": run["asked_by"],
                          "reference_for": run["reference_for"]})
    return units


def unit_configs(cfg: StudyConfig, unit: dict) -> tuple[PretrainConfig | None, ImpConfig]:
    imp = dataclasses.replace(cfg.imp, seed=unit["seed"], controls=unit["controls"])
    if unit["condition"] in BASELINES:
        return None, dataclasses.replace(imp, rewind_step=unit["rewind_step"], rewind_from=None)
    given = ",".join(filter(None, (cfg.pretrain.pretext_args, unit.get("options", ""))))
    pre = dataclasses.replace(cfg.pretrain, seed=unit["seed"], pretext=unit["condition"],
                              pretrain_steps=unit["pretrain_steps"], pretext_args=given)
    return pre, dataclasses.replace(imp, rewind_step=None)  # the pretrained point is the rewind point


def validate_units(cfg: StudyConfig, units: list[dict]) -> None:
    """Check every unit's configs up front, so a typo fails before hours of work, not after. A pretext unit's
    IMP run starts at its pretraining's k: checked as rewinding to that step (what k resolves to)."""
    for unit in units:
        pre, imp = unit_configs(cfg, unit)
        if pre is not None:
            pretrain_job.check_config(pre)  # the task's own checks too (--simclr_min_scale=0), before any output
            imp = dataclasses.replace(imp, rewind_step=pre.pretrain_steps)
        imp_job.prepare(dataclasses.replace(imp, rewind_from=None))  # checks only; writes nothing


def _share(worker: str) -> tuple[int, int] | None:
    """(I, J) of --worker=I/J, or None."""
    if not worker:
        return None
    index, _, count = worker.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise UsageError(f"--worker={worker}: it is set by --jobs (I/J with 0 <= I < J); leave it out")
    return int(index), int(count)


def _unit_imp(cfg: StudyConfig, unit: dict) -> Job:
    """A unit's IMP config, its rewind point included (its pretraining trained here, or found finished)."""
    pre, imp = unit_configs(cfg, unit)
    if pre is not None:
        pre_dir, _ = yield from pretrain_job.work(pre)
        imp = dataclasses.replace(imp, rewind_from=str(pre_dir))
    return imp


def _unit_done(cfg: StudyConfig, unit: dict) -> Job:
    """A unit trained here, or found finished (or waited for, under another process's lock)."""
    yield from imp_job.work((yield from _unit_imp(cfg, unit)))


def _pair_done(cfg: StudyConfig, subject: dict, reference: dict, levels: list[int]) -> Job:
    """A crossed pair trained here, or found finished (its two units are done); returns its run directory."""
    mine, theirs = (yield from _unit_imp(cfg, subject)), (yield from _unit_imp(cfg, reference))
    cross, _ = yield from imp_cross.work(imp_job.prepare(mine), imp_job.prepare(theirs), levels)
    return cross


def _shared_items(cfg: StudyConfig, units: list[dict], unit_job) -> list[shared_work.Item]:
    """The study's work as its --jobs processes share it: every unit (`unit_job(unit)`), then every crossed pair,
    each needing its two units."""
    levels = cross_levels(cfg)
    number = {id(unit): n for n, unit in enumerate(units)}
    items = [shared_work.Item(f"unit-{n}", (), functools.partial(unit_job, unit)) for n, unit in enumerate(units)]
    for n, (subject, reference) in enumerate(cross_pairs(units) if levels else []):
        needs = (f"unit-{number[id(subject)]}", f"unit-{number[id(reference)]}")
        items.append(shared_work.Item(f"pair-{n}", needs, functools.partial(_pair_done, cfg, subject, reference,
                                                                            levels)))
    return items


def _worker_job(cfg: StudyConfig, units: list[dict], index: int, count: int) -> Job:
    """A worker process's part of the study: units and crossed pairs as shared_work hands them out; nothing else
    (the parent process writes study.json, runs what follows and writes the report)."""
    out = run_dir("study", cfg)
    items = _shared_items(cfg, units, functools.partial(_unit_done, cfg))
    yield from shared_work.walk(items, out / CLAIMS, index, count)
    return out, None


def work(cfg: StudyConfig, units: list[dict] | None = None) -> Job:
    """The study as a scheduler job: its units one after another, or all in lock-step with --concurrent > 1
    (so their trainings run together); returns (study dir, report dir). With worker processes (--jobs), this
    process is worker 0: it shares the units and crossed pairs with the others (shared_work), records every unit
    (passing through those the others trained), then runs what follows alone. `units`: plan_units(cfg), where the
    caller has them already."""
    units = plan_units(cfg) if units is None else units
    validate_units(cfg, units)
    share = _share(cfg.worker)
    if share is not None and share[0] > 0:
        return (yield from _worker_job(cfg, units, *share))
    out = run_dir("study", cfg)
    out.mkdir(parents=True, exist_ok=True)
    logger = wandb_logger(cfg.imp, group=out.name, units=len(units))
    record = {"config": flat(cfg), "units": units}
    write_json_atomic(out / "study.json", record)
    started, taken = time.monotonic(), [0]

    def unit_job(unit: dict) -> Job:
        taken[0] += 1
        name = f"{unit['condition']}{'[' + unit['options'] + ']' if unit.get('options') else ''} seed {unit['seed']}"
        print(f"[{taken[0]}/{len(units)}] {name} ({time.monotonic() - started:.0f}s)", file=sys.stderr)
        pre, imp = unit_configs(cfg, unit)
        if pre is not None:
            with logger.router(f"{name}: pretrain", {}, "pretrain") as sink:
                pre_dir, _ = yield from pretrain_job.work(pre, sinks=[sink])
            unit["pretrain_dir"] = _relative(pre_dir, out.parent)
            imp = dataclasses.replace(imp, rewind_from=str(pre_dir))
        with logger.router(name, {}) as sink:
            imp_dir, _ = yield from imp_job.work(imp, sinks=[sink])
        unit["imp_dir"] = _relative(imp_dir, out.parent)
        write_json_atomic(out / "study.json", record)

    def run_units(todo: list[dict]) -> Job:
        jobs = [unit_job(unit) for unit in todo]
        yield from (schedule.gather(jobs) if cfg.scheduler.concurrent > 1 else schedule.chain(jobs))

    try:
        if share is None:
            yield from run_units(units)
        else:
            yield from shared_work.walk(_shared_items(cfg, units, unit_job), out / CLAIMS, *share)
        if cfg.seeds.strip() == "auto":
            yield from _seeds_until_decided(cfg, out, record, run_units)
        yield from _crossed(cfg, out, record)
        path = PathSettings(cfg.imp.stability_points, cfg.imp.stability_bn)
        report_dir = write_report([out], out / "report", stability=path.key())
        logger.report(report_dir, out.name)  # the comparison where the W&B project shows it (an agent's: its run)
    finally:
        logger.close()
    print(f"study done in {time.monotonic() - started:.0f}s: report at {report_dir / 'report.md'}", file=sys.stderr)
    return out, report_dir


def _seeds_until_decided(cfg: StudyConfig, out: Path, record: dict, run_units) -> Job:
    """--seeds=auto: after each look, the next `seeds_batch` seeds for both sides of every comparison still
    undetermined (reporting.sequential), until each is decided or has `seeds_max` seeds. Every look is computed
    from the records on disk, so a rerun after a kill makes the same decisions and trains only what is missing."""
    units = record["units"]
    first, batch, cap = MIN_SEEDS, cfg.seeds_batch, cfg.seeds_max
    n_looks = sequential.looks(first, batch, cap)
    log = {"first": first, "batch": batch, "cap": cap, "looks": n_looks, "margin": DEFAULT_MARGIN,
           "confidence": sequential.stop_confidence(n_looks), "looks_taken": []}
    record["seeds_auto"] = log
    while True:
        conditions, _ = collect([out])
        found = sequential.status(conditions, DEFAULT_MARGIN, log["confidence"])
        log["looks_taken"].append({"seeds": sorted({u["seed"] for u in units}), "comparisons": found})
        write_json_atomic(out / "study.json", record)
        todo = []
        for s in (s for s in found if not s["decided"] and s["n"] < cap):
            keys = list(dict.fromkeys(_key(u) for u in units if _imp_path(u, out) in s["runs"]))
            have = set.intersection(*({u["seed"] for u in units if _key(u) == key} for key in keys))
            for seed in _next_seeds(sorted(have), batch, cap):  # the same new seeds on both sides: paired
                for key in keys:
                    if not any(_key(u) == key and u["seed"] == seed for u in units + todo):
                        model = next(u for u in units if _key(u) == key)
                        todo.append({k: v for k, v in model.items() if k not in ("imp_dir", "pretrain_dir")}
                                    | {"seed": seed})
        if not todo:
            return
        validate_units(cfg, todo)
        print(f"--seeds=auto: {sum(not s['decided'] for s in found)} comparisons undetermined; {len(todo)} more "
              f"units", file=sys.stderr)
        units += todo
        yield from run_units(todo)


def cross_levels(cfg: StudyConfig) -> list[int]:
    """The levels whose tickets are crossed (--cross_levels: sparsest, none, or level numbers among those run)."""
    levels = cfg.imp.levels
    chosen = imp_cross.levels_named(cfg.cross_levels, levels, "--cross_levels")
    if not all(1 <= level <= levels for level in chosen):
        raise UsageError(f"--cross_levels={cfg.cross_levels.strip()}: the levels run are 1 ... {levels}; choose "
                         f"among them")
    return chosen


def cross_pairs(units: list[dict]) -> list[tuple[dict, dict]]:
    """(condition unit, its like-for-like reference unit) of each seed: a task at k with rewinding to k, rewinding
    to k > 0 with reset; both must be the study's units."""
    by = {(_key(u), u["seed"]): u for u in units}
    pairs = []
    for u in units:
        if u["condition"] == "reset":
            continue
        ref = ("reset", "0it", "") if u["condition"] == "rewind" else ("rewind", u["pretrain_steps"], "")
        if ref != _key(u) and (ref, u["seed"]) in by:
            pairs.append((u, by[ref, u["seed"]]))
    return pairs


def _crossed(cfg: StudyConfig, out: Path, record: dict) -> Job:
    """The crossed tickets (jobs.imp_cross) of every pair at --cross_levels; recorded in study.json `crossed`."""
    levels = cross_levels(cfg)
    pairs = cross_pairs(record["units"]) if levels else []
    if not pairs:
        return

    def imp_run(unit: dict):
        pre, imp = unit_configs(cfg, unit)
        if pre is not None:
            imp = dataclasses.replace(imp, rewind_from=str(out.parent / unit["pretrain_dir"]))
        return imp_job.prepare(imp)

    def pair_job(subject: dict, reference: dict) -> Job:
        cross, _ = yield from imp_cross.work(imp_run(subject), imp_run(reference), levels)
        return cross

    print(f"crossed tickets: {len(pairs)} pairs x {len(levels)} level(s) x 2 trainings", file=sys.stderr)
    jobs = [pair_job(s, r) for s, r in pairs]  # with --jobs, found finished (shared_work trained them)
    done = yield from (schedule.gather(jobs) if cfg.scheduler.concurrent > 1 else schedule.chain(jobs))
    record["crossed"] = sorted({_relative(d, out.parent) for d in done})
    write_json_atomic(out / "study.json", record)


def _key(unit: dict) -> tuple:
    """What a unit runs, but the seed: its seeds are replicates of one condition."""
    return unit["condition"], unit.get("rewind_step") or unit.get("pretrain_steps"), unit.get("options", "")


def _imp_path(unit: dict, out: Path) -> str:
    return str((out.parent / unit["imp_dir"]).resolve()) if "imp_dir" in unit else ""


def _next_seeds(seeds: list[int], batch: int, cap: int) -> list[int]:
    """A comparison's next seeds: the smallest its two sides do not share yet, `batch` of them, never beyond
    `cap` seeds in all."""
    wanted, seed, out = min(batch, cap - len(seeds)), 0, []
    while len(out) < wanted:
        if seed not in seeds:
            out.append(seed)
        seed += 1
    return out


def _relative(run: Path, runs_folder: Path) -> str:
    """A run's directory as study.json keeps it: relative to the runs folder, so a copied or moved folder
    reports its own runs (absolute only for a run outside it)."""
    try:
        return Path(run).resolve().relative_to(Path(runs_folder).resolve()).as_posix()
    except ValueError:
        return str(Path(run).resolve())


def run(cfg: StudyConfig, units: list[dict] | None = None) -> tuple:
    return schedule.run(work(cfg, units), cfg.scheduler.concurrent, cfg.scheduler.concurrent_engine)


def worker_count(cfg: StudyConfig, units: int) -> int:
    """How many processes train the study's units: --jobs, or (0) one per CPU core where the units train on the
    CPU and nothing else shares the cores out (a sweep's --jobs, an explicit --threads, --concurrent)."""
    if cfg.jobs < 0:
        raise UsageError(f"--jobs={cfg.jobs}: use 1 or more worker processes (0: one per CPU core on the CPU)")
    if cfg.jobs > 0 and cfg.scheduler.concurrent > 1:
        raise UsageError("--jobs runs processes side by side, --concurrent stacks trainings in one: choose one")
    if cfg.jobs:
        return min(cfg.jobs, max(1, units))
    if (os.environ.get(threads.ENV) or cfg.imp.threads is not None or cfg.scheduler.concurrent > 1
            or cfg.worker or setup.resolve_device(cfg.imp.device).type != "cpu"):
        return 1
    return min(threads.available_cores(), max(1, units))


def run_with_workers(cfg: StudyConfig, argv: list[str], count: int, units: list[dict]) -> tuple:
    """The study with count - 1 worker processes beside this one, each with its share of the CPU threads (this
    process is worker 0 and then runs the rest of the study). Workers stop when this process stops, however it
    stops (sweep.py's PR_SET_PDEATHSIG), and their logs are study_HASH/workers/worker-I.log."""
    share, gpus = threads.share(count), threads.visible_gpus()
    os.environ[threads.ENV] = str(share)  # this process is one of the workers: its ops take the same share
    logs = run_dir("study", cfg) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    children = []
    for i in range(1, count):
        with open(logs / f"worker-{i}.log", "a") as log:
            children.append(subprocess.Popen([sys.executable, "-m", "earlyphase.studies.cli", "study", *argv,
                                              f"--worker={i}/{count}"], stdout=subprocess.DEVNULL, stderr=log,
                                             env={**threads.worker_environment(i, share, gpus),
                                                  threads.PARENT_ENV: str(os.getpid())}))
    on = f", GPUs {', '.join(gpus)} round-robin (this process: the first)" if gpus else ""
    print(f"study: {count} worker processes, {share} CPU thread(s) each{on} (logs: {logs})", file=sys.stderr)
    try:
        return run(dataclasses.replace(cfg, worker=f"0/{count}"), units)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
            child.wait()


def check(argv: list[str]) -> None:
    """Everything `main(argv)` would refuse, refused now (every unit's configs); nothing is written or trained."""
    cfg = parse(argv)
    schedule.check_settings(cfg.scheduler.concurrent, cfg.scheduler.concurrent_engine)
    validate_units(cfg, plan_units(cfg))


def main(argv: list[str]) -> int:
    cfg = parse(argv)
    if cfg.worker:  # a worker process of --jobs: its share of the units, then it exits (work() checks --worker)
        run(cfg)
        return 0
    units = plan_units(cfg)  # once: --conditions=all's warnings are said once
    count = worker_count(cfg, len(units))
    out, report_dir = run_with_workers(cfg, argv, count, units) if count > 1 else run(cfg, units)
    print((report_dir / "report.md").read_text().split("## Controls")[0].rstrip())
    print(out)
    return 0
