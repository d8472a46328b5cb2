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

CUDA fast path (the CPU path is untouched, so CPU results stay bit-identical): the model is trained in
channels_last (saved weights are plain contiguous tensors), SGD is the fused kernel, masks are one
foreach multiply, nothing syncs the host per step (the loss accumulates on the device; normalisation
constants are made once), and `plan.compile` picks how the step runs: `cudagraph` (the CUDA default:
the whole step, optimiser and mask included, replayed as one CUDA graph, graphed.py) or a torch.compile
mode for the forward/backward (`reduce-overhead` = CUDA graphs of the model only). Evaluation always
runs the eager model. `earlyphase bench` measures
these choices; `CUDA_COMPILE_AUTO` holds the one it picked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from earlyphase.pretext.base import PretextTask
from earlyphase.pretext.supervised import Supervised

from . import checkpoints

from . import locks
from .augment import augment_split, derive_seed, epoch_order, fork_rng, standard_augmentation
from .data import ImageData
from .errors import TrainingDiverged
from .graphed import GraphedStep

Mask = dict  # {parameter name: tensor of 0/1, same shape as the parameter}

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


@dataclass(frozen=True)
class Schedule:
    lr: float
    milestones: tuple = ()  # iterations at which lr *= gamma
    gamma: float = 0.1
    warmup: int = 0  # iterations of linear warmup from lr/warmup

    def lr_at(self, it: int) -> float:
        factor = self.gamma ** sum(it >= m for m in self.milestones)
        if self.warmup:
            factor *= min(1.0, (it + 1) / self.warmup)
        return self.lr * factor


@dataclass(frozen=True)
class TrainPlan:
    seed: int
    batch_size: int
    schedule: Schedule
    start: int  # first iteration to train (the rewind step for tickets)
    end: int  # train until this many iterations in total
    momentum: float = 0.9
    weight_decay: float = 1e-4
    augment: bool = True
    precision: str = "fp32"  # fp32 or bf16 (autocast; BatchNorm and the loss stay fp32)
    eval_every: int = 1  # epochs
    checkpoint_every: int = 1  # epochs
    save_at: tuple = ()  # iterations at which to save weights (rewind points), as weights_{it}it.pt
    progress: str = ""  # progress-bar label
    compile: str = "auto"  # CUDA only: auto, or a COMPILE_MODES entry for the training step; ignored on CPU


@dataclass
class TrainResult:
    summary: dict
    run_dir: Path
    resumed_from: int | None = None  # the step a checkpoint was resumed from, if any
    skipped: bool = False  # finished earlier; nothing was trained
    by_other_process: bool = False  # skipped after waiting for another process that trained it meanwhile
    extras: dict = field(default_factory=dict)


SUMMARY_KEYS = ("test_accuracy", "test_loss", "train_loss", "start_step", "end_step")


def finished_result(run_dir: Path, by_other_process: bool = False) -> TrainResult | None:
    """The result of a finished run (its summary.json exists), or None; a corrupt summary is a one-line error."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    summary = checkpoints.read_json(path, SUMMARY_KEYS, fix="move it away to train that run again")
    return TrainResult(summary, Path(run_dir), skipped=True, by_other_process=by_other_process)


class DivergenceWatch:
    """Stops a run whose training loss or weights became non-finite, without a host sync per step.

    Each step's loss (shape () or, for a stack of K runs, [K]) is copied into a buffer on the device; check(),
    called once per epoch where the loop reads the device anyway and before any weights are saved, looks at
    those losses and at every weight and BatchNorm statistic in one transfer and raises TrainingDiverged
    naming the first non-finite step. It only reads, so every number computed stays bit-identical.
    tensors: the parameters and float buffers (for a stack: the stacked ones, K first)."""

    def __init__(self, per_epoch: int, run_dirs: Sequence[Path], tensors: Sequence[torch.Tensor]):
        self.run_dirs, self.tensors = list(run_dirs), [t for t in tensors if t.is_floating_point()]
        self.losses = torch.zeros(per_epoch, len(self.run_dirs), device=self.tensors[0].device)
        self.first, self.count = 0, 0  # the step (1-based) of losses[0], and how many are buffered

    def add(self, step: int, loss: torch.Tensor) -> None:
        """The training loss of step `step` (counted from 1)."""
        if self.count == len(self.losses):  # never between the loop's per-epoch checks, but stay safe
            self.check(step - 1)
        if self.count == 0:
            self.first = step
        self.losses[self.count].copy_(loss.detach())
        self.count += 1

    @torch.no_grad()
    def check(self, step: int) -> None:
        """Raise TrainingDiverged if a buffered loss, or a weight after `step` steps, is not finite."""
        k = len(self.run_dirs)
        losses = self.losses[:self.count]
        loss_ok = torch.isfinite(losses).all(0)
        weights_ok = torch.stack([t.isfinite().reshape(k, -1).all(1) for t in self.tensors]).all(0)
        if not bool((loss_ok & weights_ok).all()):  # the one host sync
            self._raise(losses.cpu(), weights_ok.cpu(), step)
        self.count = 0

    def _raise(self, losses: torch.Tensor, weights_ok: torch.Tensor, step: int) -> None:
        bad = [(int(rows[0]), k) for k in range(len(self.run_dirs))
               if len(rows := (~torch.isfinite(losses[:, k])).nonzero().flatten())]
        if bad:
            row, k = min(bad)
            what = f"the training loss was {losses[row, k].item()} at step {self.first + row}"
        else:
            k = int((~weights_ok).nonzero()[0])
            what = f"the weights became non-finite at step {step} (the loss was still finite)"
        raise TrainingDiverged(f"training diverged in {self.run_dirs[k]}: {what}; the run is left unfinished "
                               f"(nothing non-finite was saved): lower the learning rate (--lr, --pretrain_lr)")


def make_optimizer(model: torch.nn.Module, plan: TrainPlan) -> torch.optim.SGD:
    """foreach SGD on CPU; on CUDA the fused kernel (same maths, one launch per step)."""
    fast = {"fused": True} if next(model.parameters()).is_cuda else {"foreach": True}
    return torch.optim.SGD(model.parameters(), lr=plan.schedule.lr, momentum=plan.momentum,
                           weight_decay=plan.weight_decay, nesterov=False, **fast)


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


def cpu_state(model: torch.nn.Module) -> dict:
    """The state dict on the CPU as plain contiguous tensors (the CUDA path trains in channels_last)."""
    return {k: v.contiguous() for k, v in checkpoints.state_dict_cpu(model).items()}


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


def autocast(device: torch.device, precision: str):
    if precision == "bf16":  # no weight-cast cache: each weight is cast once per step anyway, and CUDA graphs need it off
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()


@torch.no_grad()
def evaluate(model, data: ImageData, task: PretextTask, plan: TrainPlan, batch: int = 1000) -> dict:
    """Test loss and accuracy of `task` on the test split (accuracy is None where it has no meaning)."""
    device = data.test_x.device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct_sum, counted = torch.zeros((), device=device), 0
    normalise = data.normaliser()  # once: off the CPU it builds a table
    with fork_rng(device):
        torch.manual_seed(derive_seed(plan.seed, "eval"))  # fixed draws for stochastic tasks (e.g. rotations)
        for lo in range(0, len(data.test_y), batch):
            idx = torch.arange(lo, min(lo + batch, len(data.test_y)), device=device)
            inputs, targets = task.batch(normalise(data.test_x[idx]), data.test_y[idx], idx)
            with autocast(device, plan.precision):
                out = model(inputs)
            loss_sum += task.loss(out.float(), targets).float() * len(idx)
            correct = task.correct(out, targets)
            if correct is not None:
                correct_sum += correct
                counted += len(targets)
    model.train(was_training)
    n = len(data.test_y)
    return {"test_loss": loss_sum.item() / n, "test_accuracy": (correct_sum.item() / counted) if counted else None}


class _Epochs:
    """Caches one epoch's augmented split and order; batch(step) gives that step's examples."""

    def __init__(self, data: ImageData, plan: TrainPlan, task: PretextTask):
        self.data, self.plan = data, plan
        self.augment = plan.augment and task.standard_augmentation
        self.aug = standard_augmentation(data) if self.augment else None
        self.per_epoch = data.iterations_per_epoch(plan.batch_size)
        self.normalise = data.normaliser()
        self.epoch, self.images, self.order = None, None, None

    def batch(self, step: int):
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            d, seed = self.data, self.plan.seed
            self.order = epoch_order(len(d.train_y), seed, epoch, d.train_x.device)
            self.images = augment_split(d, seed, epoch, self.aug) if self.augment else d.train_x
            self.epoch = epoch
        idx = self.order[i * self.plan.batch_size:(i + 1) * self.plan.batch_size]
        return self.normalise(self.images[idx]), self.data.train_y[idx], idx


# ------------------------------------------------------------------ a run directory's files (train() and stacked.py)
def save_weights(run_dir: Path, model, optimizer, it: int) -> None:
    """weights_{it}it.pt: a rewind point (model and optimiser at step it)."""
    checkpoints.save_atomic({"model": cpu_state(model), "optimizer": optimizer.state_dict(), "step": it},
                            run_dir / f"weights_{it}it.pt")


def save_checkpoint(run_dir: Path, model, optimizer, step: int, loss_sum: torch.Tensor, loss_count: int,
                    device: torch.device) -> None:
    checkpoints.save_atomic({"model": cpu_state(model), "optimizer": optimizer.state_dict(), "step": step,
                             "loss_sum": loss_sum.cpu(), "loss_count": loss_count, "rng": _rng_state(device)},
                            run_dir / "checkpoint.pt")


def load_checkpoint(run_dir: Path, model, optimizer, device: torch.device) -> tuple[int, torch.Tensor, int, dict]:
    """Restore model and optimiser from checkpoint.pt; returns (step, loss_sum, loss_count, rng state)."""
    state = checkpoints.load(run_dir / "checkpoint.pt", map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], state["loss_sum"].to(device), state["loss_count"], state["rng"]


def finish_run(run_dir: Path, model, data: ImageData, task: PretextTask, plan: TrainPlan, records: list[dict]) -> dict:
    """final.pt and summary.json (the last evaluation's metrics), then the checkpoint goes; returns the summary."""
    final = records[-1] if records else {**evaluate(model, data, task, plan), "train_loss": None}
    checkpoints.save_atomic({"model": cpu_state(model), "step": plan.end}, run_dir / "final.pt")
    summary = {"test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
               "train_loss": final["train_loss"], "start_step": plan.start, "end_step": plan.end,
               "iterations_per_epoch": data.iterations_per_epoch(plan.batch_size)}
    checkpoints.write_json_atomic(run_dir / "summary.json", summary)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return summary


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


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _restore_metrics(path: Path, resumed_from: int | None) -> list[dict]:
    """The metrics log as of the checkpoint resumed from (records after it, or without a step, are dropped)."""
    return checkpoints.truncate_jsonl(
        path, lambda r: resumed_from is not None and isinstance(r.get("step"), int) and r["step"] <= resumed_from)


def append_record(path: Path, record: dict) -> None:
    checkpoints.append_text(path, json.dumps(record) + "\n")


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


def _locked_steps(model: torch.nn.Module, data: ImageData, plan: TrainPlan, run_dir: Path, *, task, mask,
                  optimizer_state, sinks, step_hooks):
    """train_steps' work, in a run directory whose lock this process holds and that is not finished."""
    ckpt_path, metrics_path = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    task = task or Supervised()
    device = next(model.parameters()).device
    if device.type == "cpu":
        cpu_process_settings()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)  # in place; undone before returning
    mode = compile_mode(plan, device)
    forward = compiled(model, mode)
    optimizer = make_optimizer(model, plan)
    params, masks = masked_pairs(model, mask)
    step, resumed_from = plan.start, None
    loss_sum, loss_count = torch.zeros((), device=device), 0
    if ckpt_path.exists():
        step, loss_sum, loss_count, rng = load_checkpoint(run_dir, model, optimizer, device)
        resumed_from = step
        _set_rng_state(rng, device)
    elif optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    apply_mask(params, masks)
    records = _restore_metrics(metrics_path, resumed_from)

    if step == plan.start and plan.start in plan.save_at:
        save_weights(run_dir, model, optimizer, step)

    def step_body(inputs, targets):
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, plan.precision):
            outputs = forward(inputs)
        loss = task.loss(outputs, targets)
        loss.backward()
        optimizer.step()
        apply_mask(params, masks)
        loss_sum.add_(loss.detach())
        return loss

    graphed = None  # the whole step as one CUDA graph (compile=cudagraph), built at the first full batch
    graphable = whole_step_graph(mode) and type(task).loss is PretextTask.loss
    epochs = _Epochs(data, plan, task)
    per_epoch = epochs.per_epoch
    watch = DivergenceWatch(per_epoch, [run_dir], [*model.parameters(), *model.buffers()])
    bar = tqdm(total=plan.end - plan.start, initial=step - plan.start, desc=plan.progress or run_dir.name,
               file=sys.stderr, disable=None, leave=False, unit="it", mininterval=1.0)
    model.train()
    while step < plan.end:
        x, y, idx = epochs.batch(step)
        if task.stochastic:
            torch.manual_seed(derive_seed(plan.seed, "batch", step))
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
        watch.add(step, loss)
        bar.update(1)
        for hook in step_hooks:
            hook(step, model, loss)
        if step in plan.save_at:
            watch.check(step)
            save_weights(run_dir, model, optimizer, step)
        yield  # a step is done: an interleaving caller may advance another training now
        if step % per_epoch and step != plan.end:
            continue
        watch.check(step)
        epoch = -(-step // per_epoch)
        if epoch % plan.eval_every == 0 or step == plan.end:
            record = {"step": step, "epoch": round(step / per_epoch, 4), "lr": lr,
                      "train_loss": (loss_sum / max(loss_count, 1)).item(), **evaluate(model, data, task, plan)}
            loss_sum.zero_()  # in place: a captured step adds into this very tensor
            loss_count = 0
            append_record(metrics_path, record)
            records.append(record)
            for sink in sinks:
                sink(record)
            bar.set_postfix(acc=record["test_accuracy"], loss=round(record["train_loss"], 4), refresh=False)
        if epoch % plan.checkpoint_every == 0 and step < plan.end:
            save_checkpoint(run_dir, model, optimizer, step, loss_sum, loss_count, device)
    bar.close()
    if device.type == "cuda":
        model.to(memory_format=torch.contiguous_format)

    return TrainResult(finish_run(run_dir, model, data, task, plan, records), run_dir, resumed_from=resumed_from)

