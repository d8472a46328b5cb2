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
weights_{start}it.pt = the exact start state, final.pt, summary.json, metrics.jsonl) and
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
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from earlyphase.imp import controls as imp_controls
from earlyphase.imp import masks as imp_masks
from earlyphase.imp import perturb as imp_perturb
from earlyphase.imp.pruning import global_magnitude_prune, survivors
from earlyphase.imp.rewinding import OPTIMIZER_MODES, masked_momentum, momentum_by_name, rewound_state

from ..engine import checkpoints, records, schedule
from ..engine.augment import derive_seed
from ..engine.errors import UsageError
from ..engine.interpolation import BN_MODES, PathSettings, check_mask_holds, evaluate_path, interpolate, summarise
from ..engine.schedule import Job, Training
from ..engine.trainer import make_optimizer
from . import setup, stats
from .config import DATASET_DEFAULTS, ImpCommand, ImpConfig, SchedulerConfig, parse_overrides, run_dir
from .identity import identify, imp_run_name, public_config
from .wandb_log import logged_run


@dataclass
class _Run:
    """Everything validated before anything is written."""

    cfg: ImpConfig
    device: torch.device
    data: object
    out: Path
    start: int  # first step of every level >= 1 (the rewind step k)
    end: int  # T
    template: torch.nn.Module  # a CPU instance of the architecture, for shape checks
    names: list  # prunable parameter names
    param_names: list  # all parameter names, in optimiser order
    base_mask: dict  # level 0's mask
    controls: tuple
    rewind_description: str
    level0_description: str
    rewind_file: dict | None  # the --rewind_from contents
    rewind_from_sha256: str | None
    rewind_momentum: dict | None  # {name: momentum} at the rewind point (--rewind_from files), else None
    perturbations: tuple = ()
    stability: tuple = ()  # levels with an instability analysis
    path: PathSettings = PathSettings()
    stability_seed: int = 0  # data-order seed of each analysis's second copy


# ---------------------------------------------------------------------------------------------- validation
def _resolve_rewind_from(text: str) -> Path:
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "rewind_point.pt"
    if not path.is_file():
        raise UsageError(
            f"--rewind_from={text}: no rewind point there; pass a run directory holding rewind_point.pt or a .pt file"
        )
    return path


def _check_rewind_file(state, path: Path, cfg: ImpConfig, model, names) -> dict:
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UsageError(
            f"--rewind_from: {path} is not a rewind point (a dict with 'model', 'mask', 'arch', 'description')"
        )
    arch = state.get("arch") or {}
    want = {"model": cfg.model, "width": cfg.width, "num_classes": model.num_classes}
    for key, value in want.items():
        if key in arch and arch[key] != value:
            raise UsageError(f"--rewind_from: {path} holds {key}={arch[key]!r} but this run builds {key}={value!r}; "
                             f"pass the matching --model/--width or another rewind point")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        detail = (str(err).strip().splitlines()[1:2] or [str(err)])[0].strip()
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise UsageError(f"--rewind_from: {path} does not fit {cfg.model} width {cfg.width}: {detail}") from None
    step = state.get("step")
    if not isinstance(step, int) or step < 0:
        raise UsageError(f"--rewind_from: {path} does not say which step it stands for (made by an earlier earlyphase, "
                         f"whose pretraining did not count as the run's first k steps): rerun `earlyphase pretrain` to "
                         f"remake it, or add 'step': K (0 = an initialisation) to the file")
    momentum = state.get("momentum") or {}
    params = dict(model.named_parameters())
    if not isinstance(momentum, dict) or any(
        n not in params or not isinstance(m, torch.Tensor) or m.shape != params[n].shape for n, m in momentum.items()
    ):
        raise UsageError(f"--rewind_from: {path} holds momentum that does not fit {cfg.model} width {cfg.width}")
    mask = state.get("mask")
    if mask is not None:
        try:
            imp_masks.check_mask(mask, model)
        except ValueError as err:
            raise UsageError(f"--rewind_from: {path}: {err}") from None
        outside = sorted(set(mask) - set(names))
        if outside:
            raise UsageError(
                f"--rewind_from: {path} prunes {outside[0]}, which is not in the prunable set; "
                f"drop it from --prune_ignore"
            )
    return state


def prepare(cfg: ImpConfig) -> _Run:
    """Validate `cfg` completely (data and rewind file included) without writing anything."""
    cfg = setup.validate(cfg)
    if not 0 < cfg.prune_fraction < 1:
        raise UsageError(f"--prune_fraction={cfg.prune_fraction}: must be strictly between 0 and 1, e.g. 0.2")
    if cfg.levels < 0:
        raise UsageError(f"--levels={cfg.levels}: must be 0 (dense only) or more")
    if cfg.rewind_optimizer not in OPTIMIZER_MODES:
        raise UsageError(f"--rewind_optimizer={cfg.rewind_optimizer}: choose {' or '.join(OPTIMIZER_MODES)}")
    try:
        controls = imp_controls.parse_controls(cfg.controls)
    except ValueError as err:
        raise UsageError(f"--controls: {err}") from None
    try:
        perturbations = imp_perturb.parse_perturbations(cfg.perturb)
    except ValueError as err:
        raise UsageError(f"--perturb: {err}") from None
    if not (cfg.perturb_noise >= 0 and cfg.perturb_noise < float("inf")):
        raise UsageError(f"--perturb_noise={cfg.perturb_noise}: must be a finite number >= 0, e.g. 1.0")
    levels = stability_levels(cfg)
    ignore = [t.strip() for t in cfg.prune_ignore.split(",") if t.strip()]

    device = setup.resolve_device(cfg.device)
    data = setup.load_data(cfg, device)
    per_epoch, end = setup.training_steps(cfg, data)
    model = setup.make_model(cfg, data, torch.device("cpu"))
    try:
        names = imp_masks.prunable_names(model, ignore)
    except ValueError as err:
        raise UsageError(f"--{err}") from None
    if not names:
        raise UsageError("--prune_ignore excludes every prunable weight: nothing left to prune")
    # canonical spellings, so `fc` and `fc.weight` (or another order) name the same run
    ignored = [n for n in imp_masks.prunable_names(model) if n not in names]
    cfg = dataclasses.replace(
        cfg, controls=",".join(controls), prune_ignore=",".join(ignored), perturb=",".join(perturbations)
    )
    base_mask = imp_masks.dense_mask(model, names)

    rewind_file = sha = momentum = None
    if cfg.rewind_from:
        path = _resolve_rewind_from(cfg.rewind_from)
        cfg = dataclasses.replace(cfg, rewind_from=str(Path(cfg.rewind_from).expanduser().resolve()))  # for the records
        rewind_file = _check_rewind_file(checkpoints.load(path, given="--rewind_from"), path, cfg, model, names)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        momentum = rewind_file.get("momentum") or None
        if cfg.rewind_optimizer == "rewound" and momentum is None:
            raise UsageError(
                f"--rewind_optimizer=rewound needs momentum at the rewind point; {path} holds none: use fresh"
            )
        if rewind_file.get("mask") is not None:
            base_mask.update({n: m.clone() for n, m in rewind_file["mask"].items()})
        start = rewind_file["step"]
        rewind = f"{path.resolve()} ({rewind_file.get('description', 'no description')})"
        level0 = rewind
        what = f"the rewind point {path} stands for step {start}it, which"
    else:
        start = setup.parse_step(cfg.rewind_step, per_epoch, "rewind_step").it
        rewind = (f"reset to initialisation (seed {cfg.seed}), level_0/weights_0it.pt" if start == 0 else
                  f"dense run at step {start}it, level_0/weights_{start}it.pt")
        level0 = f"initialisation (seed {cfg.seed})"
        what = f"--rewind_step={cfg.rewind_step} ({start}it)"
    if start >= end.it:
        raise UsageError(f"{what} is not before the end of training ({cfg.training_steps} = {end.it}it), so every "
                         f"pruned level would train 0 steps: rewind earlier or train longer")
    if rewind_file is not None and cfg.rewind_step != DATASET_DEFAULTS[cfg.dataset]["rewind_step"]:
        print(f"earlyphase imp: --rewind_step={cfg.rewind_step} is ignored: the rewind point stands for step "
              f"{start}it, where every level starts", file=sys.stderr)

    counts = survivors(imp_masks.kept(base_mask), cfg.prune_fraction, cfg.levels)
    if 0 in counts:
        empty = counts.index(0) + 1
        raise UsageError(f"--levels={cfg.levels}: pruning {cfg.prune_fraction:g} of the survivors per level leaves no "
                         f"weight at level {empty} (of {imp_masks.kept(base_mask)} prunable weights); use at most "
                         f"--levels={empty - 1}, or a smaller --prune_fraction")
    # The run's name: levels/controls are platform fields; rewind_from counts by content, and makes
    # rewind_step irrelevant, so neither the path nor an ignored rewind_step renames the run.
    out = run_dir("imp", cfg, digests={"rewind_from": f"sha256:{sha}" if sha else ""},
                  unused={"rewind_step"} if sha else ())
    seed = cfg.stability_data_seed
    if seed is None:
        seed = derive_seed(cfg.data_order_seed(), "stability")
    return _Run(cfg, device, data, out, start, end.it, model, names,
                [n for n, _ in model.named_parameters()], base_mask, controls, rewind, level0, rewind_file, sha,
                momentum, perturbations=perturbations, stability=levels,
                path=PathSettings(cfg.stability_points, cfg.stability_bn), stability_seed=seed)


def stability_levels(cfg: ImpConfig) -> tuple[int, ...]:
    """The levels --stability names (all = 0..levels), checked with its path settings."""
    text = cfg.stability.strip()
    if not text:
        return ()
    try:
        levels = (
            tuple(range(cfg.levels + 1))
            if text == "all"
            else tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
        )
    except ValueError:
        raise UsageError(
            f"--stability={cfg.stability}: give levels, e.g. 0 (the dense network at the rewind point) or 0,3, or all"
        ) from None
    beyond = [lvl for lvl in levels if not 0 <= lvl <= cfg.levels]
    if beyond:
        raise UsageError(f"--stability={cfg.stability}: level {beyond[0]} is not among levels 0..{cfg.levels}; "
                         f"raise --levels or name fewer levels")
    if cfg.stability_points < 1:
        raise UsageError(
            f"--stability_points={cfg.stability_points}: evaluate at least 1 point inside the path, e.g. 11"
        )
    if cfg.stability_bn not in BN_MODES:
        raise UsageError(f"--stability_bn={cfg.stability_bn}: choose {' or '.join(BN_MODES)}")
    return levels


# ---------------------------------------------------------------------------------------------- masks on disk
def _load_mask(path: Path, r: _Run) -> dict:
    mask = checkpoints.load(path)
    try:
        imp_masks.check_mask(mask, r.template, r.names)
    except ValueError as err:
        raise UsageError(f"{path} does not fit this run ({err}); move it away to recompute it") from None
    return mask


def _ensure_mask(part_dir: Path, r: _Run, compute) -> dict:
    """The part's mask: read from mask.pt if written earlier, else computed and written (atomically)."""
    path = part_dir / "mask.pt"
    if path.exists():
        mask = _load_mask(path, r)
    else:
        mask = compute()
        part_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.save_atomic(mask, path)
    if not (part_dir / "density.json").exists():
        checkpoints.write_json_atomic(part_dir / "density.json", imp_masks.density_report(mask))
    return mask


def _trunk_mask(r: _Run, level: int) -> dict:
    if level == 0:
        return _ensure_mask(r.out / "level_0", r, lambda: r.base_mask)

    def prune():
        prev = r.out / f"level_{level - 1}"
        weights = checkpoints.load(prev / "final.pt")["model"]
        try:
            return global_magnitude_prune(weights, _load_mask(prev / "mask.pt", r), r.cfg.prune_fraction)
        except ValueError as err:
            raise UsageError(f"cannot prune {prev / 'final.pt'}: {err}") from None

    return _ensure_mask(r.out / f"level_{level}", r, prune)


# ---------------------------------------------------------------------------------------------- training
def _tagged(sinks, level: int, kind: str, density: float):
    tags = {"imp_level": level, "imp_kind": kind, "imp_density": density}
    return [lambda record, sink=sink: sink({**record, **tags}) for sink in sinks]


def _part(r: _Run, part_dir: Path, state: dict, mask: dict, *, start: int, save_at: tuple,
          momentum: dict | None, sinks, level: int, kind: str, init_seed: int | None = None,
          data_seed: int | None = None) -> Training:
    """One part (trunk level, control, perturbation or stability copy) as a training for the scheduler;
    momentum: {name: buffer} the optimiser starts with (None: fresh SGD); data_seed: another data order."""
    model = setup.make_model(r.cfg, r.data, r.device)
    model.load_state_dict(state)
    plan = setup.make_plan(r.cfg, r.data, r.device, start=start, save_at=save_at, seed=data_seed,
                           progress=f"imp level {level} {kind}")
    optimizer_state = None
    if momentum:  # an SGD state made for this very model and device, so it loads as the trainer's own
        optimizer = make_optimizer(model, plan)
        for name, param in model.named_parameters():
            if name in momentum:
                optimizer.state[param]["momentum_buffer"] = momentum[name].to(param.device, param.dtype).clone()
        optimizer_state = optimizer.state_dict()
    pruned = imp_masks.kept(mask) < imp_masks.size(mask)  # a dense level trains exactly like `earlyphase train`
    density = imp_masks.density(mask)
    sinks = _tagged(sinks, level, kind, density)
    init = _init_state(r, init_seed) if r.cfg.track_steps else None  # the part's original initialisation
    hooks = stats.tracker_hooks(r.cfg, model, plan, r.data, part_dir, mask=mask, init=init, sinks=sinks)

    def done(result) -> None:
        acc = result.summary["test_accuracy"]
        state_text = "already finished" if result.skipped else "done"
        print(f"imp level {level} {kind}: density {density:.4f}, test accuracy {acc:.4f} ({state_text})",
              file=sys.stderr)
        if not result.skipped:  # finished work that is skipped logs nothing
            for sink in sinks:
                sink({"part_done": True, "test_accuracy": acc})

    return Training(model, r.data, plan, part_dir, mask=mask if pruned else None, optimizer_state=optimizer_state,
                    sinks=sinks, step_hooks=hooks, done=done)


def _rewind_point(r: _Run) -> tuple[dict, dict | None]:
    """(model state, momentum by name or None) every level >= 1 and random_prune control starts from."""
    if r.rewind_file is not None:
        return r.rewind_file["model"], r.rewind_momentum
    path = r.out / "level_0" / f"weights_{r.start}it.pt"
    if not path.exists():
        raise UsageError(
            f"the rewind point {path} is missing although level 0 finished; move level_0 away to retrain it"
        )
    saved = checkpoints.load(path)
    return saved["model"], momentum_by_name(saved["optimizer"], r.param_names)


def _momentum_for(r: _Run, rewind_momentum: dict | None, mask: dict) -> dict | None:
    """The momentum a level >= 1 starts with: none (fresh) or the rewind point's, masked (rewound)."""
    if r.cfg.rewind_optimizer == "fresh" or not rewind_momentum:
        return None
    return masked_momentum(rewind_momentum, mask)


def _control(r: _Run, level: int, control: str, trunk_mask: dict, rewind_model, rewind_momentum, sinks) -> Training:
    part = r.out / f"level_{level}" / control
    generator = torch.Generator().manual_seed(derive_seed(r.cfg.seed, control, level))
    mask = _ensure_mask(part, r, lambda: imp_controls.control_mask(control, trunk_mask, generator))
    reinit_seed = _reinit_seed(r, level) if imp_controls.reinitialises(control) else None
    if reinit_seed is not None:
        fresh = setup.make_model(r.cfg, r.data, torch.device("cpu"), seed=reinit_seed)
        state, momentum = rewound_state(fresh.state_dict(), mask), None
    else:
        state, momentum = rewound_state(rewind_model, mask), _momentum_for(r, rewind_momentum, mask)
    return _part(r, part, state, mask, start=r.start, save_at=(r.start,), momentum=momentum,
                 sinks=sinks, level=level, kind=control, init_seed=reinit_seed)


def _init_state(r: _Run, seed: int | None = None) -> dict:
    """The seed's initialisation: what level 0 and pretraining start from (level_0/weights_0it.pt without
    --rewind_from)."""
    return setup.make_model(r.cfg, r.data, torch.device("cpu"), seed=seed).state_dict()


def perturb_kind(name: str, noise: float) -> str:
    """The part's kind and folder name: perturb_NAME, and perturb_noise{SCALE} for a noise scale other than 1."""
    return f"perturb_noise{noise:g}" if name == "noise" and noise != 1.0 else f"perturb_{name}"


def _perturb_seed(r: _Run, name: str, level: int) -> int:
    return derive_seed(r.cfg.seed, "perturb", name, level)


def _perturbation(r: _Run, level: int, name: str, trunk_mask: dict, rewind_model, rewind_momentum, sinks) -> Training:
    kind = perturb_kind(name, r.cfg.perturb_noise)
    part = r.out / f"level_{level}" / kind
    mask = _ensure_mask(part, r, lambda: {n: m.clone() for n, m in trunk_mask.items()})
    seed = _perturb_seed(r, name, level)
    if not (part / "perturbation.json").exists():
        checkpoints.write_json_atomic(
            part / "perturbation.json",
            {"perturbation": name, "seed": seed, "noise": r.cfg.perturb_noise if name == "noise" else None},
        )
    generator = torch.Generator().manual_seed(seed)
    try:
        state = imp_perturb.perturb(name, rewound_state(rewind_model, mask), mask, generator,
                                    init=_init_state(r), noise=r.cfg.perturb_noise)
    except ValueError as err:
        raise UsageError(f"--perturb={name}: {err}") from None
    return _part(r, part, state, mask, start=r.start, save_at=(r.start,),
                 momentum=_momentum_for(r, rewind_momentum, mask), sinks=sinks, level=level, kind=kind)


# ---------------------------------------------------------------------------------------------- stability
def stability_dir(out: Path, cfg: ImpConfig, level: int) -> Path:
    """Where a level's second copy trains in the run directory `out`: `stability`, or `stability_seed{N}` for a
    chosen data-order seed."""
    name = "stability" if cfg.stability_data_seed is None else f"stability_seed{cfg.stability_data_seed}"
    return out / f"level_{level}" / name


def _level0_at_k(r: _Run) -> tuple[dict, dict, dict | None]:
    """(state, mask, momentum) of the dense network at the rewind point: level 0's weights at k."""
    saved = checkpoints.load(r.out / "level_0" / f"weights_{r.start}it.pt")
    return saved["model"], _trunk_mask(r, 0), momentum_by_name(saved["optimizer"], r.param_names) or None


def _second_copy(r: _Run, level: int, state: dict, mask: dict, momentum: dict | None, sinks) -> Training:
    """The level's second copy: its start state, mask and optimiser, another data order; the first copy is the
    level itself (level 0: the dense run, which passes through k in the same state)."""
    return _part(r, stability_dir(r.out, r.cfg, level), state, mask, start=r.start, save_at=(), momentum=momentum,
                 sinks=sinks, level=level, kind="stability", data_seed=r.stability_seed)


def _analyse(r: _Run, sinks) -> None:
    """stability.json for every level whose two copies have finished (once per path setting)."""
    key = r.path.key()
    for level in r.stability:
        folder = stability_dir(r.out, r.cfg, level)
        results = records.read(folder / "stability.json", records.STABILITY, missing_ok=True,
                               fix="move it away: the analysis is redone from the two copies") or {}
        done = all((p / "summary.json").exists() for p in (r.out / f"level_{level}", folder))
        if key in results or not done:
            continue
        first, second = (checkpoints.load(p / "final.pt")["model"] for p in (r.out / f"level_{level}", folder))
        mask = checkpoints.load(r.out / f"level_{level}" / "mask.pt")
        check_mask_holds(interpolate(first, second, 0.5), mask)
        model = setup.make_model(r.cfg, r.data, r.device)
        plan = setup.make_plan(r.cfg, r.data, r.device, start=r.start)
        path = evaluate_path(model, {k: v.to(r.device) for k, v in first.items()},
                                       {k: v.to(r.device) for k, v in second.items()}, r.data, plan, r.path)
        results[key] = {**summarise(path, r.path, (r.cfg.data_order_seed(), r.stability_seed)), "level": level,
                        "start_step": r.start, "density": imp_masks.density(mask)}
        checkpoints.write_json_atomic(folder / "stability.json", results)
        print(f"imp level {level} stability: instability {results[key]['instability']:.2f} points (test), "
              f"{results[key]['train_instability']:.2f} (train subset)", file=sys.stderr)
        for sink in sinks:
            sink({"imp_level": level, "imp_kind": "stability", "instability": results[key]["instability"],
                  "train_instability": results[key]["train_instability"]})


def _reinit_seed(r: _Run, level: int) -> int:
    return derive_seed(r.cfg.seed, "reinit", level)


def work(cfg: ImpConfig, sinks=()) -> Job:
    """IMP as a scheduler job: yields level 0, then per level its trunk, controls and perturbations
    together (they depend only on the previous level); returns (run dir, tickets)."""
    r = prepare(cfg)
    r.out.mkdir(parents=True, exist_ok=True)
    point = r.rewind_file or {}
    record = {
        **setup.config_record("imp", r.cfg),
        "rewind_from_sha256": r.rewind_from_sha256,
        "rewind_step_it": r.start,
        "training_steps_it": r.end,
        "rewind_point": {k: point.get(k) for k in ("description", "step", "pretext")} if point else None,
        "perturb_kinds": [perturb_kind(p, r.cfg.perturb_noise) for p in r.perturbations],
    }
    _check_recorded_config(r.out)
    checkpoints.write_json_atomic(r.out / "config.json", record)
    for sink in sinks:  # what W&B runs carry: the resolved config without paths, and the condition
        sink({"identity": {**public_config(record), **identify(record).fields(), "seed": r.cfg.seed,
                           "run": r.out.name}})
    mask = _trunk_mask(r, 0)
    if r.rewind_file is not None:  # the run continues from the rewind point at k, momentum included
        state, save_at = rewound_state(r.rewind_file["model"], mask), (r.start,)
        start, momentum = r.start, masked_momentum(r.rewind_momentum, mask) if r.rewind_momentum else None
    else:
        state, save_at = _init_state(r), tuple(sorted({0, r.start}))
        start, momentum = 0, None
    yield [_part(r, r.out / "level_0", state, mask, start=start, save_at=save_at, momentum=momentum,
                 sinks=sinks, level=0, kind="trunk")]
    write_tickets(r)
    _records_ready(r, sinks, 0)
    # the dense network's second copy starts from level 0's state at k, known once level 0 has trained
    waiting = [_second_copy(r, 0, *_level0_at_k(r), sinks)] if 0 in r.stability else []
    if r.cfg.levels:
        rewind_model, rewind_momentum = _rewind_point(r)
    for level in range(1, r.cfg.levels + 1):
        mask = _trunk_mask(r, level)
        start_state, start_momentum = rewound_state(rewind_model, mask), _momentum_for(r, rewind_momentum, mask)
        parts = [_part(r, r.out / f"level_{level}", start_state, mask, start=r.start, save_at=(r.start,),
                       momentum=start_momentum, sinks=sinks, level=level, kind="trunk")]
        parts += [_control(r, level, c, mask, rewind_model, rewind_momentum, sinks) for c in r.controls]
        parts += [_perturbation(r, level, p, mask, rewind_model, rewind_momentum, sinks) for p in r.perturbations]
        if level in r.stability:
            parts.append(_second_copy(r, level, start_state, mask, start_momentum, sinks))
        yield waiting + parts
        waiting = []
        write_tickets(r)
        _analyse(r, sinks)
        _records_ready(r, sinks, level)
    if waiting:
        yield waiting
    _analyse(r, sinks)
    records = write_tickets(r)
    _records_ready(r, sinks, r.cfg.levels)
    for sink in sinks:
        sink({"tickets": records})
    return r.out, records


def _check_recorded_config(out: Path) -> None:
    """A run directory's config.json must name it: one edited after the run (lr 0.1 -> 0.5) would have the run's
    old results reported under the new config, or be silently rewritten. Platform fields (levels, controls, ...)
    may differ: they name nothing, and the new record replaces the old."""
    path = out / "config.json"
    recorded = records.read(path, records.IMP_CONFIG, missing_ok=True, fix=f"move {out} away to run it again")
    if recorded is not None and imp_run_name(recorded) != out.name:
        raise UsageError(f"{path} names another run ({imp_run_name(recorded)}): it was edited after the run; put back "
                         f"the config it ran with, or move {out} away to run it again")


def _records_ready(r: _Run, sinks, level: int) -> None:
    """Tell the sinks that the run's records are complete up to `level` (W&B logs them as an artifact)."""
    for sink in sinks:
        sink({"records": str(r.out), "imp_level": level, "imp_kind": "trunk"})


def run(cfg: ImpConfig, sinks=(), scheduler: SchedulerConfig | None = None) -> tuple[Path, list[dict]]:
    """Run (or resume) IMP for levels 0..cfg.levels and the requested controls; returns (run dir, tickets).
    scheduler: how its trainings share the device (default: one at a time)."""
    scheduler = scheduler or SchedulerConfig()
    return schedule.run(work(cfg, sinks), scheduler.concurrent, scheduler.concurrent_engine)


# ---------------------------------------------------------------------------------------------- records
def _record(r: _Run, level: int, kind: str, part: Path) -> dict:
    summary = records.read(part / "summary.json", records.SUMMARY, fix="move it away to train that part again")
    density_path = part / "density.json"
    density = (records.read(density_path, records.DENSITY, fix="move it away: it is rebuilt from mask.pt")
               ["density"] if density_path.exists() else imp_masks.density(checkpoints.load(part / "mask.pt")))
    if level == 0:
        rewind = r.level0_description
    elif kind == "random_reinit":
        rewind = f"fresh initialisation (seed {_reinit_seed(r, level)})"
    elif kind.startswith("perturb_"):
        rewind = f"{r.rewind_description}, perturbed: {kind.removeprefix('perturb_')}"
    else:
        rewind = r.rewind_description
    record = {"level": level, "kind": kind, "density": density, "test_accuracy": summary["test_accuracy"],
              "train_loss": summary["train_loss"], "start_step": summary["start_step"],
              "end_step": summary["end_step"], "seed": r.cfg.seed, "rewind": rewind,
              "run_dir": part.relative_to(r.out).as_posix()}
    if kind.startswith("perturb_"):
        info = checkpoints.read_json(part / "perturbation.json", missing_ok=True,
                                     fix="move it away: it is rewritten when the part is rerun") or {}
        record.update(
            perturbation=info.get("perturbation"), perturb_noise=info.get("noise"), control_seed=info.get("seed")
        )
    elif kind != "trunk":
        record["control_seed"] = (
            _reinit_seed(r, level) if kind == "random_reinit" else derive_seed(r.cfg.seed, kind, level)
        )
    return record


def collect_tickets(r: _Run) -> list[dict]:
    """Records of every finished part in the run directory (levels ascending, trunk before controls)."""
    levels = sorted(int(m.group(1)) for p in r.out.glob("level_*") if (m := re.fullmatch(r"level_(\d+)", p.name)))
    records = []
    for level in levels:
        trunk = r.out / f"level_{level}"
        perturbed = sorted((p for p in trunk.glob("perturb_*") if p.is_dir()), key=_perturb_order)
        for kind, part in (
            [("trunk", trunk)] + [(c, trunk / c) for c in imp_controls.CONTROLS] + [(p.name, p) for p in perturbed]
        ):
            if (part / "summary.json").exists():
                records.append(_record(r, level, kind, part))
    return records


def _perturb_order(part: Path) -> tuple:
    """Canonical order of perturbation parts (imp.perturb.PERTURBATIONS; noise scales by name)."""
    name = part.name.removeprefix("perturb_")
    base = name if name in imp_perturb.PERTURBATIONS else "noise"
    return imp_perturb.PERTURBATIONS.index(base), name


def write_tickets(r: _Run) -> list[dict]:
    records = collect_tickets(r)
    checkpoints.write_json_atomic(r.out / "tickets.json", records)
    return records


def format_table(records: list[dict]) -> str:
    """level | density % | trunk accuracy | one column per control present."""
    kinds = [c for c in imp_controls.CONTROLS if any(rec["kind"] == c for rec in records)]
    kinds += sorted(
        {rec["kind"] for rec in records if rec["kind"].startswith("perturb_")}, key=lambda k: _perturb_order(Path(k))
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


def parse(argv: list[str]) -> ImpCommand:
    return parse_overrides(ImpCommand, argv)


def check_command(command: ImpCommand) -> None:
    """Everything running `command` would refuse, refused now; nothing is written or trained."""
    schedule.check_settings(command.scheduler.concurrent, command.scheduler.concurrent_engine)
    prepare(command.imp)


def check(argv: list[str]) -> None:
    check_command(parse(argv))


def run_logged(command: ImpCommand, what: str) -> tuple[Path, list[dict]]:
    """Run an IMP command under W&B logging (one W&B run, a step per level); `what` names it, e.g. "imp"."""
    cfg = command.imp
    return logged_run(functools.partial(run, scheduler=command.scheduler), cfg, f"{what} seed {cfg.seed}", "level")


def main(argv: list[str]) -> int:
    out, records = run_logged(parse(argv), "imp")
    print(format_table(records))
    print(out)
    return 0
