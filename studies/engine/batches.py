"""A training's batches: each epoch's seeded order and augmented split, computed once per epoch.

With a task that trains on a subset (`PretextTask.examples`), an epoch keeps the full split's length
(the same iterations per epoch, so the same evaluations and checkpoints) and is filled with passes over
the subset: pass r of epoch e is a permutation seeded by (seed, e, r), freshly augmented, and the
epoch takes the first n examples of its passes. Without a subset, pass 0 is exactly the ordinary
epoch, so a subset of every example changes nothing.
"""

from __future__ import annotations

import torch

from earlyphase.pretext.base import PretextTask

from .augment import augment_images, augment_split, derive_seed, epoch_order, standard_augmentation
from .data import ImageData
from .plan import TrainPlan


class EpochBatches:
    """Caches one epoch's augmented images and order; batch(step) gives that step's examples.

    `order` holds the epoch's example indices (into the training split) and `positions` where each one's
    image is in `images`: the same tensor where `images` is indexed by example (the split, augmented or
    not), the epoch's sequence for an augmented subset (`images` holds each pass's own augmentation)."""

    def __init__(self, data: ImageData, plan: TrainPlan, task: PretextTask):
        self.data, self.plan = data, plan
        self.augment = plan.augment and task.standard_augmentation
        self.aug = standard_augmentation(data) if self.augment else None
        self.per_epoch = data.iterations_per_epoch(plan.batch_size)
        self.normalise = data.normaliser()
        subset = getattr(task, "subset", None)  # set by PretextTask.choose (a task may predate it)
        self.examples = None if subset is None else subset.to(data.train_x.device)
        self.forget()

    def forget(self) -> None:
        """Drop the built epoch (its order and images): none is built yet, or a caller keeps copies of its own."""
        self.epoch: int | None = None
        nothing = torch.empty(0, dtype=torch.long)
        self.images, self.order, self.positions = self.data.train_x[:0], nothing, nothing

    def batch(self, step: int):
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            self._build(epoch)
        rows = slice(i * self.plan.batch_size, (i + 1) * self.plan.batch_size)
        idx = self.order[rows]
        return self.normalise(self.images[self.positions[rows]]), self.data.train_y[idx], idx

    def _build(self, epoch: int) -> None:
        d, seed = self.data, self.plan.seed
        if self.examples is None:
            self.order = epoch_order(len(d.train_y), seed, epoch, d.train_x.device)
            self.images = augment_split(d, seed, epoch, self.aug) if self.augment else d.train_x
            self.positions = self.order
        else:
            n, m = len(d.train_y), len(self.examples)
            passes = [self.examples[epoch_order(m, seed if r == 0 else derive_seed(seed, "pass", r), epoch,
                                                d.train_x.device)] for r in range(-(-n // m))]
            self.order = torch.cat(passes)[:n]
            if self.augment:  # each pass its own draws, so an example repeated in an epoch is augmented afresh
                self.images = torch.cat([augment_images(d, d.train_x[p], derive_seed(seed, "augment", epoch, r),
                                                        self.aug) for r, p in enumerate(passes)])[:n]
                self.positions = torch.arange(n, device=d.train_x.device)
            else:
                self.images, self.positions = d.train_x, self.order
        self.epoch = epoch
