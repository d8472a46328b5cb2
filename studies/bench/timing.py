"""The measurements behind `earlyphase bench` and its GPU suite: a bare PyTorch loop and the real trainer,
timed alternately on the same synthetic CIFAR-shaped data (see bench.py for what they report)."""

from __future__ import annotations

import copy
import os
import platform as host
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn import functional as F

from ..engine import models
from ..engine.data import IMAGENET_MEAN, IMAGENET_STD, ImageData
from ..engine.evaluation import autocast
from ..engine.graphed import GraphedStep
from ..engine.plan import Schedule, TrainPlan
from ..engine.schedule import Training, train_interleaved
from ..engine.stacked import train_stacked
from ..engine.trainer import (
    compile_mode,
    compiled,
    cpu_process_settings,
    make_optimizer,
    train,
    whole_step_graph,
)
from ..jobs.config import DATASET_DEFAULTS

CIFAR_TRAIN = 50_000
GRID_EPOCHS = 6 * 3 * 9 * 160  # conditions x seeds x trainings (dense + 8 levels) x epochs
BATCH = 128


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
    return {
        n: (torch.rand(p.shape, generator=gen) < 0.5).to(p.device) for n, p in model.named_parameters() if p.dim() > 1
    }


def bench_plan(steps_per_epoch: int, epochs: int, precision: str, compile: str, seed: int = 0) -> TrainPlan:
    end = steps_per_epoch * epochs
    cifar = DATASET_DEFAULTS["cifar10"]
    return TrainPlan(seed=seed, batch_size=BATCH, start=0, end=end,
                     schedule=Schedule(cifar["lr"], (end // 2, end * 3 // 4), cifar["gamma"]),
                     momentum=cifar["momentum"], weight_decay=cifar["weight_decay"], precision=precision,
                     eval_every=cifar["eval_every"], checkpoint_every=1, compile=compile)


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
        self.channels_last = True if channels_last is None else channels_last  # as the trainer
        self.format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.initial = resnet20(width, device)
        gen = torch.Generator().manual_seed(1)
        # inputs as the trainer feeds them: channels_last where a CUDA graph captures them, plain on the CPU (oneDNN
        # was ~7% slower with channels_last inputs there, the model's own layout is what pays)
        inputs = self.format if device.type == "cuda" else torch.contiguous_format
        self.x = torch.randn(steps_per_epoch * BATCH, 3, 32, 32, generator=gen).to(device, memory_format=inputs)
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
                    self.graphed = GraphedStep(
                        self.body, self.optimizer, x, y, lr, other_state=list(self.model.buffers())
                    )
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
        runners["bare"], images["bare"] = (
            BareLoop(width, device, plan, steps_per_epoch, channels_last),
            plan.end * BATCH,
        )
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
        log(
            f"  repeat {r + 1}/{repeats}: "
            + ", ".join(f"{n} {images[n] / t[-1].wall:.0f} img/s" for n, t in times.items())
        )
    result = {"device": device_name(device), "precision": precision, "compile": compile_mode(plan, device),
              "channels_last": True if channels_last is None else channels_last,
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


