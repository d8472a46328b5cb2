"""The CIFAR ResNet family of He et al. (2016), as used by Frankle et al., registered with timm.

`timm.create_model("cifar_resnet20")` (after `import earlyphase.studies.engine.models`) gives ResNet-20: 272,474
parameters. Depths 8, 14, 20, 32, 44, 56 and 110 are registered by name; the width (channels of the
first stage, 16 in the paper) is the `width=` keyword. Any input size works (global average pooling).
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from . import model_registry
from .model_registry import check_resnet_depth
from .paper_models import PaperNetwork, register_depths


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:  # projection shortcut: 1x1 conv + BN
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(PaperNetwork):
    """conv3x3(W) -> 3 stages of (D-2)/6 blocks (W, 2W, 4W channels) -> global average pool -> linear."""

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10, in_chans: int = 3, **_ignored):
        super().__init__()
        check_resnet_depth(depth)
        blocks = (depth - 2) // 6
        self.depth, self.width = depth, width
        self.conv = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        layers, c_in = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                layers.append(BasicBlock(c_in, c_out, 2 if stage > 0 and b == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*layers)
        self.num_features = c_in
        self.num_classes = num_classes
        self.fc = nn.Linear(c_in, num_classes)
        self.reset_parameters()

    def forward_features(self, x):
        return self.blocks(F.relu(self.bn(self.conv(x))))

    def pool(self, x):
        return F.adaptive_avg_pool2d(x, 1)


register_depths("cifar_resnet", model_registry.family("cifar_resnet").depths, CifarResNet,
                "ResNet-{depth} for CIFAR (He et al. 2016); width= sets the first stage's channels.", globals())
