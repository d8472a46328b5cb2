"""Mixed precision and evaluation on the test split, shared by every training loop and analysis."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from earlyphase.pretext.base import PretextTask

from .augment import derive_seed, fork_rng
from .checkpoints import full_state, load_full_state
from .data import ImageData
from .plan import TrainPlan


def autocast(device: torch.device, precision: str):
    # no weight-cast cache: each weight is cast once per step anyway, and CUDA graphs need it off
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()


@torch.no_grad()
def evaluate(model, data: ImageData, task: PretextTask, plan: TrainPlan, batch: int = 1000) -> dict:
    """Test loss and accuracy of `task` on the test split (accuracy is None where it has no meaning). A task's
    own modules are in eval mode meanwhile and restored afterwards (a loss may update a centre as it runs)."""
    own = task.own_modules
    if own is None:
        return _evaluate(model, data, task, plan, batch)
    saved, was_training = full_state(own), own.training
    own.eval()
    try:
        return _evaluate(model, data, task, plan, batch)
    finally:
        load_full_state(own, saved)
        own.train(was_training)


def _evaluate(model, data: ImageData, task: PretextTask, plan: TrainPlan, batch: int) -> dict:
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
                out = task.forward(model, inputs)
            loss_sum += task.loss(out.float() if isinstance(out, torch.Tensor) else out, targets).float() * len(idx)
            correct = task.correct(out, targets)
            if correct is not None:
                correct_sum += correct
                counted += len(targets)
    model.train(was_training)
    n = len(data.test_y)
    return {"test_loss": loss_sum.item() / n, "test_accuracy": (correct_sum.item() / counted) if counted else None}
