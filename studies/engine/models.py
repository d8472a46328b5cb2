"""The CIFAR ResNet family of He et al. (2016), as used by Frankle et al., registered with timm.

`timm.create_model("cifar_resnet20")` (after `import earlyphase.studies.engine.models`) gives ResNet-20: 272,474
parameters. Depths 8, 14, 20, 32, 44, 56 and 110 are registered by name; the width (channels of the
first stage, 16 in the paper) is the `width=` keyword. Any input size works (global average pooling).
"""

from __future__ import annotations

import re

from timm.models import register_model
from torch import nn
from torch.nn import functional as F

REGISTERED_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
_NAME = re.compile(r"^cifar_resnet(\d+)$")


def check_depth(depth: int) -> None:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"CIFAR ResNet depth {depth} is invalid: (depth - 2) must be a positive multiple of 6, e.g. 20, 32, 56"
        )


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


class CifarResNet(nn.Module):
    """conv3x3(W) -> 3 stages of (D-2)/6 blocks (W, 2W, 4W channels) -> global average pool -> linear."""

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10, in_chans: int = 3, **_ignored):
        super().__init__()
        check_depth(depth)
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

    def reset_parameters(self) -> None:
        """The paper's initialisation: Kaiming-normal conv/linear weights, BN gamma ~ U[0,1), beta = 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight)
                nn.init.zeros_(m.bias)

    # timm's conventions, so pretext heads can be swapped in and out.
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh Kaiming-initialised `num_classes`-way linear head (draws from the global RNG)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes).to(self.conv.weight.device)
        nn.init.kaiming_normal_(self.fc.weight)

    def forward_features(self, x):
        return self.blocks(F.relu(self.bn(self.conv(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _register(depth: int):
    def factory(pretrained: bool = False, **kwargs):
        if pretrained:
            raise ValueError(
                "CIFAR ResNets have no pretrained weights; a rewind point comes from `earlyphase pretrain`"
            )
        return CifarResNet(depth=depth, **kwargs)

    factory.__name__ = factory.__qualname__ = f"cifar_resnet{depth}"
    factory.__doc__ = f"ResNet-{depth} for CIFAR (He et al. 2016); width= sets the first stage's channels."
    factory.__module__ = __name__
    return register_model(factory)


for _depth in REGISTERED_DEPTHS:
    globals()[f"cifar_resnet{_depth}"] = _register(_depth)


def create(name: str, width: int = 16, num_classes: int = 10) -> CifarResNet:
    """Build a registered CIFAR ResNet by name, with a clear error for a bad depth or name."""
    import timm

    match = _NAME.match(name)
    if not match:
        raise ValueError(f"unknown model {name!r}: use cifar_resnet{{D}}, e.g. cifar_resnet20")
    depth = int(match.group(1))
    check_depth(depth)
    if depth not in REGISTERED_DEPTHS:
        return CifarResNet(depth=depth, width=width, num_classes=num_classes)
    return timm.create_model(name, width=width, num_classes=num_classes)
