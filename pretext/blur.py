"""`blur`: the true labels on blurred inputs (the paper's Section 5: an easier version of the task).

Each image is down-sampled by `factor` (area averaging) and up-sampled back (bilinear), on the device.
`gaussian=True` first smooths it with a Gaussian of sigma = factor / 2 (kornia), which removes the
blocky aliasing of plain down-sampling.

Default factor (`factor=0`, auto): the paper's 4 on CIFAR-10's 32x32 images (8x8 left: a blurred but
recognisable image), scaled with the image as size // 8, and at least 2, so a blur always removes detail.
On 8x8 digits that is 2 (4x4 left); the paper's 4 would leave 2x2, four numbers per channel, which is not
a blurred digit but almost none at all (dense accuracy on digits: README, "Pretext tasks"). Both steps are
linear and average to one, so they commute with the normalisation and a constant image stays constant.
factor=1 without gaussian is the identity.
"""

import kornia.filters
from torch.nn import functional as F

from .base import Option, PretextTask


def blur(x, factor: int, gaussian: bool = False):
    height, width = x.shape[-2:]
    if gaussian:
        sigma = factor / 2
        size = 2 * int(2 * sigma) + 1
        x = kornia.filters.gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="reflect")
    small = F.interpolate(x, size=(max(1, height // factor), max(1, width // factor)), mode="area")
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)


def auto_factor(image_size: tuple) -> int:
    """The default factor: 4 on 32-pixel images as in the paper, size // 8 in general, never below 2."""
    return max(2, min(image_size) // 8)


class Blur(PretextTask):
    name = "blur"
    description = "true labels on inputs down-sampled by a factor and up-sampled (optionally Gaussian)"
    stochastic = False
    # its options, attributes once set (PretextTask.__init__)
    factor: int
    gaussian: bool
    options = {"factor": Option(0, "down-sampling factor; 0 = auto: the paper's 4 on 32-pixel images, 2 on 8x8 digits"),
               "gaussian": Option(False, "Gaussian smoothing (sigma = factor / 2) before down-sampling")}

    def setup(self) -> None:
        if self.factor == 0:
            self.factor = auto_factor(self.info.image_size)
        if not 1 <= self.factor <= min(self.info.image_size):
            raise ValueError(
                f"blur factor={self.factor}: must be between 1 and the image size {min(self.info.image_size)} "
                f"(or 0 for auto)"
            )

    def batch(self, x, y, idx):
        return blur(x, self.factor, self.gaussian), y
