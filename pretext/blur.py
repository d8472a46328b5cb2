"""`blur`: the true labels on blurred inputs (the paper's Section 5: an easier version of the task).

Each image is down-sampled by `factor` (area averaging) and up-sampled back (bilinear), on the device.
`gaussian=True` first smooths it with a Gaussian of sigma = factor / 2 (kornia), which removes the
blocky aliasing of plain down-sampling. Both steps are linear and average to one, so they commute with
the normalisation and a constant image stays constant. factor=1 without gaussian is the identity.
"""

import kornia.filters
from torch.nn import functional as F

from .base import PretextTask


def blur(x, factor: int, gaussian: bool = False):
    height, width = x.shape[-2:]
    if gaussian:
        sigma = factor / 2
        size = 2 * int(2 * sigma) + 1
        x = kornia.filters.gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="reflect")
    small = F.interpolate(x, size=(max(1, height // factor), max(1, width // factor)), mode="area")
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)


class Blur(PretextTask):
    name = "blur"
    description = "true labels on inputs down-sampled by a factor and up-sampled (optionally Gaussian)"
    stochastic = False
    options = {"factor": 4, "gaussian": False}

    def setup(self) -> None:
        if not 1 <= self.factor <= min(self.info.image_size):
            raise ValueError(f"blur factor={self.factor}: must be between 1 and the image size {min(self.info.image_size)}")

    def batch(self, x, y, idx):
        return blur(x, self.factor, self.gaussian), y
