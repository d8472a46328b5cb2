"""The one training engine: every dense run, IMP level, control and pretext pretraining goes through it.

`train()` takes a model (already at its start state), the data, a `TrainPlan` and a pretext task (the
loss and the per-batch transform; `Supervised` by default) and trains iterations [start, end) in
`run_dir`. It is resumable: a checkpoint (model, optimiser, step, loss accumulator, RNG states) is
written atomically every `checkpoint_every` epochs; rerunning the same call resumes from it and gives
bit-identical results on CPU, because every batch is a pure function of (seed, step). A run whose
`summary.json` exists is finished and is not redone. While it trains, a run holds its directory's lock
(locks.py): another process that reaches the same run waits, then finds it finished and skips it.

A loss or weight that becomes non-finite (inf, nan) stops the run with a one-line TrainingDiverged
naming the step; nothing non-finite is saved and the run stays unfinished (its last checkpoint kept).
The losses are checked once per epoch on the device (`DivergenceWatch`), so CUDA never syncs per step.

Masks: a dict {parameter name: 0/1 tensor}; the masked weights are multiplied by it after every
optimiser step (and once at the start), so momentum and weight decay cannot revive a pruned weight.
The learning rate is a pure function of the step (milestones, gamma, linear warmup), so starting at
step k "continues the schedule from k".

Layout: on every device the model trains in channels_last (saved weights are plain contiguous tensors, so
files and resumption do not depend on it). oneDNN's CPU convolutions then skip their layout reorders: measured
on an Intel Xeon (2026-12-06), a width-12 digits step at 1 thread 20.0 -> 17.4 ms, the bench's CIFAR-size bare
loop at 2 threads 515-548 -> 651-700 images/s. It changed CPU results in the last digits (another summation order);
runs stay bit-identical for one code version, thread count and machine.

CUDA fast path: SGD is the fused kernel, masks are one foreach multiply, nothing syncs the host per step (the loss
accumulates on the device; normalisation constants are made once), and `plan.compile` picks how the step runs:
`cudagraph` (the CUDA default: the whole step, optimiser and mask included, replayed as one CUDA graph, graphed.py)
or a torch.compile mode for the forward/backward (`reduce-overhead` = CUDA graphs of the model only). Evaluation
always runs the eager model. `earlyphase bench` measures these choices; `CUDA_COMPILE_AUTO` holds the one it picked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from earlyphase.pretext.base import PretextTask, has_own_forward, has_own_step
from earlyphase.pretext.supervised import Supervised

from . import locks
from .augment import derive_seed, fork_rng, seed_task_step
from .batches import EpochBatches
from .data import ImageData
from .divergence import DivergenceWatch
from .evaluation import autocast, evaluate
from .graphed import GraphedStep
from .plan import Mask, TrainPlan, TrainResult
from .run_dir import RunFiles, finished_result

# cudagraph: the whole step as one CUDA graph (graphed.py); cudagraph-inductor: the same, the model's
# forward/backward compiled by inductor (fused kernels) inside it; the rest: torch.compile modes.
COMPILE_MODES = ("none", "cudagraph", "cudagraph-inductor", "default", "reduce-overhead", "max-autotune")
# What compile="auto" means on CUDA, from `earlyphase bench --gpu-suite` on an H200 (bf16): the whole
# step as one CUDA graph (graphed.py) trained at 1.11 s per CIFAR-10 epoch (bare loop 0.96 s; the
# GPU's kernel time alone is 2.3 ms per step = 0.91 s per epoch) against 6.2 s eager and ~1.75 s for
# torch.compile's reduce-overhead (which graphs only the model and costs ~30 s of compilation); it
# matches the eager step (bf16: exactly, fp32: 7e-6 after 3 steps). Capture costs three warm-up
# steps, so every CUDA run uses it.
CUDA_COMPILE_AUTO = "cudagraph"


def make_optimizer(model: torch.nn.Module, plan: TrainPlan, task_modules: torch.nn.Module | None = None
                   ) -> torch.optim.SGD:
    """foreach SGD on CPU; on CUDA the fused kernel (same maths, one launch per step). A task's own modules'
    trainable parameters follow the model's (so the model's keep their positions in the optimiser's state)."""
    fast = {"fused": True} if next(model.parameters()).is_cuda else {"foreach": True}
    return torch.optim.SGD([*model.parameters(), *trained_parameters(task_modules)], lr=plan.schedule.lr,
                           momentum=plan.momentum, weight_decay=plan.weight_decay, nesterov=False, **fast)


def trained_parameters(task_modules: torch.nn.Module | None) -> list[torch.nn.Parameter]:
    """The parameters of a task's own modules that the run's optimiser trains (those that require gradients)."""
    return [] if task_modules is None else [p for p in task_modules.parameters() if p.requires_grad]


def bind_task(task: PretextTask, model: torch.nn.Module, seed: int) -> torch.nn.Module | None:
    """The task's own modules for this training (PretextTask.build), their draws seeded from the run's seed."""
    with fork_rng(model_device(model)):
        torch.manual_seed(derive_seed(seed, "task_modules"))
        return task.bind(model)


def compile_mode(plan: TrainPlan, device: torch.device) -> str:
    """The torch.compile mode for the training step: always none on CPU (results must not change)."""
    if plan.compile not in ("auto", *COMPILE_MODES):
        raise ValueError(f"compile={plan.compile!r}: use auto, {', '.join(COMPILE_MODES)}")
    if device.type != "cuda":
        return "none"
    if plan.compile == "auto":
        return CUDA_COMPILE_AUTO
    return plan.compile


def whole_step_graph(mode: str) -> bool:
    return mode.startswith("cudagraph")


def compiled(fn, mode: str):
    """fn, or fn through torch.compile for the modes that use inductor."""
    if mode in ("none", "cudagraph"):
        return fn
    return torch.compile(fn, mode="default" if mode == "cudagraph-inductor" else mode, dynamic=False)


def masked_pairs(model: torch.nn.Module, mask: Mask | None):
    """(parameters, masks) lists for foreach multiplication; masks cast to each parameter's dtype/device."""
    if not mask:
        return [], []
    params = dict(model.named_parameters())
    missing = set(mask) - set(params)
    if missing:
        raise ValueError(f"mask names parameters the model lacks: {sorted(missing)[:3]}")
    names = sorted(mask)
    return [params[n] for n in names], [mask[n].to(params[n].device, params[n].dtype) for n in names]


@torch.no_grad()
def apply_mask(params, masks) -> None:
    if params:
        torch._foreach_mul_(params, masks)


def cpu_process_settings() -> None:
    """Process-wide settings for training on the CPU; they change speed, never a number computed.

    - Denormal floats (tiny activations/gradients) run ~100x slower on x86 CPUs and made some digits
      trainings crawl: flushed to zero (standard, deterministic).
    - glibc hands every freed allocation above its mmap threshold back to the kernel, and PyTorch's CPU
      allocator does not cache: each ResNet-20 step (batch 128) then page-faulted ~130 MB of fresh zeroed
      pages (~33k faults) for its activations, ~8% of the step. Raising the threshold to its maximum
      (32 MiB) and the trim threshold to 1 GiB keeps that memory in the heap for the next step: page
      faults per step ~0, peak memory unchanged; `earlyphase bench` (fp32, 1 thread): bare loop 240 ->
      262 images/s, trainer 219 -> 256; the quick study 1:57 -> 1:42. Skipped without glibc's mallopt."""
    torch.set_flush_denormal(True)
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


def train(model: torch.nn.Module, data: ImageData, plan: TrainPlan, run_dir: Path, *,
          task: PretextTask | None = None, mask: Mask | None = None, optimizer_state: dict | None = None,
          sinks: Sequence[Callable[[dict], None]] = (),
          step_hooks: Sequence[Callable[[int, torch.nn.Module, torch.Tensor], None]] = ()) -> TrainResult:
    """Train `model` on iterations [plan.start, plan.end) in `run_dir`; resume or skip as needed.

    sinks: called with every metrics record (W&B, ...). step_hooks: called as hook(step, model, loss)
    after every optimiser step (step counts iterations done; loss is the device tensor, not synced).
    Waits while another process trains `run_dir` (hold no other run's lock when calling it: locks.py).
    """
    steps = train_steps(model, data, plan, run_dir, task=task, mask=mask, optimizer_state=optimizer_state,
                        sinks=sinks, step_hooks=step_hooks)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def train_steps(model: torch.nn.Module, data: ImageData, plan: TrainPlan, run_dir: Path, *,
                task: PretextTask | None = None, mask: Mask | None = None, optimizer_state: dict | None = None,
                sinks: Sequence[Callable[[dict], None]] = (),
                step_hooks: Sequence[Callable[[int, torch.nn.Module, torch.Tensor], None]] = (),
                lock: locks.RunLock | None = None):
    """train() as a generator that yields after every step and returns the TrainResult, so that several
    trainings can be advanced in turn (schedule.train_interleaved); same arguments as train().

    lock: the run directory's lock if the caller holds it already (and releases it); by default the
    generator takes it at its first step, waiting while another process holds it."""
    run_dir = Path(run_dir)
    done = finished_result(run_dir)  # a finished run is read, never locked (it may be read-only)
    if done is not None:
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    own = locks.RunLock(run_dir) if lock is None else None
    try:
        if own is not None:
            own.acquire()
        done = finished_result(run_dir, by_other_process=own is not None and own.waited)
        if done is not None:
            return done
        return (yield from _locked_steps(model, data, plan, run_dir, task=task, mask=mask,
                                         optimizer_state=optimizer_state, sinks=sinks, step_hooks=step_hooks))
    finally:
        if own is not None:
            own.release()


def task_forward(task: PretextTask, model: torch.nn.Module, forward):
    """The training forward: `forward` (the model, compiled or not) for a task with the default one, else the
    task's own on the model."""
    if not has_own_forward(task):
        return forward
    return lambda inputs: task.forward(model, inputs)


def _step_body(forward, optimizer, task, params, masks, loss_sum: torch.Tensor, device, precision: str):
    """One optimiser step on a batch: forward, the task's loss, backward, SGD, the mask; the loss summed on the
    device (no host sync)."""

    def step_body(inputs, targets):
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            outputs = forward(inputs)
        loss = task.loss(outputs, targets)
        loss.backward()
        optimizer.step()
        apply_mask(params, masks)
        loss_sum.add_(loss.detach())
        return loss

    return step_body


def _end_of_epoch(files: RunFiles, model, optimizer, data, task, plan: TrainPlan, step: int, lr: float,
                  loss_sum: torch.Tensor, loss_count: int, bar) -> int:
    """The evaluation and checkpoint an epoch's end (or the last step) asks for; returns the loss count going on."""
    per_epoch = data.iterations_per_epoch(plan.batch_size)
    evaluating, checkpointing = plan.at_epoch_end(step, per_epoch)
    if evaluating:
        record = files.record(step, per_epoch, lr, (loss_sum / max(loss_count, 1)).item(),
                              evaluate(model, data, task, plan))
        loss_sum.zero_()  # in place: a captured step adds into this very tensor
        loss_count = 0
        bar.set_postfix(acc=record["test_accuracy"], loss=round(record["train_loss"], 4), refresh=False)
    if checkpointing:
        files.checkpoint(model, optimizer, step, loss_sum, loss_count, model_device(model), task.own_modules)
    return loss_count


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _locked_steps(model: torch.nn.Module, data: ImageData, plan: TrainPlan, run_dir: Path, *, task, mask,
                  optimizer_state, sinks, step_hooks):
    """train_steps' work, in a run directory whose lock this process holds and that is not finished."""
    task = task or Supervised()
    device = model_device(model)
    if device.type == "cpu":
        cpu_process_settings()
    model.to(memory_format=torch.channels_last)  # in place; undone before returning
    mode = compile_mode(plan, device)
    params, masks = masked_pairs(model, mask)
    apply_mask(params, masks)  # before the task copies the network (a momentum teacher starts masked)
    own = bind_task(task, model, plan.seed)
    forward = task_forward(task, model, compiled(model, mode))
    optimizer = make_optimizer(model, plan, own)
    files = RunFiles(run_dir, plan, sinks)
    step, loss_sum, loss_count = files.resume(model, optimizer, device, optimizer_state, task_modules=own)
    apply_mask(params, masks)
    files.save_start(model, optimizer, step)

    step_body = _step_body(forward, optimizer, task, params, masks, loss_sum, device, plan.precision)
    graphed = None  # the whole step as one CUDA graph (compile=cudagraph), built at the first full batch
    graphable = whole_step_graph(mode) and type(task).loss is PretextTask.loss and not has_own_step(task)
    batches = EpochBatches(data, plan, task)
    per_epoch = batches.per_epoch
    watch = DivergenceWatch(per_epoch, [run_dir], [*model.parameters(), *model.buffers()])
    bar = tqdm(total=plan.end - plan.start, initial=step - plan.start, desc=plan.progress or run_dir.name,
               file=sys.stderr, disable=None, leave=False, unit="it", mininterval=1.0)
    model.train()
    while step < plan.end:
        x, y, idx = batches.batch(step)
        if task.stochastic:
            seed_task_step(plan.seed, step)
        task.step, task.steps = step, plan.end
        inputs, targets = task.batch(x, y, idx)
        lr = plan.schedule.lr_at(step)
        if graphable and graphed is None and len(x) == plan.batch_size:
            graphed = GraphedStep(step_body, optimizer, inputs, targets, lr, other_state=[*model.buffers(), loss_sum])
        if graphed is not None and inputs.shape == graphed.x.shape:
            loss = graphed(inputs, targets, lr)
        else:
            for group in optimizer.param_groups:
                group["lr"] = lr
            if mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            loss = step_body(inputs, targets)
        loss_count += 1
        step += 1
        task.after_step(step, plan.end)
        watch.add(step, loss)
        bar.update(1)
        for hook in step_hooks:
            hook(step, model, loss)
        if step in plan.save_at:
            watch.check(step)
            files.save_weights(model, optimizer, step)
        yield  # a step is done: an interleaving caller may advance another training now
        if not plan.ends_epoch(step, per_epoch):
            continue
        watch.check(step)
        loss_count = _end_of_epoch(files, model, optimizer, data, task, plan, step, lr, loss_sum, loss_count, bar)
    bar.close()
    model.to(memory_format=torch.contiguous_format)
    return files.finish(model, data, task)
