"""Momentum teachers for the self-supervised tasks that have one (byol, moco, dino).

The teacher is a copy of the network being trained (backbone and head), made by `build` once the network is
masked, with gradients off (lightly's `deactivate_requires_grad`). After every optimiser step its parameters
follow the trained network's by an exponential moving average (lightly's `update_momentum`), the momentum rising
from `momentum` to 1 along lightly's `cosine_schedule` over the run's steps: for a pretraining, its own length k
(in pretraining iterations), not the supervised run's T. The teacher's BatchNorm statistics are its own (it runs
in train mode on the same views). All of it is checkpointed with the run (PretextTask.build) and none of it
reaches the rewind point.
"""

from __future__ import annotations

import copy

from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from .base import Option, refuse
from .views import TwoViewTask

MOMENTUM = Option(0.99, "teacher momentum at the first step (cosine schedule to 1 over the pretraining)")


def check_momentum(task: str, momentum: float) -> None:
    refuse(task, [(not 0 <= momentum <= 1, f"momentum={momentum}: must be in [0, 1], e.g. 0.99")])


def momentum_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` that no optimiser trains."""
    teacher = copy.deepcopy(model)
    deactivate_requires_grad(teacher)
    return teacher


class MomentumTask(TwoViewTask):
    """A two-view task with a momentum teacher, `self.own_modules["teacher"]`; subclasses add their own modules
    in `extra_modules` and declare `momentum` (MOMENTUM) among their options."""

    momentum: float  # an option of each subclass

    def extra_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Modules beside the teacher (a predictor, a loss holding a queue or a centre)."""
        return {}

    def build(self, model):
        self.student = model  # the trained network, which after_step's average follows (not checkpointed here)
        return nn.ModuleDict({"teacher": momentum_copy(model), **self.extra_modules(model)})

    @property
    def teacher(self) -> nn.Module:
        modules = self.own_modules
        assert isinstance(modules, nn.ModuleDict), "build() makes the teacher"
        return modules["teacher"]

    def momentum_at(self, step: int, steps: int) -> float:
        """The momentum of the update after `step` iterations of `steps`: `momentum` at the first, 1 at the last."""
        return float(cosine_schedule(step - 1, steps, self.momentum, 1.0))

    def after_step(self, step, steps):
        update_momentum(self.student, self.teacher, self.momentum_at(step, steps))
