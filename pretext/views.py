"""Two augmented views of every image, for the self-supervised tasks (simclr, byol, moco, dino, vicreg, barlowtwins).

Views are made on the device with kornia, per sample, from the images in pixel space: a random resized crop back
to the input size (area share `min_scale`-1: 0.2 is the usual small-image setting; 0.08 leaves too little of a
32x32 or 8x8 image), a horizontal flip where the dataset is flip-invariant (not for digits), colour jitter
(0.4, 0.4, 0.4, 0.1 with p=0.8) and grayscale (p=0.2), then normalised again. The dataset's standard augmentation
is off for these tasks: the views replace it. No multi-crop: small crops of an 8x8 or 32x32 image (DINO's 96-pixel
local crops of a 224-pixel image) would leave a few pixels, so every task sees two global views.

Accuracy of these tasks (`retrieval_correct`): the share of views whose nearest other view (cosine) in the batch
is their partner, i.e. top-1 positive retrieval.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch.nn import functional as F

from .base import PretextTask, TaskInfo, refuse


def view_augmentation(info: TaskInfo, min_scale: float) -> K.AugmentationSequential:
    ops: list[K.AugmentationBase2D] = [K.RandomResizedCrop(tuple(info.image_size), scale=(min_scale, 1.0))]
    if info.flip:
        ops.append(K.RandomHorizontalFlip())
    ops += [K.ColorJiggle(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
    return K.AugmentationSequential(*ops)


class Views:
    """`views(x)`: the first view of every image of the normalised batch x, then the second ([2N, C, H, W],
    normalised as x is); the draws come from the global torch RNG, which the trainer seeds every step."""

    def __init__(self, info: TaskInfo, min_scale: float):
        self.info, self.augment = info, view_augmentation(info, min_scale)
        self.stats = info.normalisation("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.stats[0].device != x.device:
            self.stats = self.info.normalisation(x.device)
        mean, std = self.stats
        pixels = (x * std + mean).clamp(0, 1)
        return (torch.cat([self.augment(pixels), self.augment(pixels)]) - mean) / std


def partners(n: int, device) -> torch.Tensor:
    """For 2n views (first views, then second views): the index of each view's partner."""
    return torch.cat([torch.arange(n, 2 * n, device=device), torch.arange(n, device=device)])


def retrieval_correct(embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many views' nearest other view (cosine) is their partner (`targets`: each view's partner index)."""
    z = F.normalize(embeddings.float(), dim=1)
    similarity = (z @ z.T).fill_diagonal_(float("-inf"))
    return (similarity.argmax(1) == targets).sum()


def check_min_scale(task: str, min_scale: float) -> None:
    refuse(task, [(not 0 < min_scale <= 1, f"min_scale={min_scale}: must be in (0, 1], e.g. 0.2")])


class TwoViewTask(PretextTask):
    """A task trained on two views of each image: `batch` makes them (targets: each view's partner), `correct`
    is retrieval on the projections. Subclasses declare `min_scale` among their options and set `self.views` in
    setup() with `make_views()`."""

    uses_labels = False
    standard_augmentation = False
    min_scale: float  # an option of each subclass

    def make_views(self) -> None:
        check_min_scale(self.name, self.min_scale)
        self.views = Views(self.info, self.min_scale)

    def batch(self, x, y, idx):
        return self.views(x), partners(len(x), x.device)

    def embeddings(self, outputs) -> torch.Tensor:
        """The projections that retrieval compares (the model's outputs by default)."""
        return outputs

    def correct(self, outputs, targets):
        return retrieval_correct(self.embeddings(outputs), targets)
