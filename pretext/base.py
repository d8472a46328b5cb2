"""The pretext-task interface: everything the trainer needs to train a backbone with a task.

A task says what head it puts on the backbone's pooled features, how a batch (images on the device,
already normalised; true labels; example indices) becomes the model's inputs and the loss's targets,
and what its loss is. The trainer owns the rest (optimiser, schedule, masks, checkpoints), so a new
task is one small file. Randomness inside `batch` may use the global torch RNG: the trainer seeds it
from (run seed, step) before every step, which keeps runs reproducible and resumable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PretextTask:
    name: str = ""
    description: str = ""
    uses_labels: bool = True  # whether the task reads the true labels
    standard_augmentation: bool = True  # batches arrive with the dataset's standard augmentation
    stochastic: bool = True  # `batch` draws random numbers (the trainer then seeds every step)

    def head(self, num_features: int, num_classes: int) -> nn.Module | None:
        """The module that replaces the classifier during pretraining; None keeps the 10-way classifier."""
        return None

    def batch(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor):
        """(inputs, targets) for one batch. x: normalised float images, y: true labels, idx: example indices."""
        return x, y

    def loss(self, outputs: torch.Tensor, targets) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)

    def correct(self, outputs: torch.Tensor, targets) -> torch.Tensor | None:
        """Number of correct predictions (a 0-d tensor), or None where accuracy has no meaning."""
        if not isinstance(targets, torch.Tensor) or targets.dtype != torch.long or outputs.dim() != 2:
            return None
        return (outputs.argmax(1) == targets).sum()
