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


def level0_at_k(r: ImpRun) -> tuple[dict, dict, dict | None]:
    """(state, mask, momentum) of the dense network at the rewind point: level 0's weights at k."""
    saved = load_bound(weights_file(r.out / "level_0", r.start))
    return saved["model"], trunk_mask(r, 0), momentum_by_name(saved["optimizer"], r.param_names) or None


def second_copy(r: ImpRun, level: int, state: dict, mask: dict, momentum: dict | None, sinks) -> Training:
    """The level's second copy: its start state, mask and optimiser, another data order; the first copy is the
    level itself (level 0: the dense run, which passes through k in the same state)."""
    return part_training(r, stability_dir(r.out, r.cfg, level), state, mask, start=r.start, save_at=(),
                         momentum=momentum, sinks=sinks, level=level, kind="stability", data_seed=r.stability_seed)


def analyse(r: ImpRun, sinks) -> None:
    """stability.json for every level whose two copies have finished (once per path setting)."""
    key = r.path.key()
    for level in r.stability:
        folder = stability_dir(r.out, r.cfg, level)
        results = records.read(folder / "stability.json", records.STABILITY, missing_ok=True,
                               fix="move it away: the analysis is redone from the two copies") or {}
        done = all((p / "summary.json").exists() for p in (r.out / f"level_{level}", folder))
        if key in results or not done:
            continue
        first, second = (load_bound(final_file(p))["model"] for p in (r.out / f"level_{level}", folder))
        mask = load_bound(r.out / f"level_{level}" / "mask.pt")
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
            sink(InPart(level, "stability", None, {"instability": results[key]["instability"],
                                                    "train_instability": results[key]["train_instability"]}))
