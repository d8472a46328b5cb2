"""A training's batches: each epoch's seeded order and augmented split, computed once per epoch."""

from __future__ import annotations

from earlyphase.pretext.base import PretextTask

from .augment import augment_split, epoch_order, standard_augmentation
from .data import ImageData
from .plan import TrainPlan


class EpochBatches:
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
