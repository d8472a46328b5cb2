"""`earlyphase imp`, its validation: a config checked completely (data and rewind file included) into an ImpRun,
before anything is written; and the seeds and names every part of a run derives from it."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from earlyphase.imp import controls as imp_controls
from earlyphase.imp import masks as imp_masks
from earlyphase.imp import perturb as imp_perturb
from earlyphase.imp.pruning import survivors
from earlyphase.imp.rewinding import OPTIMIZER_MODES

from ..engine import checkpoints
from ..engine.augment import derive_seed
from ..engine.errors import UsageError
from ..engine.interpolation import BN_MODES, PathSettings
from . import setup
from .config import ImpConfig, defaults_for, imp_run_name
from .flags import split_list


@dataclass
class ImpRun:
    """Everything validated before anything is written."""

    cfg: ImpConfig
    device: torch.device
    data: object
    out: Path
    k: int  # the rewind step in iterations (--rewind_step, or the rewind point's step): where every level >= 1 starts
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


@dataclass(frozen=True)
class RewindPoint:
    """Where every pruned level starts: step k, the state's file (--rewind_from) if any, and how records name it."""

    k: int  # iterations
    description: str
    level0_description: str
    file: dict | None = None
    sha256: str | None = None
    momentum: dict | None = None


def _checked_options(cfg: ImpConfig) -> tuple[tuple, tuple]:
    """(controls, perturbations) of a config whose IMP options are each checked."""
    if not 0 < cfg.prune_fraction < 1:
        raise UsageError(f"--prune_fraction={cfg.prune_fraction}: must be strictly between 0 and 1, e.g. 0.2")
    if cfg.levels < 0:
        raise UsageError(f"--levels={cfg.levels}: must be 0 (dense only) or more")
    if cfg.rewind_optimizer not in OPTIMIZER_MODES:
        raise UsageError(f"--rewind_optimizer={cfg.rewind_optimizer}: choose {' or '.join(OPTIMIZER_MODES)}")
    try:
        controls = imp_controls.parse_controls(split_list(cfg.controls))
    except ValueError as err:
        raise UsageError(f"--controls: {err}") from None
    try:
        perturbations = imp_perturb.parse_perturbations(split_list(cfg.perturb))
    except ValueError as err:
        raise UsageError(f"--perturb: {err}") from None
    if not (cfg.perturb_noise >= 0 and cfg.perturb_noise < float("inf")):
        raise UsageError(f"--perturb_noise={cfg.perturb_noise}: must be a finite number >= 0, e.g. 1.0")
    return controls, perturbations


def _prunable(cfg: ImpConfig, model) -> tuple[list, list]:
    """(the prunable names, the ignored ones in canonical spelling, so `fc` and `fc.weight` name one run)."""
    ignore = split_list(cfg.prune_ignore)
    try:
        names = imp_masks.prunable_names(model, ignore)
    except ValueError as err:
        raise UsageError(f"--{err}") from None
    if not names:
        raise UsageError("--prune_ignore excludes every prunable weight: nothing left to prune")
    return names, [n for n in imp_masks.prunable_names(model) if n not in names]


def _rewind_point(cfg: ImpConfig, model, names: list, per_epoch: int, end: int) -> RewindPoint:
    """The rewind point: --rewind_from's file (checked) or the dense run's step --rewind_step; it must lie before T."""
    if cfg.rewind_from:
        path = _resolve_rewind_from(cfg.rewind_from)
        state = _check_rewind_file(checkpoints.load(path, given="--rewind_from"), path, cfg, model, names)
        momentum = state.get("momentum") or None
        if cfg.rewind_optimizer == "rewound" and momentum is None:
            raise UsageError(
                f"--rewind_optimizer=rewound needs momentum at the rewind point; {path} holds none: use fresh"
            )
        text = f"{path.resolve()} ({state.get('description', 'no description')})"
        point = RewindPoint(state["step"], text, text, state, hashlib.sha256(path.read_bytes()).hexdigest(), momentum)
        what = f"the rewind point {path} stands for step {point.k}it, which"
    else:
        k = setup.parse_step(cfg.rewind_step, per_epoch, "rewind_step").it
        point = RewindPoint(k, f"reset to initialisation (seed {cfg.seed}), level_0/weights_0it.pt" if k == 0
                            else f"dense run at step {k}it, level_0/weights_{k}it.pt",
                            f"initialisation (seed {cfg.seed})")
        what = f"--rewind_step={cfg.rewind_step} ({k}it)"
    if point.k >= end:
        raise UsageError(f"{what} is not before the end of training ({cfg.training_steps} = {end}it), so every "
                         f"pruned level would train 0 steps: rewind earlier or train longer")
    if point.file is not None and cfg.rewind_step != defaults_for(cfg)["rewind_step"]:
        print(f"earlyphase imp: --rewind_step={cfg.rewind_step} is ignored: the rewind point stands for step "
              f"{point.k}it, where every level starts", file=sys.stderr)
    return point


def _check_levels(cfg: ImpConfig, base_mask: dict) -> None:
    counts = survivors(imp_masks.kept(base_mask), cfg.prune_fraction, cfg.levels)
    if 0 in counts:
        empty = counts.index(0) + 1
        raise UsageError(f"--levels={cfg.levels}: pruning {cfg.prune_fraction:g} of the survivors per level leaves no "
                         f"weight at level {empty} (of {imp_masks.kept(base_mask)} prunable weights); use at most "
                         f"--levels={empty - 1}, or a smaller --prune_fraction")


def prepare(cfg: ImpConfig) -> ImpRun:
    """Validate `cfg` completely (data and rewind file included) without writing anything."""
    cfg = setup.validate(cfg)
    controls, perturbations = _checked_options(cfg)
    levels = stability_levels(cfg)
    device = setup.resolve_device(cfg.device)
    data = setup.load_data(cfg, device)
    per_epoch, end = setup.training_steps(cfg, data)
    model = setup.make_model(cfg, data, torch.device("cpu"))
    names, ignored = _prunable(cfg, model)
    cfg = dataclasses.replace(cfg, controls=",".join(controls), prune_ignore=",".join(ignored),
                              perturb=",".join(perturbations))
    if cfg.rewind_from:  # the file's full path for the records (the run is named by its content)
        cfg = dataclasses.replace(cfg, rewind_from=str(Path(cfg.rewind_from).expanduser().resolve()))
    point = _rewind_point(cfg, model, names, per_epoch, end.it)
    base_mask = imp_masks.dense_mask(model, names)
    if point.file is not None and point.file.get("mask") is not None:  # sparse pretraining: level 0's mask
        base_mask.update({n: m.clone() for n, m in point.file["mask"].items()})
    _check_levels(cfg, base_mask)
    out = Path(cfg.out).expanduser() / imp_run_name(cfg, point.sha256)
    seed = cfg.stability_data_seed
    return ImpRun(cfg=cfg, device=device, data=data, out=out, k=point.k, end=end.it, template=model,
                  names=names, param_names=[n for n, _ in model.named_parameters()], base_mask=base_mask,
                  controls=controls, rewind_description=point.description,
                  level0_description=point.level0_description, rewind_file=point.file,
                  rewind_from_sha256=point.sha256, rewind_momentum=point.momentum, perturbations=perturbations,
                  stability=levels, path=PathSettings(cfg.stability_points, cfg.stability_bn),
                  stability_seed=derive_seed(cfg.data_order_seed(), "stability") if seed is None else seed)


def stability_levels(cfg: ImpConfig) -> tuple[int, ...]:
    """The levels --stability names (all = 0..levels), checked with its path settings."""
    text = cfg.stability.strip()
    if not text:
        return ()
    try:
        levels = (
            tuple(range(cfg.levels + 1))
            if text == "all"
            else tuple(sorted({int(t) for t in split_list(text)}))
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


def init_state(imp_run: ImpRun, seed: int | None = None) -> dict:
    """The seed's initialisation: what level 0 and pretraining start from (level_0/weights_0it.pt without
    --rewind_from)."""
    return setup.make_model(imp_run.cfg, imp_run.data, torch.device("cpu"), seed=seed).state_dict()


def control_seeds(imp_run: ImpRun, control: str, level: int) -> tuple[int, int | None]:
    """(the seed of the control's random mask, that of its fresh initialisation or None): the one rule, used by
    the training and by its record."""
    init_seed = derive_seed(imp_run.cfg.seed, "reinit", level) if imp_controls.reinitialises(control) else None
    return derive_seed(imp_run.cfg.seed, control, level), init_seed


def control_seed(imp_run: ImpRun, control: str, level: int) -> int:
    """The seed a ticket record names for a control: its fresh initialisation's, else its random mask's."""
    mask_seed, init_seed = control_seeds(imp_run, control, level)
    return mask_seed if init_seed is None else init_seed


def perturb_kind(name: str, noise: float) -> str:
    """The part's kind and folder name: perturb_NAME, and perturb_noise{SCALE} for a noise scale other than 1."""
    return f"perturb_noise{noise:g}" if name == "noise" and noise != 1.0 else f"perturb_{name}"


def perturb_seed(imp_run: ImpRun, name: str, level: int) -> int:
    return derive_seed(imp_run.cfg.seed, "perturb", name, level)
