"""`earlyphase imp`, stability to SGD noise: a level's second copy (another data order from the level's start state)
and the analysis of the linear path between the two, once both have finished."""

from __future__ import annotations

import sys
from pathlib import Path

from earlyphase.imp import masks as imp_masks
from earlyphase.imp.rewinding import momentum_by_name

from ..engine import checkpoints, records
from ..engine.interpolation import check_mask_holds, evaluate_path, interpolate, summarise
from ..engine.run_dir import final_file, load_bound, weights_file
from ..engine.schedule import Training
from . import setup
from .config import ImpConfig
from .events import InPart
from .imp_mask_files import trunk_mask
from .imp_parts import part_training
from .imp_setup import ImpRun


def stability_dir(out: Path, cfg: ImpConfig, level: int) -> Path:
    """Where a level's second copy trains in the run directory `out`: `stability`, or `stability_seed{N}` for a
    chosen data-order seed."""
    name = "stability" if cfg.stability_data_seed is None else f"stability_seed{cfg.stability_data_seed}"
    return out / f"level_{level}" / name


def level0_at_k(imp_run: ImpRun) -> tuple[dict, dict, dict | None]:
    """(state, mask, momentum) of the dense network at the rewind point: level 0's weights at k."""
    saved = load_bound(weights_file(imp_run.out / "level_0", imp_run.k))
    return saved["model"], trunk_mask(imp_run, 0), momentum_by_name(saved["optimizer"], imp_run.param_names) or None


def second_copy(imp_run: ImpRun, level: int, state: dict, mask: dict, momentum: dict | None, sinks) -> Training:
    """The level's second copy: its start state, mask and optimiser, another data order; the first copy is the
    level itself (level 0: the dense run, which passes through k in the same state)."""
    return part_training(imp_run, stability_dir(imp_run.out, imp_run.cfg, level), state, mask, start=imp_run.k,
                         save_at=(), momentum=momentum, sinks=sinks, level=level, kind="stability",
                         data_seed=imp_run.stability_seed)


def analyse(imp_run: ImpRun, sinks) -> None:
    """stability.json for every level whose two copies have finished (once per path setting)."""
    key = imp_run.path.key()
    for level in imp_run.stability:
        folder = stability_dir(imp_run.out, imp_run.cfg, level)
        results = records.read(folder / "stability.json", records.STABILITY, missing_ok=True,
                               fix="move it away: the analysis is redone from the two copies") or {}
        done = all((p / "summary.json").exists() for p in (imp_run.out / f"level_{level}", folder))
        if key in results or not done:
            continue
        first, second = (load_bound(final_file(p))["model"] for p in (imp_run.out / f"level_{level}", folder))
        mask = load_bound(imp_run.out / f"level_{level}" / "mask.pt")
        check_mask_holds(interpolate(first, second, 0.5), mask)
        model = setup.make_model(imp_run.cfg, imp_run.data, imp_run.device)
        plan = setup.make_plan(imp_run.cfg, imp_run.data, imp_run.device, start=imp_run.k)
        device = imp_run.device
        path = evaluate_path(model, {name: v.to(device) for name, v in first.items()},
                             {name: v.to(device) for name, v in second.items()}, imp_run.data, plan, imp_run.path)
        seeds = (imp_run.cfg.data_order_seed(), imp_run.stability_seed)
        results[key] = {**summarise(path, imp_run.path, seeds), "level": level, "start_step": imp_run.k,
                        "density": imp_masks.density(mask)}
        checkpoints.write_json_atomic(folder / "stability.json", results)
        print(f"imp level {level} stability: instability {results[key]['instability']:.2f} points (test), "
              f"{results[key]['train_instability']:.2f} (train subset)", file=sys.stderr)
        for sink in sinks:
            sink(InPart(level, "stability", None, {"instability": results[key]["instability"],
                                                    "train_instability": results[key]["train_instability"]}))
