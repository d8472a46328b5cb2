"""The CIFAR VGG family (Simonyan & Zisserman 2015) with BatchNorm, as open_lth builds it for the paper.

Each plan entry is conv3x3 (with bias) -> BatchNorm -> ReLU; "M" is a 2x2 max pool; then a 2x2 average pool and
one linear layer on the 512 remaining channels (open_lth's cifar_vgg; no hidden fully connected layers). At the
default width 64, VGG-11/13/16/19 have 9,231,114 / 9,416,010 / 14,728,266 / 20,040,522 parameters; `width=W`
scales every plan entry by W/64. Five halvings: 32x32 images (CIFAR, SVHN) or larger. By default the classifier's
weight is kept out of pruning (open_lth: `prune_layers_to_ignore = fc.weight`; model_registry.py says so).
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from . import model_registry
from .model_registry import check_vgg_depth
from .paper_models import PaperNetwork, register_depths

PLANS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class CifarVGG(PaperNetwork):
    """The plan's conv blocks and max pools -> 2x2 average pool -> linear."""

    def __init__(self, depth: int = 16, width: int = 64, num_classes: int = 10, in_chans: int = 3, **_ignored):
        super().__init__()
        check_vgg_depth(depth)
        self.depth, self.width = depth, width
        layers: list[nn.Module] = []
        c_in = in_chans
        for spec in PLANS[depth]:
            if isinstance(spec, str):  # "M"
                layers.append(nn.MaxPool2d(2, 2))
            else:
                c_out = max(1, spec * width // 64)
                layers.append(ConvBlock(c_in, c_out))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.num_features, self.num_classes = c_in, num_classes
        self.fc = nn.Linear(c_in, num_classes)
        self.reset_parameters()

    def forward_features(self, x):
        return self.layers(x)

    def pool(self, x):
        return F.avg_pool2d(x, 2)


register_depths("cifar_vgg", model_registry.family("cifar_vgg").depths, CifarVGG,
                "VGG-{depth} with BatchNorm for CIFAR (open_lth's cifar_vgg); width= scales the 64-wide plan.",
                globals())
