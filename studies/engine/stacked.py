"""K same-shaped trainings at once on one device, each equal to its own `trainer.train` run.

Independent runs of one shape (seeds, controls, IMP levels of different studies, pretext conditions)
leave a GPU mostly idle at batch 128. `train_stacked` trains them together with torch.func: the K
models' parameters and buffers are stacked (`stack_module_state`), one `vmap` of `functional_call`
runs all K forward passes (BatchNorm updates its stacked running statistics per model), the sum of the
K losses is backpropagated (each model's gradient is exactly its own loss's), and one SGD on the
stacked tensors performs K elementwise-identical updates. Each model keeps batch 128 and its own
seed's data order, augmentation and per-step task randomness (engine.batches, reused), so
each result equals its sequential counterpart (tested in float64 to 1e-10).

How to call it: wherever a caller would run K times
    train(model, data, plan, run_dir, task=task, mask=mask, optimizer_state=state, sinks=sinks)
build K `StackedRun(model, plan, run_dir, task=task, mask=mask, optimizer_state=state, sinks=sinks)`
and call `train_stacked(runs, data)`; it returns the K `TrainResult`s in order and writes, per run,
exactly the files train() writes (metrics.jsonl, weights_{it}it.pt at save_at, checkpoint.pt every
`checkpoint_every` epochs, final.pt, summary.json). The trained weights are also written back into each
`model`, as train() leaves them. Plans must agree in everything except seed, save_at and progress.
Runs already finished are skipped; interrupted runs resume from their checkpoints (the checkpoint
format is train()'s, so either function can resume the other's run); runs at different steps are
trained in groups. Not supported: step_hooks (use train() for runs that need them), and pretext tasks that step
their own way (modules, forward or after_step of their own: `has_own_step`), refused in one line. `plan.compile` is
honoured on CUDA (the vmapped forward is compiled), ignored on CPU.

Locks (locks.py): the runs whose locks are free are taken without waiting and trained as one stack; runs
another process holds are waited for afterwards, one at a time and holding no lock, and are then skipped
as finished (or, if that process died, trained here). A run whose loss or weights become non-finite stops
the stack with train()'s one-line TrainingDiverged (DivergenceWatch, checked once per epoch).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F
from tqdm import tqdm

from earlyphase.pretext.base import PretextTask, has_own_step
from earlyphase.pretext.supervised import Supervised

from . import locks
from .augment import seed_task_step
from .batches import EpochBatches
from .data import ImageData
from .divergence import DivergenceWatch
from .evaluation import autocast, evaluate
from .graphed import GraphedStep
from .plan import Mask, TrainPlan, TrainResult, all_done
from .run_dir import RunFiles, finished_result
from .trainer import (
    apply_mask,
    compile_mode,
    compiled,
    cpu_process_settings,
    make_optimizer,
    masked_pairs,
    whole_step_graph,
)


@dataclass
class StackedRun:
    """One member of a stack: the arguments a train() call would take."""

    model: torch.nn.Module
    plan: TrainPlan
    run_dir: Path
    task: PretextTask | None = None
    mask: Mask | None = None
    optimizer_state: dict | None = None
    sinks: Sequence[Callable[[dict], None]] = ()


def _check(runs: Sequence[StackedRun], data: ImageData) -> None:
    if not runs:
        raise ValueError("train_stacked needs at least one run")
    if len({id(r.model) for r in runs}) != len(runs):
        raise ValueError("each stacked run needs its own model object")
    if len({Path(r.run_dir).resolve() for r in runs}) != len(runs):
        raise ValueError("each stacked run needs its own run directory")
    own = [r.task.name or type(r.task).__name__ for r in runs if r.task is not None and has_own_step(r.task)]
    if own:
        raise ValueError(f"pretext task {own[0]} steps with modules or a forward of its own, which the vmap stack "
                         f"cannot hold: train it with --concurrent_engine=streams (or alone)")
    first = runs[0].plan.shared()
    for r in runs[1:]:
        if r.plan.shared() != first:
            raise ValueError("stacked runs must share their plan except seed, save_at and progress")
    shapes = [[(n, p.shape, p.dtype) for n, p in r.model.named_parameters()] for r in runs]
    buffers = [[(n, b.shape, b.dtype) for n, b in r.model.named_buffers()] for r in runs]
    if any(s != shapes[0] for s in shapes) or any(b != buffers[0] for b in buffers):
        raise ValueError("stacked runs must have models of the same shape (names, shapes and dtypes)")
    devices = {p.device for r in runs for p in r.model.parameters()} | {data.train_x.device}
    if len(devices) != 1:
        raise ValueError(f"stacked models and data must be on one device, found {sorted(map(str, devices))}")


class _Member:
    """One run of the stack: its model, its optimiser in train()'s format (for its files) and its files,
    prepared exactly as train() prepares a run (resume, mask, weights at the start)."""

    def __init__(self, run: StackedRun, device: torch.device):
        self.run, self.plan, self.model = run, run.plan, run.model
        self.task = run.task or Supervised()
        self.dir = Path(run.run_dir)
        self.optimizer = make_optimizer(self.model, self.plan)
        self.files = RunFiles(self.dir, self.plan, run.sinks)
        self.step, self.loss_sum, self.loss_count = self.files.resume(self.model, self.optimizer, device,
                                                                      run.optimizer_state, restore_rng=False)
        apply_mask(*masked_pairs(self.model, run.mask))
        self.files.save_start(self.model, self.optimizer, self.step)

    def save_weights(self, it: int) -> None:
        self.files.save_weights(self.model, self.optimizer, it)

    def checkpoint(self, step: int, device: torch.device) -> None:
        self.files.checkpoint(self.model, self.optimizer, step, self.loss_sum, self.loss_count, device)


class _StackedEpochs:
    """The K runs' batches for a step as one [K, B, ...] tensor, each from that run's own `EpochBatches`."""

    def __init__(self, data: ImageData, members: list[_Member]):
        self.data = data
        self.epochs = [EpochBatches(data, m.plan, m.task) for m in members]
        self.per_epoch, self.batch_size = self.epochs[0].per_epoch, members[0].plan.batch_size
        self.normalise = data.normaliser()
        self.rows = torch.arange(len(members), device=data.train_x.device).unsqueeze(1)
        self.epoch: int | None = None
        self.images = self.order = self.positions = torch.empty(0)

    def batch(self, step: int):
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            for e in self.epochs:
                e.batch(step)  # builds that run's order and augmented split for this epoch
            self.order = torch.stack([e.order for e in self.epochs])
            self.positions = torch.stack([e.positions for e in self.epochs])
            self.images = torch.stack([e.images for e in self.epochs])
            for e in self.epochs:  # drop the per-run copies; the stacked ones serve the epoch
                e.forget()
            self.epoch = epoch
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        idx = self.order[:, rows]
        return self.normalise(self.images[self.rows, self.positions[:, rows]]), self.data.train_y[idx], idx


def _default_loss(tasks: list[PretextTask]) -> bool:
    return all(type(t).loss is PretextTask.loss for t in tasks)


def _class_labels(targets) -> bool:
    """Whether the K targets are class labels (1-D long), which one vectorised cross-entropy can take."""
    return all(isinstance(t, torch.Tensor) and t.dtype == torch.long and t.dim() == 1 for t in targets)


def _losses(tasks: list[PretextTask], outputs: torch.Tensor, targets) -> torch.Tensor:
    """The K losses: one vectorised cross-entropy where every task uses the default loss, else per task.
    targets: the K tasks' targets, as a list or (class labels) already stacked as one [K, B] tensor."""
    if _default_loss(tasks) and _class_labels(targets):
        labels = targets if isinstance(targets, torch.Tensor) else torch.stack(targets)
        flat = F.cross_entropy(outputs.float().flatten(0, 1), labels.flatten(), reduction="none")
        return flat.view(len(tasks), -1).mean(1)
    return torch.stack([t.loss(outputs[k], targets[k]) for k, t in enumerate(tasks)])


def train_stacked(runs: Sequence[StackedRun], data: ImageData) -> list[TrainResult]:
    """Train every run on iterations [plan.start, plan.end), all at once; see the module docstring."""
    runs = list(runs)
    _check(runs, data)
    device = data.train_x.device
    if device.type == "cpu":
        cpu_process_settings()  # as train() does on the CPU, so both compute the same numbers
    results: list[TrainResult | None] = [finished_result(run.run_dir) for run in runs]
    held, busy = locks.take_free({k: run.run_dir for k, run in enumerate(runs) if results[k] is None})
    try:
        for k, result in _train_held({k: runs[k] for k in held}, data, device).items():
            results[k] = result
    finally:
        locks.release_all(held.values())
    for k in busy:  # another process holds these: wait for each, holding no lock
        with locks.RunLock(runs[k].run_dir) as lock:
            results[k] = (finished_result(runs[k].run_dir, by_other_process=lock.waited)
                          or _train_held({k: runs[k]}, data, device)[k])
    return all_done(results)


def _train_held(runs: dict, data: ImageData, device: torch.device) -> dict:
    """{k: run} whose locks this process holds -> {k: result}: finished ones read, the others stacked."""
    results, members = {}, {}
    for k, run in runs.items():
        results[k] = finished_result(run.run_dir)  # finished by another process just before the lock was taken
        if results[k] is None:
            members[k] = _Member(run, device)
    for step in sorted({m.step for m in members.values()}):  # runs resumed at different steps: one group each
        group = {k: m for k, m in members.items() if m.step == step}
        for k, result in zip(group, _train_group(list(group.values()), data, device)):
            results[k] = result
    return results


def _train_group(members: list[_Member], data: ImageData, device: torch.device) -> list[TrainResult]:
    return _Group(members, data, device).train()


class _Group:
    """K same-shaped trainings as one vmapped function: stacked parameters, buffers, momentum and masks, one SGD."""

    def __init__(self, members: list[_Member], data: ImageData, device: torch.device):
        self.members, self.data, self.device = members, data, device
        self.plan, self.tasks = members[0].plan, [m.task for m in members]
        models = [m.model for m in members]
        self.template = copy.deepcopy(models[0]).to("meta").train()  # the architecture; tensors come stacked
        if self.plan.precision == "bf16":
            _batchnorm_in_fp32(self.template)
        for model in models:
            model.train()
        self.params, self.buffers = stack_module_state(models)
        self.own_params = [dict(m.named_parameters()) for m in models]
        self.own_buffers = [dict(m.named_buffers()) for m in models]
        self.optimizer = torch.optim.SGD(list(self.params.values()), lr=self.plan.schedule.lr,
                                         momentum=self.plan.momentum, weight_decay=self.plan.weight_decay,
                                         nesterov=False,
                                         **({"fused": True} if device.type == "cuda" else {"foreach": True}))
        _stack_momentum(self.optimizer, self.params, members)
        mask_names = sorted({n for m in members for n in (m.run.mask or {})})
        self.mask_params = [self.params[n] for n in mask_names]
        self.stacked_masks = [torch.stack([(m.run.mask or {}).get(n, torch.ones(()))
                                           .to(self.params[n].device, self.params[n].dtype)
                                           .expand(self.params[n].shape[1:]) for m in members]) for n in mask_names]
        self.mode = compile_mode(self.plan, device)
        self.forward = compiled(vmap(self._one), self.mode)
        self.loss_sum = torch.stack([m.loss_sum for m in members])

    def _one(self, p, b, x):
        return functional_call(self.template, (p, b), (x,))

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked tensors into each run's own model and optimiser (for saving and evaluation)."""
        for k, member in enumerate(self.members):
            for n in self.params:
                self.own_params[k][n].copy_(self.params[n][k])
                buf = self.optimizer.state.get(self.params[n], {}).get("momentum_buffer")
                if buf is not None:
                    member.optimizer.state[self.own_params[k][n]]["momentum_buffer"] = buf[k].clone()
            for n, b in self.buffers.items():
                self.own_buffers[k][n].copy_(b[k])
            for group in member.optimizer.param_groups:
                group["lr"] = self.optimizer.param_groups[0]["lr"]

    def step_body(self, x, targets):
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.plan.precision):
            outputs = self.forward(self.params, self.buffers, x)
        losses = _losses(self.tasks, outputs, targets)
        losses.sum().backward()  # d(sum)/d(loss_k) = 1: each model gets exactly its own gradient
        self.optimizer.step()
        apply_mask(self.mask_params, self.stacked_masks)
        self.loss_sum.add_(losses.detach())
        return losses

    def task_batches(self, batches, step: int) -> tuple[torch.Tensor, list, int]:
        """(stacked inputs, targets) of each member's task on its own batch of this step, and the batch's size."""
        x, y, idx = batches.batch(step)
        inputs, targets = [], []
        for k, (member, task) in enumerate(zip(self.members, self.tasks)):
            if task.stochastic:
                seed_task_step(member.plan.seed, step)
            i, t = task.batch(x[k], y[k], idx[k])
            inputs.append(i)
            targets.append(t)
        return torch.stack(inputs), targets, x.shape[1]

    def end_of_epoch(self, step: int, per_epoch: int, lr: float, loss_count: int) -> int:
        """Evaluations and checkpoints at an epoch's end (or the last step); returns the loss count going on."""
        evaluating, checkpointing = self.plan.at_epoch_end(step, per_epoch)
        if evaluating or checkpointing:
            self.write_back()
        for k, member in enumerate(self.members):
            member.loss_sum, member.loss_count = self.loss_sum[k].clone(), loss_count
            if evaluating:
                member.files.record(step, per_epoch, lr, (self.loss_sum[k] / max(loss_count, 1)).item(),
                                    evaluate(member.model, self.data, member.task, member.plan))
                member.loss_sum, member.loss_count = torch.zeros((), device=self.device), 0
            if checkpointing:
                member.checkpoint(step, self.device)
        if evaluating:
            self.loss_sum.zero_()  # in place: a captured step adds into this very tensor
            return 0
        return loss_count

    def train(self) -> list[TrainResult]:
        plan, members, step = self.plan, self.members, self.members[0].step
        batches = _StackedEpochs(self.data, members)
        per_epoch = batches.per_epoch
        watch = DivergenceWatch(per_epoch, [m.dir for m in members], [*self.params.values(), *self.buffers.values()])
        loss_count = members[0].loss_count
        bar = tqdm(total=plan.end - plan.start, initial=step - plan.start, desc=f"stacked x{len(members)}",
                   file=sys.stderr, disable=None, leave=False, unit="it", mininterval=1.0)
        for p in self.params.values():
            p.grad = None
        graphed = None  # compile=cudagraph with the default loss: the whole stacked step as one CUDA graph
        graphable = whole_step_graph(self.mode) and _default_loss(self.tasks)
        while step < plan.end:
            stacked_inputs, targets, size = self.task_batches(batches, step)
            lr = plan.schedule.lr_at(step)
            if graphable and graphed is None and size == plan.batch_size and _class_labels(targets):
                graphed = GraphedStep(self.step_body, self.optimizer, stacked_inputs, torch.stack(targets), lr,
                                      other_state=[*self.buffers.values(), self.loss_sum])
            if graphed is not None and stacked_inputs.shape == graphed.x.shape:
                losses = graphed(stacked_inputs, torch.stack(targets), lr)
            else:
                self.optimizer.param_groups[0]["lr"] = lr
                if self.mode == "reduce-overhead":
                    torch.compiler.cudagraph_mark_step_begin()
                losses = self.step_body(stacked_inputs, targets)
            loss_count += 1
            step += 1
            watch.add(step, losses)
            bar.update(1)
            saving = [m for m in members if step in m.plan.save_at]
            if saving:
                watch.check(step)
                self.write_back()
                for m in saving:
                    m.save_weights(step)
            if not plan.ends_epoch(step, per_epoch):
                continue
            watch.check(step)
            loss_count = self.end_of_epoch(step, per_epoch, lr, loss_count)
        bar.close()
        self.write_back()
        return [m.files.finish(m.model, self.data, m.task) for m in members]


def _batchnorm_in_fp32(template: torch.nn.Module) -> None:
    """BatchNorm on float32 inputs under bf16 autocast: vmap's batch-norm rule (CUDA) refuses bf16 inputs
    with float32 running statistics, and the trainer's policy is BatchNorm in fp32 anyway."""
    for module in template.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(lambda _, args: (args[0].float(), *args[1:]))


def _stack_momentum(optimizer: torch.optim.SGD, params: dict, members: list[_Member]) -> None:
    """Carry each run's momentum (from its checkpoint or optimizer_state) into the stacked optimiser.

    A run without momentum yet gets zeros where others have some: SGD's first step sets buf = grad, and
    0 * momentum + grad is the same number."""
    for n, stacked in params.items():
        own = [dict(m.model.named_parameters())[n] for m in members]
        bufs = [m.optimizer.state.get(p, {}).get("momentum_buffer") for m, p in zip(members, own)]
        if all(b is None for b in bufs):
            continue
        optimizer.state[stacked]["momentum_buffer"] = torch.stack(
            [torch.zeros_like(p) if b is None else b.to(p.dtype) for b, p in zip(bufs, own)]).detach()
