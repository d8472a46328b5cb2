"""`simclr` (Chen et al. 2020): contrastive learning between two augmented views of each image.

Views: kornia, per sample, on the device (pretext/views.py: resized crop of area `min_scale`-1, flip where the
dataset flips, colour jitter, grayscale); the dataset's standard augmentation is off. Head and loss are lightly's
`SimCLRProjectionHead` (hidden width = the backbone's features) and `NTXentLoss`. Accuracy: the share of views
whose nearest other view (cosine) is their partner, i.e. top-1 positive retrieval within the batch.
"""

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from .base import Option, refuse
from .views import TwoViewTask


class SimCLR(TwoViewTask):
    name = "simclr"
    description = "two kornia views per image, lightly's SimCLR projection head and NT-Xent loss"
    # its options, attributes once set (PretextTask.__init__)
    temperature: float
    out_dim: int
    options = {"temperature": Option(0.5, "NT-Xent temperature"),
               "out_dim": Option(128, "projection head output size"),
               "min_scale": Option(0.2, "smallest area share kept by the random resized crop")}

    def setup(self) -> None:
        refuse(self.name, [(self.temperature <= 0, f"temperature={self.temperature}: must be > 0, e.g. 0.5"),
                           (self.out_dim < 1, f"out_dim={self.out_dim}: must be 1 or more, e.g. 128")])
        self.make_views()
        self.criterion = NTXentLoss(temperature=self.temperature)

    def head(self, num_features, num_classes):
        return SimCLRProjectionHead(num_features, num_features, self.out_dim)

    def loss(self, outputs, targets):
        first, second = outputs.float().chunk(2)
        return self.criterion(first, second)
