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
Both use the device's settings (channels_last, fused SGD and bf16 autocast on CUDA; `--compile`).
Reported: medians over `--repeats` after a warm-up; images/s, their ratio, seconds per CIFAR-10 epoch
(50,000 images) and the paper's pretext-vs-rewind grid (6 conditions x 3 seeds x 9 trainings x 160
epochs = 25,920 ResNet-20 epochs) projected in hours; with `--stacked=K` also K runs at once
(`stacked.train_stacked`) in aggregate images/s.

`--gpu-suite` is the prepared script for a short GPU lease (see `gpu_suite.py`).
"""

from __future__ import annotations

import copy
import json
import os
import platform as host
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from ..engine import models

from ..jobs import setup
from ..jobs.config import DATASET_DEFAULTS, option, parse_overrides, platform
from ..engine.data import IMAGENET_MEAN, IMAGENET_STD, ImageData
from ..engine.errors import UsageError
from ..engine.graphed import GraphedStep
from ..engine.schedule import ENGINES, Training, train_interleaved
from ..engine.stacked import train_stacked
from ..engine.trainer import (COMPILE_MODES, Schedule, TrainPlan, autocast, compile_mode, compiled, cpu_process_settings,
                      make_optimizer, train, whole_step_graph)

CIFAR_TRAIN = 50_000
GRID_EPOCHS = 6 * 3 * 9 * 160  # conditions x seeds x trainings (dense + 8 levels) x epochs
BATCH = 128


@dataclass
class BenchConfig:
    """Time the trainer against a bare PyTorch loop (`earlyphase bench`)."""

    device: str = platform("auto", "auto, cpu, cuda or cuda:N")
    precision: str = option("auto", "auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16")
    compile: str = option("auto", "CUDA only: auto (= cudagraph), none, cudagraph, cudagraph-inductor, default, reduce-overhead, max-autotune")
    repeats: int = option(3, "timed repeats (medians), after a short warm-up")
    steps_per_epoch: int | None = option(None, "iterations per synthetic epoch (default: 6 on CPU, 391 on CUDA)")
    width: int = option(16, "ResNet-20 width (16 is the paper's)")
    stacked: int = option(0, "also time K runs trained at once (0: skip), by --engine")
    engine: str = option("streams", "how the K runs train at once: streams (train_interleaved) or vmap (train_stacked)")
    json: bool = option(False, "print one JSON object")
    gpu_suite: bool = option(False, "run the prepared GPU suite (correctness vs CPU, then timed variants)")
    budget_s: float = option(330.0, "GPU suite: no variant starts after this many seconds")


def synthetic_cifar(n_train: int, device: torch.device, seed: int = 0) -> ImageData:
    """Random 32x32 uint8 images with CIFAR-10's augmentation settings; test split n_train / 5."""
    gen = torch.Generator().manual_seed(seed)
    n_test = max(n_train // 5, 1)
    images = lambda n: torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)  # noqa: E731
    labels = lambda n: torch.randint(0, 10, (n,), generator=gen)  # noqa: E731
    data = ImageData("synthetic", images(n_train), labels(n_train), images(n_test), labels(n_test), 10,
                     IMAGENET_MEAN, IMAGENET_STD, crop_padding=4, flip=True)
    return data.to(device)


def half_mask(model: torch.nn.Module, seed: int = 0) -> dict:
    """A random 50% mask over the conv/linear weights (what an IMP level applies every step)."""
    gen = torch.Generator().manual_seed(seed)
    return {n: (torch.rand(p.shape, generator=gen) < 0.5).to(p.device) for n, p in model.named_parameters() if p.dim() > 1}


def bench_plan(steps_per_epoch: int, epochs: int, precision: str, compile: str, seed: int = 0) -> TrainPlan:
    end = steps_per_epoch * epochs
    cifar = DATASET_DEFAULTS["cifar10"]
    return TrainPlan(seed=seed, batch_size=BATCH, schedule=Schedule(cifar["lr"], (end // 2, end * 3 // 4), cifar["gamma"]),
                     start=0, end=end, momentum=cifar["momentum"], weight_decay=cifar["weight_decay"],
                     precision=precision, eval_every=cifar["eval_every"], checkpoint_every=1, compile=compile)


def resnet20(width: int, device: torch.device, seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.create("cifar_resnet20", width=width).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall-clock and process CPU seconds of a block (CPU seconds are the steadier figure on a loaded CPU)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class BareLoop:
    """The floor: forward, loss, backward, SGD step on resident random batches; nothing else.

    Like the trainer's repeats, each repeat starts from a fresh copy of the model and a new optimiser
    (outside the clock): where tensors land in memory moved the CPU figure by ~10% (a model allocated
    once, early, trained faster than the per-repeat copies the trainer must make), which is the
    allocator's doing, not the trainer's. torch.compile modes keep one model (no recompiling per repeat)."""

    def __init__(self, width: int, device: torch.device, plan: TrainPlan, steps_per_epoch: int,
                 channels_last: bool | None = None):
        self.device, self.plan, self.spe = device, plan, steps_per_epoch
        self.channels_last = device.type == "cuda" if channels_last is None else channels_last
        self.format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.initial = resnet20(width, device)
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(steps_per_epoch * BATCH, 3, 32, 32, generator=gen).to(device, memory_format=self.format)
        self.y = torch.randint(0, 10, (steps_per_epoch * BATCH,), generator=gen).to(device)
        self.mode = compile_mode(plan, device)
        self.fresh()

    def fresh(self) -> None:
        self.model = copy.deepcopy(self.initial).to(memory_format=self.format).train()
        self.optimizer = make_optimizer(self.model, self.plan)
        self.forward = compiled(self.model, self.mode)
        self.graphed = None  # compile=cudagraph: the whole step as one CUDA graph (graphed.py), as the trainer does

    def run(self, warm: bool = False) -> Clock:
        if self.mode in ("none", "cudagraph"):  # no recompiling per repeat
            self.fresh()
        with Clock(self.device) as clock:
            self.steps(min(2, self.plan.end) if warm else self.plan.end)
        return clock

    def body(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.plan.precision):
            out = self.forward(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        self.optimizer.step()
        return loss

    def steps(self, steps: int) -> None:
        lr = self.plan.schedule.lr
        for i in range(steps):
            j = (i % self.spe) * BATCH
            x, y = self.x[j:j + BATCH], self.y[j:j + BATCH]
            if whole_step_graph(self.mode):
                if self.graphed is None:
                    self.graphed = GraphedStep(self.body, self.optimizer, x, y, lr, other_state=list(self.model.buffers()))
                self.graphed(x, y, lr)
                continue
            if self.mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            self.body(x, y)

    def gpu_ms_per_step(self, steps: int = 20) -> dict:
        """Kernel time per step (torch.profiler) against wall time per step: launch-bound or compute-bound?"""
        from torch.profiler import ProfilerActivity, profile

        self.steps(3)
        with Clock(self.device) as clock, profile(activities=[ProfilerActivity.CUDA]) as prof:
            self.steps(steps)
        events = prof.key_averages()
        kernel_us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in events)
        return {"gpu_ms_per_step": kernel_us / 1000 / steps, "wall_ms_per_step": 1000 * clock.wall / steps,
                "mode": self.mode, "precision": self.plan.precision}


class TrainerRun:
    """One timed repeat = one whole train() call in a fresh run directory, from the same start state."""

    def __init__(self, width: int, device: torch.device, plan: TrainPlan, data: ImageData, stacked: int = 0,
                 engine: str = "streams"):
        self.device, self.plan, self.data, self.k, self.engine = device, plan, data, stacked, engine
        self.initial = resnet20(width, device)
        self.mask = half_mask(self.initial)

    def run(self, warm: bool = False) -> Clock:
        plan = replace(self.plan, end=min(2, self.plan.end)) if warm else self.plan
        with tempfile.TemporaryDirectory(prefix="earlyphase-bench-") as tmp:
            if self.k:
                runs = [Training(copy.deepcopy(self.initial), self.data, replace(plan, seed=s), Path(tmp) / f"r{s}",
                                 mask=self.mask) for s in range(self.k)]
                with Clock(self.device) as clock:
                    if self.engine == "streams":
                        train_interleaved(runs)
                    else:
                        train_stacked([r.stacked() for r in runs], self.data)
            else:
                model = copy.deepcopy(self.initial)
                with Clock(self.device) as clock:
                    train(model, self.data, plan, Path(tmp) / "run", mask=self.mask)
            return clock


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = host.processor() or host.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {cpu}, {torch.get_num_threads()} threads"


def per_s_figures(images_per_s: float) -> dict:
    return {"s_per_cifar_epoch": CIFAR_TRAIN / images_per_s,
            "grid_hours": GRID_EPOCHS * CIFAR_TRAIN / images_per_s / 3600}


def measure(device: torch.device, precision: str, compile: str, width: int, steps_per_epoch: int, repeats: int,
            stacked: int = 0, channels_last: bool | None = None, trainer: bool = True, bare: bool = True,
            log=None, epochs: int | None = None, engine: str = "streams") -> dict:
    """Alternate bare / trainer / stacked repeats after a short warm-up; medians in images per second."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    if device.type == "cpu":
        cpu_process_settings()  # process-wide, as any CPU training sets them: both loops run under them
    epochs = epochs or DATASET_DEFAULTS["cifar10"]["eval_every"]  # default: one evaluation per repeat, as in a real run
    plan = bench_plan(steps_per_epoch, epochs, precision, compile)
    data = synthetic_cifar(steps_per_epoch * BATCH, device)
    runners, images = {}, {}
    if bare:
        runners["bare"], images["bare"] = BareLoop(width, device, plan, steps_per_epoch, channels_last), plan.end * BATCH
    if trainer:
        runners["trainer"], images["trainer"] = TrainerRun(width, device, plan, data), plan.end * BATCH
    if stacked:
        runners["stacked"] = TrainerRun(width, device, plan, data, stacked=stacked, engine=engine)
        images["stacked"] = stacked * plan.end * BATCH
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    for runner in runners.values():
        runner.run(warm=True)  # a couple of steps: allocator, kernels, compilation
    warmup_s = time.perf_counter() - start
    times = {name: [] for name in runners}
    for r in range(repeats):
        for name, runner in runners.items():
            times[name].append(runner.run())
        log(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {images[n] / t[-1].wall:.0f} img/s" for n, t in times.items()))
    result = {"device": device_name(device), "precision": precision, "compile": compile_mode(plan, device),
              "channels_last": device.type == "cuda" if channels_last is None else channels_last,
              "width": width, "batch_size": BATCH, "steps_per_repeat": plan.end, "steps_per_epoch": steps_per_epoch,
              "eval_every": epochs, "repeats": repeats, "warmup_s": round(warmup_s, 2),
              "load_average_before": load_before, "load_average_after": os.getloadavg()[0], "torch": torch.__version__}
    ips = {n: images[n] / statistics.median(c.wall for c in t) for n, t in times.items()}
    if bare:
        result.update(bare_images_per_s=ips["bare"], bare_s_per_cifar_epoch=CIFAR_TRAIN / ips["bare"])
    if trainer:
        result.update(trainer_images_per_s=ips["trainer"], trainer_s_per_cifar_epoch=CIFAR_TRAIN / ips["trainer"],
                      grid_epochs=GRID_EPOCHS, grid_hours=per_s_figures(ips["trainer"])["grid_hours"])
    if bare and trainer:
        result["ratio"] = ips["trainer"] / ips["bare"]
        if device.type == "cpu":  # per CPU-second of this process: less sensitive to other processes' load
            cpu = {n: statistics.median(c.cpu for c in times[n]) for n in ("bare", "trainer")}
            result["ratio_cpu_time"] = cpu["bare"] / cpu["trainer"]
    if stacked:
        result.update(stacked_k=stacked, stacked_engine=engine, stacked_images_per_s=ips["stacked"],
                      stacked_s_per_cifar_epoch_per_run=stacked * CIFAR_TRAIN / ips["stacked"],
                      stacked_grid_hours=per_s_figures(ips["stacked"])["grid_hours"])
    result["wall_s"] = {n: [round(c.wall, 4) for c in t] for n, t in times.items()}
    return result


def table(result: dict) -> str:
    lines = [f"device: {result['device']}  precision {result['precision']}  compile {result['compile']}  "
             f"channels_last {result['channels_last']}  (median of {result['repeats']} x {result['steps_per_repeat']} "
             f"steps of batch {result['batch_size']}; load average {result['load_average_before']:.1f} -> "
             f"{result['load_average_after']:.1f})"]
    if "bare_images_per_s" in result:
        lines.append(f"  bare loop : {result['bare_images_per_s']:9.0f} images/s  {result['bare_s_per_cifar_epoch']:8.2f} s per CIFAR-10 epoch")
    if "trainer_images_per_s" in result:
        lines.append(f"  trainer   : {result['trainer_images_per_s']:9.0f} images/s  {result['trainer_s_per_cifar_epoch']:8.2f} s per CIFAR-10 epoch")
    if "ratio" in result:
        lines.append(f"  ratio     : {result['ratio']:.3f} (trainer / bare)" + (
            f"; per process CPU-second {result['ratio_cpu_time']:.3f}" if "ratio_cpu_time" in result else ""))
    if "grid_hours" in result:
        lines.append(f"  grid      : {result['grid_epochs']} ResNet-20 epochs ~ {result['grid_hours']:.1f} h at the trainer's speed")
    if "stacked_images_per_s" in result:
        lines += [f"  {result['stacked_engine']} K={result['stacked_k']}: {result['stacked_images_per_s']:9.0f} images/s aggregate  "
                  f"grid ~ {result['stacked_grid_hours']:.1f} h"]
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
    cfg = parse_overrides(BenchConfig, argv)
    if cfg.gpu_suite:
        from .gpu_suite import run_suite

        return run_suite(cfg)
    device, precision, spe = resolve(cfg)
    print(f"bench on {device_name(device)}: bare loop vs trainer, {cfg.repeats} repeats", file=sys.stderr)
    result = measure(device, precision, cfg.compile, cfg.width, spe, cfg.repeats, stacked=cfg.stacked, engine=cfg.engine)
    print(json.dumps(result) if cfg.json else table(result))
    return 0
