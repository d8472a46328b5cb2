"""What a training is, as data: the learning-rate schedule, the plan of one training, and its result."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

Mask = dict  # {parameter name: tensor of 0/1, same shape as the parameter}


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

    def ends_epoch(self, step: int, per_epoch: int) -> bool:
        """Whether `step` ends an epoch (or the training): where divergence is checked and at_epoch_end asked."""
        return step % per_epoch == 0 or step == self.end

    def at_epoch_end(self, step: int, per_epoch: int) -> tuple[bool, bool]:
        """(evaluate, checkpoint) after `step`: evaluation every eval_every epochs and at the last step; a checkpoint
        every checkpoint_every epochs, never at the last step (final.pt is written then). Both loops ask here."""
        if not self.ends_epoch(step, per_epoch):
            return False, False
        epoch = -(-step // per_epoch)
        return epoch % self.eval_every == 0 or step == self.end, epoch % self.checkpoint_every == 0 and step < self.end

    def shared(self) -> "TrainPlan":
        """The plan without what may differ between trainings run together (seed, save_at, progress label)."""
        return replace(self, seed=0, save_at=(), progress="")


def all_done(results: list) -> list["TrainResult"]:
    """The results of trainings that all finished (a None left among them is a bug, refused here)."""
    if any(r is None for r in results):
        raise RuntimeError("a training has no result")
    return results


@dataclass
class TrainResult:
    summary: dict
    run_dir: Path
    resumed_from: int | None = None  # the step a checkpoint was resumed from, if any
    skipped: bool = False  # finished earlier; nothing was trained
    by_other_process: bool = False  # skipped after waiting for another process that trained it meanwhile
    extras: dict = field(default_factory=dict)

