"""From a config to what the trainer needs: validated steps, device, precision, data, a seeded model."""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import torch

from ..engine import dataset_registry, model_registry, models, threads
from ..engine.data import ImageData, load
from ..engine.errors import UsageError
from ..engine.folders import check_out  # noqa: F401  (the jobs' name for it)
from ..engine.plan import Schedule, TrainPlan
from ..engine.steps import Step, StepError
from ..engine.trainer import COMPILE_MODES
from .config import TrainConfig
from .flags import split_list
from .wandb_log import MODES as WANDB_MODES


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device={name}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device={name} but CUDA is not available here: use --device=cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device={name}: use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16"):
        raise UsageError(f"--precision={precision}: use auto, fp32 or bf16")
    return precision


def parse_step(text: str, per_epoch: int, name: str) -> Step:
    try:
        return Step.parse(text, per_epoch)
    except StepError as err:
        raise UsageError(f"--{name}: {err}") from None


@lru_cache(maxsize=4)
def _load_cached(name: str, data_dir: str, download: bool, device: str) -> ImageData:
    """One copy per dataset and device in a process: a study's units share it (and so can stack)."""
    if device != "cpu":
        return _load_cached(name, data_dir, download, "cpu").to(device)
    return load(name, data_dir, download)


def load_data(cfg: TrainConfig, device: torch.device) -> ImageData:
    return _load_cached(cfg.dataset, cfg.data_dir, cfg.download, str(device))


SEED_LIMIT = 2 ** 64  # torch.manual_seed takes a 64-bit seed


def check_finite(cfg) -> None:
    """Every float field of a config (of any command) is a finite number: inf or nan trains a NaN network."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{f.name}={value}: must be a finite number")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Resolve dataset defaults and check every training field; returns the resolved config."""
    check_finite(cfg)
    for name in ("seed", "data_seed", "stability_data_seed"):  # None: derived from --seed; the last is imp's
        value = getattr(cfg, name, None)
        if value is not None and not 0 <= value < SEED_LIMIT:
            raise UsageError(f"--{name}={value}: use a whole number from 0 to 2**64 - 1 = {SEED_LIMIT - 1}")
    cfg = cfg.resolved()
    for name in ("batch_size", "width", "eval_every", "checkpoint_every", "threads"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise UsageError(f"--{name} must be a positive integer")
    for name in ("lr", "gamma"):
        if not getattr(cfg, name) > 0:
            raise UsageError(f"--{name} must be positive")
    if not 0 <= cfg.momentum < 1 or cfg.weight_decay < 0:
        raise UsageError("--momentum must be in [0, 1) and --weight_decay >= 0")
    check_model(cfg)
    resolve_precision(cfg.precision, torch.device("cpu"))
    if cfg.compile not in ("auto", *COMPILE_MODES):
        raise UsageError(f"--compile={cfg.compile}: use auto, {', '.join(COMPILE_MODES)}")
    for name in ("training_steps", "warmup_steps"):
        parse_step(getattr(cfg, name), 1, name)
    milestones = [parse_step(text, 1, "milestone_steps") for text in split_list(cfg.milestone_steps)]
    if not math.isfinite(cfg.lr * _power(cfg.gamma, len(milestones))):
        raise UsageError(f"--gamma={cfg.gamma}: the learning rate overflows after {len(milestones)} milestones "
                         f"(--lr={cfg.lr} x gamma^{len(milestones)}); use a gamma such as 0.1")
    if cfg.track_steps and parse_step(cfg.track_steps, 1, "track_steps").it < 1:
        raise UsageError(f"--track_steps={cfg.track_steps}: track at least 1it, or leave it empty for no tracking")
    if cfg.wandb is not None and cfg.wandb not in WANDB_MODES:
        raise UsageError(f"--wandb={cfg.wandb}: use disabled, offline or online")
    check_out(cfg.out)
    # before the first op of the run; recorded (config.json) as the count used, since CPU results depend on it
    return dataclasses.replace(cfg, threads=threads.apply(cfg.threads))


def check_model(cfg: TrainConfig) -> None:
    """The model exists, takes --width if given, and can take the dataset's images."""
    try:
        model_registry.check_name(cfg.model)
    except ValueError as err:
        raise UsageError(f"--model={cfg.model}: {err}") from None
    dataset = dataset_registry.entry(cfg.dataset)
    if model_registry.family_and_depth(cfg.model) is None:  # a timm model: built once on no memory, checked
        if cfg.width is not None:
            raise UsageError(f"--width={cfg.width} applies to earlyphase's own families, not to timm's {cfg.model}: "
                             f"leave --width out")
        with torch.device("meta"):
            try:
                models.create(cfg.model, num_classes=dataset.num_classes)
            except ValueError as err:
                raise UsageError(f"--model={cfg.model}: {err}") from None
    need = model_registry.min_image_size(cfg.model)
    if dataset.image_size < need:
        fits = [d.name for d in dataset_registry.DATASETS if d.image_size >= need]
        raise UsageError(f"--model={cfg.model} needs images of at least {need}x{need} pixels and {cfg.dataset}'s are "
                         f"{dataset.image_size}x{dataset.image_size}: use --dataset={' or '.join(fits)}, or a "
                         f"cifar_resnet{{D}}")


def _power(base: float, exponent: int) -> float:
    try:
        return base ** exponent
    except OverflowError:
        return math.inf


def training_steps(cfg: TrainConfig, data: ImageData) -> tuple[int, Step]:
    per_epoch = data.iterations_per_epoch(cfg.batch_size)
    end = parse_step(cfg.training_steps, per_epoch, "training_steps")
    if end.it < 1:
        raise UsageError("--training_steps must be at least 1it")
    warmup = parse_step(cfg.warmup_steps, per_epoch, "warmup_steps")
    if warmup.it > end.it:
        raise UsageError(f"--warmup_steps={cfg.warmup_steps} ({warmup.it}it) is longer than training "
                         f"({cfg.training_steps} = {end.it}it): warm up for part of training, or use 0it")
    return per_epoch, end


def schedule(cfg: TrainConfig, per_epoch: int) -> Schedule:
    """The learning rate as a function of the step: --lr, x --gamma at each milestone, --warmup_steps."""
    milestones = tuple(
        parse_step(t, per_epoch, "milestone_steps").it for t in split_list(cfg.milestone_steps)
    )
    warmup = parse_step(cfg.warmup_steps, per_epoch, "warmup_steps").it
    return Schedule(cfg.lr, milestones, cfg.gamma, warmup)


def plan_for(cfg: TrainConfig, device: torch.device, *, schedule: Schedule, batch_size: int, start: int, end: int,
             save_at: tuple = (), seed: int | None = None, progress: str = "") -> TrainPlan:
    """A TrainPlan with the config's optimiser, augmentation, precision and cadence fields."""
    return TrainPlan(seed=cfg.data_order_seed() if seed is None else seed, batch_size=batch_size,
                     schedule=schedule, start=start, end=end, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                     augment=cfg.augment, precision=resolve_precision(cfg.precision, device),
                     eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every, save_at=tuple(save_at),
                     progress=progress, compile=cfg.compile)


def make_plan(cfg: TrainConfig, data: ImageData, device: torch.device, *, start: int = 0,
              save_at: tuple = (), seed: int | None = None, progress: str = "") -> TrainPlan:
    """The plan of a supervised training [start, T) under the config's schedule."""
    per_epoch, end = training_steps(cfg, data)
    return plan_for(cfg, device, schedule=schedule(cfg, per_epoch), batch_size=cfg.batch_size, start=start,
                    end=end.it, save_at=save_at, seed=seed, progress=progress)


def make_model(cfg: TrainConfig, data: ImageData, device: torch.device, seed: int | None = None) -> torch.nn.Module:
    """The initial network, a pure function of (model, width, seed); it meets models.ImageClassifier."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        try:
            model = models.create(cfg.model, width=cfg.width, num_classes=data.num_classes)
        except ValueError as err:
            raise UsageError(f"--model={cfg.model}: {err}") from None
        except (RuntimeError, MemoryError) as err:  # the allocator's refusal of a network too large for memory
            if not isinstance(err, MemoryError) and "alloc" not in str(err).lower():
                raise
            raise UsageError(f"--model={cfg.model} --width={cfg.width}: the network does not fit in memory "
                             f"({str(err).strip().splitlines()[0][:80]}); choose a smaller --width") from None
    return model.to(device)


def config_record(kind: str, cfg) -> dict:
    return {"kind": kind, **dataclasses.asdict(cfg)}
