"""`earlyphase bench`: the trainer's speed against the bare PyTorch floor on this machine.

Times, in one process and alternating (so background load hits both alike), (a) a bare loop -
ResNet-20, batch 128, forward + backward + SGD on random data resident on the device, nothing else -
and (b) `trainer.train` doing the same work through its real path: a synthetic CIFAR-shaped data set
(32x32 uint8, test split 1/5 of train as in CIFAR-10) resident on the device, per-epoch seeded order
and kornia augmentation, a 50% mask applied after every step, the step schedule, the loss accumulator,
evaluation at the CIFAR-10 cadence, per-epoch checkpoints, final.pt and summary.json. A timed repeat of
(b) is one whole train() call of `eval_every` synthetic epochs, so every per-epoch and per-call cost is
counted; a synthetic epoch has `steps_per_epoch` iterations (CPU default 6, so the bench takes under a
minute: per-epoch costs then weigh ~65x more than in a real 391-iteration epoch, a pessimistic figure).
Both use the trainer's settings (channels_last; fused SGD and bf16 autocast on CUDA; `--compile`).
Reported: medians over `--repeats` after a warm-up; images/s, their ratio, seconds per CIFAR-10 epoch
(50,000 images) and the paper's pretext-vs-rewind grid (6 conditions x 3 seeds x 9 trainings x 160
epochs = 25,920 ResNet-20 epochs) projected in hours; with `--stacked=K` also K runs at once
(`stacked.train_stacked`) in aggregate images/s.

`--gpu-suite` is the prepared script for a short GPU lease (see `gpu_suite.py`).
"""

from __future__ import annotations

import json
import sys

import torch

from ..engine import threads
from ..engine.errors import UsageError
from ..engine.schedule import ENGINES
from ..engine.trainer import COMPILE_MODES
from ..jobs import setup
from . import arguments
from .arguments import BenchConfig
from .gpu_suite import run_suite
from .timing import device_name, measure


def table(result: dict) -> str:
    lines = [f"device: {result['device']}  precision {result['precision']}  compile {result['compile']}  "
             f"channels_last {result['channels_last']}  (median of {result['repeats']} x {result['steps_per_repeat']} "
             f"steps of batch {result['batch_size']}; load average {result['load_average_before']:.1f} -> "
             f"{result['load_average_after']:.1f})"]
    if "bare_images_per_s" in result:
        lines.append(
            f"  bare loop : {result['bare_images_per_s']:9.0f} images/s  "
            f"{result['bare_s_per_cifar_epoch']:8.2f} s per CIFAR-10 epoch"
        )
    if "trainer_images_per_s" in result:
        lines.append(
            f"  trainer   : {result['trainer_images_per_s']:9.0f} images/s  "
            f"{result['trainer_s_per_cifar_epoch']:8.2f} s per CIFAR-10 epoch"
        )
    if "ratio" in result:
        lines.append(f"  ratio     : {result['ratio']:.3f} (trainer / bare)" + (
            f"; per process CPU-second {result['ratio_cpu_time']:.3f}" if "ratio_cpu_time" in result else ""))
    if "grid_hours" in result:
        lines.append(
            f"  grid      : {result['grid_epochs']} ResNet-20 epochs ~ "
            f"{result['grid_hours']:.1f} h at the trainer's speed"
        )
    if "stacked_images_per_s" in result:
        lines += [
            f"  {result['stacked_engine']} K={result['stacked_k']}: "
            f"{result['stacked_images_per_s']:9.0f} images/s aggregate  "
            f"grid ~ {result['stacked_grid_hours']:.1f} h"
        ]
    return "\n".join(lines)


def resolve(cfg: BenchConfig) -> tuple[torch.device, str, int]:
    device = setup.resolve_device(cfg.device)
    precision = setup.resolve_precision(cfg.precision, device)
    if cfg.compile not in ("auto", *COMPILE_MODES):
        raise UsageError(f"--compile={cfg.compile}: use auto, {', '.join(COMPILE_MODES)}")
    for name in ("repeats", "width"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name} must be a positive integer")
    if cfg.stacked < 0:
        raise UsageError("--stacked must be 0 (skip) or the number of runs to stack")
    if cfg.engine not in ENGINES:
        raise UsageError(f"--engine={cfg.engine}: choose {' or '.join(ENGINES)}")
    spe = cfg.steps_per_epoch or (391 if device.type == "cuda" else 6)
    if spe < 1:
        raise UsageError("--steps_per_epoch must be a positive integer")
    return device, precision, spe


def main(argv: list[str]) -> int:
    cfg = arguments.bench(argv)
    threads.apply(cfg.threads)
    if cfg.gpu_suite:
        return run_suite(cfg)
    device, precision, spe = resolve(cfg)
    print(f"bench on {device_name(device)}: bare loop vs trainer, {cfg.repeats} repeats", file=sys.stderr)
    result = measure(
        device, precision, cfg.compile, cfg.width, spe, cfg.repeats, stacked=cfg.stacked, engine=cfg.engine
    )
    if cfg.digits:
        from .digits import measure_digits
        from .digits import table as digits_table

        print("bench: the digits training at 1 and 2 threads, and as two processes", file=sys.stderr)
        extra = measure_digits(cfg.digits_epochs)
        result |= extra
        print(json.dumps(result) if cfg.json else table(result) + "\n" + digits_table(extra))
        return 0
    print(json.dumps(result) if cfg.json else table(result))
    return 0
