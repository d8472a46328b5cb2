"""`vicreg` (Bardes et al. 2022): variance, invariance and covariance terms on two views' embeddings.

lightly's `VICRegProjectionHead` (hidden width twice the backbone's features, `out_dim` outputs: an expander
wider than the representation, as in the paper) and `VICRegLoss` with its default weights. Stateless.
Accuracy: positive retrieval among the batch's embeddings.
"""

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead

from .base import Option, refuse
from .views import TwoViewTask


class VICReg(TwoViewTask):
    name = "vicreg"
    description = "lightly's VICReg expander and loss (variance, invariance, covariance) on two views"
    # its options, attributes once set (PretextTask.__init__)
    out_dim: int
    options = {"out_dim": Option(256, "expander output size"),
               "min_scale": Option(0.2, "smallest area share kept by the random resized crop")}

    def setup(self) -> None:
        refuse(self.name, [(self.out_dim < 1, f"out_dim={self.out_dim}: must be 1 or more, e.g. 256")])
        self.make_views()
        self.criterion = VICRegLoss()

    def head(self, num_features, num_classes):
        return VICRegProjectionHead(num_features, 2 * num_features, self.out_dim)

    def loss(self, outputs, targets):
        first, second = outputs.float().chunk(2)
        return self.criterion(first, second)
