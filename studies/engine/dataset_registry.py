"""The datasets earlyphase trains on: one entry each, with its sizes and its training defaults.

`engine/data.py` reads them (scikit-learn's digits; torchvision's readers for the rest) and augments each as its
entry says (crop padding, flip). The defaults are the
config fields a run leaves unset (None), open_lth's per-dataset hyperparameters: CIFAR-10 as the paper, CIFAR-100
as open_lth's fork trains it (the CIFAR-10 schedule), SVHN with the same optimiser over 40 epochs of its 73,257
training images (decision: a quarter of CIFAR's 160 epochs, as SVHN's three times larger epoch and easier task
usually warrant; milestones at 1/2 and 3/4 as on CIFAR), digits sized for 2 CPU cores (one dense ResNet-20
training in a few seconds, the schedule's shape kept). A model family may override some of them
(engine/model_registry.py).

Light on purpose (no torch), like the model registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

_CIFAR_SCHEDULE = dict(
    batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
    training_steps="160ep", milestone_steps="80ep,120ep", gamma=0.1, eval_every=4,  # eval costs ~7% per epoch
    rewind_step="500it",
)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    title: str  # in messages
    image_size: int  # square images of this many pixels a side
    num_classes: int
    reader: str  # the torchvision.datasets class that reads it ("" for digits)
    defaults: Mapping  # config fields a run leaves unset (None)
    crop_padding: int  # its standard augmentation (engine/augment.py): a random crop after this much zero padding
    flip: bool  # and a random horizontal flip, where the images are flip-invariant
    test_images: int = 0  # size of the test split (reports state a margin in images)


DATASETS = (
    DatasetEntry("digits", "digits", 8, 10, "", MappingProxyType(dict(
        batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4,
        training_steps="12ep", milestone_steps="6ep,9ep", gamma=0.1, eval_every=2, rewind_step="24it")),
        crop_padding=1, flip=False, test_images=360),  # +-1 pixel shifts; a digit is not flip-invariant
    DatasetEntry("cifar10", "CIFAR-10", 32, 10, "CIFAR10", MappingProxyType(_CIFAR_SCHEDULE),
                 crop_padding=4, flip=True, test_images=10_000),
    DatasetEntry("cifar100", "CIFAR-100", 32, 100, "CIFAR100", MappingProxyType(_CIFAR_SCHEDULE),
                 crop_padding=4, flip=True, test_images=10_000),
    DatasetEntry("svhn", "SVHN", 32, 10, "SVHN", MappingProxyType(dict(
        _CIFAR_SCHEDULE, training_steps="40ep", milestone_steps="20ep,30ep", eval_every=2)),
        crop_padding=4, flip=False, test_images=26_032),  # house numbers are not flip-invariant
)
NAMES = tuple(d.name for d in DATASETS)


def entry(name: str) -> DatasetEntry:
    for dataset in DATASETS:
        if dataset.name == name:
            return dataset
    raise KeyError(name)
