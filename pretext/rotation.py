"""`rotation` (Gidaris et al. 2018): predict by how much an image was rotated, 4-way head.

Label k means the image was turned by k * 90 degrees counter-clockwise, exactly, with `torch.rot90`
over (height, width); no interpolation, so the task is never ambiguous (the reference code's
`RandomRotation(label*90)` drew a random angle in +-90*label degrees instead).

Decision: by default every image gets ONE random rotation per step (uniform over the four), so a step
costs what a supervised step costs and `--pretrain_steps` compares across tasks. `all_four=True` is the
Gidaris variant: each batch holds all four rotations of every image (4x the images per step).
The test split gets fixed rotations (the trainer seeds evaluation), so test accuracies are comparable.
"""

import torch
from torch import nn

from .base import Option, PretextTask


def rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Image i turned by k[i] * 90 degrees counter-clockwise (vectorised; no host sync)."""
    turned = torch.stack([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])  # 4 x N x C x H x W
    return turned[k, torch.arange(len(x), device=x.device)]


class Rotation(PretextTask):
    name = "rotation"
    description = "predict a 0/90/180/270-degree rotation (exact torch.rot90), 4-way head"
    uses_labels = False
    # its options, attributes once set (PretextTask.__init__)
    all_four: bool
    options = {"all_four": Option(False, "all four rotations of every image per batch (else one random each)")}

    def setup(self) -> None:
        height, width = self.info.image_size
        if height != width:
            raise ValueError(f"rotation needs square images, got {height}x{width}")

    def head(self, num_features: int, num_classes: int) -> nn.Module:
        return nn.Linear(num_features, 4)

    def batch(self, x, y, idx):
        if self.all_four:
            k = torch.arange(4, device=x.device).repeat_interleave(len(x))
            return torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)]), k
        k = torch.randint(4, (len(x),), device=x.device)
        return rotate(x, k), k
