"""`earlyphase imp`, the parts of a level as trainings for the scheduler: the trunk (the ticket), each control and
each perturbation, from the rewind point with the optimiser the protocol gives them."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from earlyphase.imp import controls as imp_controls
from earlyphase.imp import masks as imp_masks
from earlyphase.imp import perturb as imp_perturb
from earlyphase.imp.rewinding import masked_momentum, momentum_by_name, rewound_state

from ..engine import checkpoints
from ..engine.errors import UsageError
from ..engine.run_dir import load_bound, weights_file
from ..engine.schedule import Training
from ..engine.trainer import make_optimizer
from . import setup, stats
from .events import PartDone, in_part
from .imp_mask_files import ensure_mask
from .imp_setup import ImpRun, control_seeds, init_state, perturb_kind, perturb_seed


def part_training(imp_run: ImpRun, part_dir: Path, state: dict, mask: dict, *, start: int, save_at: tuple,
          momentum: dict | None, sinks, level: int, kind: str, init_seed: int | None = None,
          data_seed: int | None = None) -> Training:
    """One part (trunk level, control, perturbation or stability copy) as a training for the scheduler;
    momentum: {name: buffer} the optimiser starts with (None: fresh SGD); data_seed: another data order."""
    model = setup.make_model(imp_run.cfg, imp_run.data, imp_run.device)
    model.load_state_dict(state)
    plan = setup.make_plan(imp_run.cfg, imp_run.data, imp_run.device, start=start, save_at=save_at, seed=data_seed,
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
    sinks = in_part(sinks, level, kind, density)
    init = init_state(imp_run, init_seed) if imp_run.cfg.track_steps else None  # the part's original initialisation
    hooks = stats.tracker_hooks(imp_run.cfg, model, plan, imp_run.data, part_dir, mask=mask, init=init, sinks=sinks)

    def done(result) -> None:
        acc = result.summary["test_accuracy"]
        state_text = "already finished" if result.skipped else "done"
        print(f"imp level {level} {kind}: density {density:.4f}, test accuracy {acc:.4f} ({state_text})",
              file=sys.stderr)
        if not result.skipped:  # finished work that is skipped logs nothing
            for sink in sinks:
                sink(PartDone(acc))

    return Training(model, imp_run.data, plan, part_dir, mask=mask if pruned else None, optimizer_state=optimizer_state,
                    sinks=sinks, step_hooks=hooks, done=done)


def rewind_point(imp_run: ImpRun) -> tuple[dict, dict | None]:
    """(model state, momentum by name or None) every level >= 1 and random_prune control starts from."""
    if imp_run.rewind_file is not None:
        return imp_run.rewind_file["model"], imp_run.rewind_momentum
    path = weights_file(imp_run.out / "level_0", imp_run.k)
    if not path.exists():
        raise UsageError(
            f"the rewind point {path} is missing although level 0 finished; move level_0 away to retrain it"
        )
    saved = load_bound(path)
    return saved["model"], momentum_by_name(saved["optimizer"], imp_run.param_names)


def momentum_for(imp_run: ImpRun, rewind_momentum: dict | None, mask: dict) -> dict | None:
    """The momentum a level >= 1 starts with: none (fresh) or the rewind point's, masked (rewound)."""
    if imp_run.cfg.rewind_optimizer == "fresh" or not rewind_momentum:
        return None
    return masked_momentum(rewind_momentum, mask)


def control_training(imp_run: ImpRun, level: int, control: str, trunk_mask: dict, rewind_model, rewind_momentum,
                     sinks) -> Training:
    part = imp_run.out / f"level_{level}" / control
    mask_seed, fresh_seed = control_seeds(imp_run, control, level)
    generator = torch.Generator().manual_seed(mask_seed)
    mask = ensure_mask(part, imp_run, lambda: imp_controls.control_mask(control, trunk_mask, generator))
    if fresh_seed is not None:
        fresh = setup.make_model(imp_run.cfg, imp_run.data, torch.device("cpu"), seed=fresh_seed)
        state, momentum = rewound_state(fresh.state_dict(), mask), None
    else:
        state, momentum = rewound_state(rewind_model, mask), momentum_for(imp_run, rewind_momentum, mask)
    return part_training(imp_run, part, state, mask, start=imp_run.k, save_at=(imp_run.k,), momentum=momentum,
                 sinks=sinks, level=level, kind=control, init_seed=fresh_seed)


def perturbed_training(imp_run: ImpRun, level: int, name: str, trunk_mask: dict, rewind_model, rewind_momentum,
                       sinks) -> Training:
    kind = perturb_kind(name, imp_run.cfg.perturb_noise)
    part = imp_run.out / f"level_{level}" / kind
    mask = ensure_mask(part, imp_run, lambda: {n: m.clone() for n, m in trunk_mask.items()})
    seed = perturb_seed(imp_run, name, level)
    if not (part / "perturbation.json").exists():
        checkpoints.write_json_atomic(
            part / "perturbation.json",
            {"perturbation": name, "seed": seed, "noise": imp_run.cfg.perturb_noise if name == "noise" else None},
        )
    generator = torch.Generator().manual_seed(seed)
    try:
        state = imp_perturb.perturb(name, rewound_state(rewind_model, mask), mask, generator,
                                    init=init_state(imp_run), noise=imp_run.cfg.perturb_noise)
    except ValueError as err:
        raise UsageError(f"--perturb={name}: {err}") from None
    return part_training(imp_run, part, state, mask, start=imp_run.k, save_at=(imp_run.k,),
                 momentum=momentum_for(imp_run, rewind_momentum, mask), sinks=sinks, level=level, kind=kind)
