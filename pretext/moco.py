"""`moco` (MoCo v2, Chen et al. 2020): a query view against its key among a queue of earlier keys.

The online network (backbone + lightly's `MoCoProjectionHead`, hidden width twice the backbone's features)
embeds the first view (the query); the key encoder, a momentum copy of it (pretext/momentum.py), embeds the
second. lightly's `NTXentLoss` with a memory bank of `queue` keys (the queue of negatives, MoCo's temperature
0.2) compares each query with its key and with the queue; the bank takes the batch's keys after each training
loss (never while evaluating) and is checkpointed with the run. One device, so no shuffled BatchNorm (MoCo
shuffles across GPUs to hide batch statistics; here the key encoder's BatchNorm sees its own batch). Accuracy:
the share of queries whose nearest key in the batch is their own.
"""

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from torch.nn import functional as F

from .base import Option, refuse
from .momentum import MOMENTUM, MomentumTask, check_momentum


class MoCo(MomentumTask):
    name = "moco"
    description = "MoCo v2 on lightly: momentum key encoder, NT-Xent against a queue of earlier keys"
    # its options, attributes once set (PretextTask.__init__)
    queue: int
    temperature: float
    out_dim: int
    options = {"momentum": MOMENTUM,
               "queue": Option(4096, "keys kept as negatives (the memory bank's size)"),
               "temperature": Option(0.2, "NT-Xent temperature"),
               "out_dim": Option(128, "projection head output size"),
               "min_scale": Option(0.2, "smallest area share kept by the random resized crop")}

    def setup(self) -> None:
        check_momentum(self.name, self.momentum)
        refuse(self.name, [(self.queue < 1, f"queue={self.queue}: must be 1 or more, e.g. 4096"),
                           (self.temperature <= 0, f"temperature={self.temperature}: must be > 0, e.g. 0.2"),
                           (self.out_dim < 1, f"out_dim={self.out_dim}: must be 1 or more, e.g. 128")])
        self.make_views()

    def head(self, num_features, num_classes):
        return MoCoProjectionHead(num_features, 2 * num_features, self.out_dim)

    def extra_modules(self, model):
        # the memory bank starts as random unit vectors (drawn from the seeded RNG that build() runs under)
        return {"criterion": NTXentLoss(temperature=self.temperature, memory_bank_size=(self.queue, self.out_dim))}

    def batch(self, x, y, idx):
        return self.views(x), torch.arange(len(x), device=x.device)  # query i's key is key i

    def forward(self, model, inputs):
        first, second = inputs.chunk(2)
        return model(first), self.teacher(second).detach()

    def loss(self, outputs, targets):
        queries, keys = outputs
        return self.own_modules["criterion"](queries.float(), keys.float())

    def correct(self, outputs, targets):
        queries, keys = (F.normalize(z.float(), dim=1) for z in outputs)
        return ((queries @ keys.T).argmax(1) == targets).sum()
