"""`supervised_noaug`: true labels without the dataset's augmentation.

The same training as `supervised` (standard rewinding to k) except that batches arrive as stored, without
random crops and flips: at the same k its difference to `rewind k` isolates what augmentation does in the
early phase (the reference code's `--pretrain_do_not_augment`).
"""

from .base import PretextTask


class SupervisedNoAugmentation(PretextTask):
    name = "supervised_noaug"
    description = "true labels without augmentation: its difference to rewind k isolates augmentation"
    standard_augmentation = False
    stochastic = False
