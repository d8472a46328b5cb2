"""`barlowtwins` (Zbontar et al. 2021): the two views' embeddings' cross-correlation pushed to the identity.

lightly's `BarlowTwinsProjectionHead` (hidden width twice the backbone's features, `out_dim` outputs) and
`BarlowTwinsLoss` (off-diagonal weight `lambda_param`). Stateless. Accuracy: positive retrieval among the
batch's embeddings.
"""

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from .base import Option, refuse
from .views import TwoViewTask


class BarlowTwins(TwoViewTask):
    name = "barlowtwins"
    description = "lightly's Barlow Twins projector and loss: cross-correlation of two views to the identity"
    # its options, attributes once set (PretextTask.__init__)
    out_dim: int
    lambda_param: float
    options = {"out_dim": Option(256, "projector output size"),
               "lambda_param": Option(0.005, "weight of the off-diagonal terms"),
               "min_scale": Option(0.2, "smallest area share kept by the random resized crop")}

    def setup(self) -> None:
        refuse(self.name, [(self.out_dim < 1, f"out_dim={self.out_dim}: must be 1 or more, e.g. 256"),
                           (self.lambda_param < 0, f"lambda_param={self.lambda_param}: must be >= 0, e.g. 0.005")])
        self.make_views()
        self.criterion = BarlowTwinsLoss(lambda_param=self.lambda_param)

    def head(self, num_features, num_classes):
        return BarlowTwinsProjectionHead(num_features, 2 * num_features, self.out_dim)

    def loss(self, outputs, targets):
        first, second = outputs.float().chunk(2)
        return self.criterion(first, second)
