"""`byol` (Grill et al. 2020): predict a momentum teacher's projection of the other view.

The online network (backbone + lightly's `BYOLProjectionHead`) and a `BYOLPredictionHead` (trained by the run's
optimiser with it) predict the teacher's projection (a momentum copy of backbone and projector, pretext/momentum.py)
of the image's other view; the loss is lightly's `NegativeCosineSimilarity`, symmetrised over the two views (-1 is
perfect agreement). Hidden widths are twice the backbone's features (BYOL's 4096 for 2048). Accuracy: positive
retrieval among the online projections of the batch's views.
"""

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from .base import Option, refuse
from .momentum import MOMENTUM, MomentumTask, check_momentum


class BYOL(MomentumTask):
    name = "byol"
    description = "lightly's BYOL heads and loss: a predictor chases a momentum teacher's projection of the other view"
    # its options, attributes once set (PretextTask.__init__)
    out_dim: int
    options = {"momentum": MOMENTUM,
               "out_dim": Option(128, "projection and prediction output size"),
               "min_scale": Option(0.2, "smallest area share kept by the random resized crop")}

    def setup(self) -> None:
        check_momentum(self.name, self.momentum)
        refuse(self.name, [(self.out_dim < 1, f"out_dim={self.out_dim}: must be 1 or more, e.g. 128")])
        self.make_views()
        self.criterion = NegativeCosineSimilarity()

    def head(self, num_features, num_classes):
        return BYOLProjectionHead(num_features, 2 * num_features, self.out_dim)

    def extra_modules(self, model):
        return {"predictor": BYOLPredictionHead(self.out_dim, 2 * model.num_features, self.out_dim)}

    def forward(self, model, inputs):
        projections = model(inputs)
        return self.own_modules["predictor"](projections), self.teacher(inputs).detach(), projections

    def loss(self, outputs, targets):
        predictions, teacher, _ = outputs
        p0, p1 = predictions.float().chunk(2)
        t0, t1 = teacher.float().chunk(2)
        return 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))

    def embeddings(self, outputs):
        return outputs[2]
