"""`simclr` (Chen et al. 2020): contrastive learning between two augmented views of each image.

Views are made on the device with kornia, per sample, from the images in pixel space: a random resized
crop back to the input size (area scale `min_scale`-1, default 0.2: the usual small-image setting; 0.08
leaves too little of a 32x32 or 8x8 image), a horizontal flip where the dataset is flip-invariant (not for
digits), colour jitter (0.4, 0.4, 0.4, 0.1 with p=0.8) and grayscale (p=0.2). The dataset's standard
augmentation is off: the views replace it. Head and loss are lightly's `SimCLRProjectionHead` (hidden width = the
backbone's features) and `NTXentLoss`. Accuracy: the share of views whose nearest other view (cosine)
is their partner, i.e. top-1 positive retrieval within the batch.
"""

import kornia.augmentation as K
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch.nn import functional as F

from .base import Option, PretextTask


class SimCLR(PretextTask):
    name = "simclr"
    description = "two kornia views per image, lightly's SimCLR projection head and NT-Xent loss"
    uses_labels = False
    standard_augmentation = False
    options = {"temperature": Option(0.5, "NT-Xent temperature"),
               "out_dim": Option(128, "projection head output size"),
               "min_scale": Option(0.2, "smallest area share kept by the random resized crop")}

    def setup(self) -> None:
        for bad, need in ((self.temperature <= 0, f"temperature={self.temperature}: must be > 0, e.g. 0.5"),
                          (self.out_dim < 1, f"out_dim={self.out_dim}: must be 1 or more, e.g. 128"),
                          (not 0 < self.min_scale <= 1, f"min_scale={self.min_scale}: must be in (0, 1], e.g. 0.2")):
            if bad:
                raise ValueError(f"simclr {need}")
        ops = [K.RandomResizedCrop(tuple(self.info.image_size), scale=(self.min_scale, 1.0))]
        if self.info.flip:
            ops.append(K.RandomHorizontalFlip())
        ops += [K.ColorJiggle(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
        self.augment = K.AugmentationSequential(*ops)
        self.criterion = NTXentLoss(temperature=self.temperature)
        self.stats = self.info.normalisation("cpu")

    def head(self, num_features, num_classes):
        return SimCLRProjectionHead(num_features, num_features, self.out_dim)

    def batch(self, x, y, idx):
        if self.stats[0].device != x.device:
            self.stats = self.info.normalisation(x.device)
        mean, std = self.stats
        pixels = (x * std + mean).clamp(0, 1)
        views = torch.cat([self.augment(pixels), self.augment(pixels)])
        n = len(x)
        partner = torch.cat([torch.arange(n, 2 * n, device=x.device), torch.arange(n, device=x.device)])
        return (views - mean) / std, partner

    def loss(self, outputs, targets):
        first, second = outputs.float().chunk(2)
        return self.criterion(first, second)

    def correct(self, outputs, targets):
        z = F.normalize(outputs.float(), dim=1)
        similarity = (z @ z.T).fill_diagonal_(float("-inf"))
        return (similarity.argmax(1) == targets).sum()
