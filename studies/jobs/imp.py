"""`earlyphase imp`: iterative magnitude pruning with rewinding, the paper's controls, ticket records.

Protocol (Frankle et al.; the library is `earlyphase.imp`):
- Level 0 trains the dense network from its seeded initialisation over [0, T) and saves the rewind
  point at `--rewind_step` k (`level_0/weights_{k}it.pt`: model and optimiser; `0it` = reset).
  With `--rewind_from=PATH` (a run directory holding `rewind_point.pt`, or such a file) that state is
  the rewind point and level 0's start instead, and k is the step the file stands for (its `step`: a
  pretraining for k steps replaced the run's first k iterations). Level 0 then trains [k, T) from it,
  continuing with its momentum buffers (as the dense run continues across step k), and every level
  trains [k, T) as with rewinding to k; its mask (sparse pretraining) is level 0's mask, and
  `--rewind_step` is ignored. So a `supervised` rewind point of k steps gives rewinding to k, bit for bit.
- Level L >= 1 prunes `--prune_fraction` of the surviving weights of level L-1's final weights by one
  global magnitude ranking, resets the survivors to the rewind point, and trains [k, T) under the mask.
  Rewound: every parameter and buffer (BatchNorm gamma/beta and running statistics included); pruned
  weights are exactly 0 and stay 0 (the trainer masks after every optimiser step).
- Optimiser at the rewind: `fresh` (default, the reference code: new SGD, no momentum) or `rewound`
  (momentum buffers from step k, pruned entries zeroed; with --rewind_from, the file's momentum). The
  learning rate is a function of the step, so the schedule continues from k.
- Controls per level >= 1 (`--controls`): random_reinit (trunk mask, fresh init from seed
  derive_seed(seed, "reinit", L), fresh optimiser), random_prune_global / random_prune_layerwise (random
  mask of the trunk's global / per-layer density from derive_seed(seed, control, L), from the rewind
  point). Controls use the trunk's data order (the run seed), so only the init or the mask differs.

Run directory `runs/imp_<hash>/`: config.json, tickets.json, level_{L}/ (mask.pt, density.json,
weights_{k}it.pt = the exact start state, final.pt, summary.json, metrics.jsonl) and
level_{L}/{control}/ with the same files. Each part is its own resumable trainer run and its mask is
written atomically before it trains, so rerunning resumes an interrupted part and skips finished ones.
`levels` and `controls` are platform fields (out of the hash): they choose which parts to run, not
what any part computes, so raising `--levels` or adding controls later reuses the same directory.
`--rewind_from` enters the hash as the file's sha256 (the content, not the path).

Perturbations per level >= 1 (`--perturb=NAME,...` or all; the library is `earlyphase.imp.perturb`):
the level's start state (the rewind point under the trunk's mask) with its surviving weights perturbed,
trained like the trunk level (same mask, steps, optimiser, data order) in level_{L}/perturb_{NAME}/,
recorded in tickets.json as kind `perturb_{NAME}`. Draws come from derive_seed(seed, "perturb", NAME, L).
`noise` at `--perturb_noise` other than 1 is the part perturb_noise{SCALE} (same draws, scaled), so
several scales share one trunk. "init" for the sign/magnitude swaps is the seed's initialisation.
`--track_steps` records early-phase statistics in every part (earlyphase.studies.jobs.stats).
`--concurrent=K` trains a level's trunk, controls and perturbations together on one device
(earlyphase.studies.engine.schedule); with --concurrent_engine=vmap, parts with --track_steps train alone.

The job is split by what each part does: imp_setup (validation into an ImpRun, seeds), imp_mask_files (masks on
disk), imp_parts (the trainings of a level), imp_stability (second copies, path analysis), imp_records
(tickets.json, the table, the config check); this module runs them in order (`work`) and is the command.
"""

from __future__ import annotations

import functools
from pathlib import Path

from earlyphase.imp.rewinding import masked_momentum, rewound_state

from ..engine import checkpoints, schedule
from ..engine.schedule import Job
from . import arguments, setup
from .config import ImpCommand, ImpConfig, SchedulerConfig
from .events import Identity, RecordsWritten, Tickets
from .identity import identify, public_config
from .imp_mask_files import trunk_mask
from .imp_parts import control_training, momentum_for, part_training, perturbed_training, rewind_point
from .imp_records import check_recorded_config, format_table, write_tickets
from .imp_setup import ImpRun, init_state, perturb_kind, prepare, stability_levels
from .imp_stability import analyse, level0_at_k, second_copy, stability_dir
from .wandb_log import logged_run

__all__ = ["ImpConfig", "ImpRun", "check", "check_command", "main", "prepare", "run", "run_logged",
           "stability_dir", "stability_levels", "work"]


def work(cfg: ImpConfig, sinks=()) -> Job:
    """IMP as a scheduler job: yields level 0, then per level its trunk, controls and perturbations
    together (they depend only on the previous level); returns (run dir, tickets)."""
    imp_run = prepare(cfg)
    imp_run.out.mkdir(parents=True, exist_ok=True)
    point = imp_run.rewind_file or {}
    record = {
        **setup.config_record("imp", imp_run.cfg),
        "rewind_from_sha256": imp_run.rewind_from_sha256,
        "rewind_step_it": imp_run.k,
        "training_steps_it": imp_run.end,
        "rewind_point": {k: point.get(k) for k in ("description", "step", "pretext")} if point else None,
        "perturb_kinds": [perturb_kind(p, imp_run.cfg.perturb_noise) for p in imp_run.perturbations],
    }
    check_recorded_config(imp_run.out)
    checkpoints.write_json_atomic(imp_run.out / "config.json", record)
    for sink in sinks:  # what W&B runs carry: the resolved config without paths, and the condition
        sink(Identity({**public_config(record), **identify(record).fields(), "seed": imp_run.cfg.seed,
                           "run": imp_run.out.name}))
    mask = trunk_mask(imp_run, 0)
    if imp_run.rewind_file is not None:  # the run continues from the rewind point at k, momentum included
        state, save_at = rewound_state(imp_run.rewind_file["model"], mask), (imp_run.k,)
        start, momentum = imp_run.k, masked_momentum(imp_run.rewind_momentum, mask) if imp_run.rewind_momentum else None
    else:
        state, save_at = init_state(imp_run), tuple(sorted({0, imp_run.k}))
        start, momentum = 0, None
    yield [part_training(imp_run, imp_run.out / "level_0", state, mask, start=start, save_at=save_at, momentum=momentum,
                 sinks=sinks, level=0, kind="trunk")]
    write_tickets(imp_run)
    records_ready(imp_run, sinks, 0)
    # the dense network's second copy starts from level 0's state at k, known once level 0 has trained
    waiting = [second_copy(imp_run, 0, *level0_at_k(imp_run), sinks)] if 0 in imp_run.stability else []
    if imp_run.cfg.levels:
        rewind_model, rewind_momentum = rewind_point(imp_run)
    for level in range(1, imp_run.cfg.levels + 1):
        mask = trunk_mask(imp_run, level)
        start_state, start_momentum = rewound_state(rewind_model, mask), momentum_for(imp_run, rewind_momentum, mask)
        parts = [part_training(imp_run, imp_run.out / f"level_{level}", start_state, mask, start=imp_run.k,
                               save_at=(imp_run.k,), momentum=start_momentum, sinks=sinks, level=level, kind="trunk")]
        parts += [control_training(imp_run, level, c, mask, rewind_model, rewind_momentum, sinks)
                  for c in imp_run.controls]
        parts += [perturbed_training(imp_run, level, p, mask, rewind_model, rewind_momentum, sinks)
                  for p in imp_run.perturbations]
        if level in imp_run.stability:
            parts.append(second_copy(imp_run, level, start_state, mask, start_momentum, sinks))
        yield waiting + parts
        waiting = []
        write_tickets(imp_run)
        analyse(imp_run, sinks)
        records_ready(imp_run, sinks, level)
    if waiting:
        yield waiting
    analyse(imp_run, sinks)
    records = write_tickets(imp_run)
    records_ready(imp_run, sinks, imp_run.cfg.levels)
    for sink in sinks:
        sink(Tickets(records))
    return imp_run.out, records


def records_ready(imp_run: ImpRun, sinks, level: int) -> None:
    """Tell the sinks that the run's records are complete up to `level` (W&B logs them as an artifact)."""
    for sink in sinks:
        sink(RecordsWritten(imp_run.out, level))


def run(cfg: ImpConfig, sinks=(), scheduler: SchedulerConfig | None = None) -> tuple[Path, list[dict]]:
    """Run (or resume) IMP for levels 0..cfg.levels and the requested controls; returns (run dir, tickets).
    scheduler: how its trainings share the device (default: one at a time)."""
    scheduler = scheduler or SchedulerConfig()
    return schedule.run(work(cfg, sinks), scheduler.concurrent, scheduler.concurrent_engine)


def check_command(command: ImpCommand) -> None:
    """Everything running `command` would refuse, refused now; nothing is written or trained."""
    schedule.check_settings(command.scheduler.concurrent, command.scheduler.concurrent_engine)
    prepare(command.imp)


def check(argv: list[str]) -> None:
    check_command(arguments.imp(argv))


def run_logged(command: ImpCommand, what: str) -> tuple[Path, list[dict]]:
    """Run an IMP command under W&B logging (one W&B run, a step per level); `what` names it, e.g. "imp"."""
    cfg = command.imp
    return logged_run(functools.partial(run, scheduler=command.scheduler), cfg, f"{what} seed {cfg.seed}", "level")


def main(argv: list[str]) -> int:
    out, records = run_logged(arguments.imp(argv), "imp")
    print(format_table(records))
    print(out)
    return 0
