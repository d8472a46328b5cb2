"""Stopping a run whose loss or weights become non-finite, without a host sync per step."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .errors import TrainingDiverged


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
