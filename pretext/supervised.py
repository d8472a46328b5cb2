"""`supervised`: ordinary training with the true labels (standard rewinding, expressed as a pretext task)."""

from .base import PretextTask


class Supervised(PretextTask):
    name = "supervised"
    description = "true labels, standard augmentation: the dense network's own early phase"
    stochastic = False
