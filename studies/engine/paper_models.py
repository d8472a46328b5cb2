"""What the paper's networks share: their initialisation, timm's classifier conventions, their registration."""

from __future__ import annotations

import functools

from timm.models import register_model
from torch import nn


class PaperNetwork(nn.Module):
    """A backbone (`forward_features`), a pooling (`pool`) and a linear classifier `fc` on `num_features`."""

    num_features: int
    num_classes: int
    fc: nn.Linear

    def reset_parameters(self) -> None:
        """The paper's initialisation (open_lth's kaiming_normal + uniform BatchNorm): Kaiming-normal conv/linear
        weights, BN gamma ~ U[0,1), beta = 0; biases keep PyTorch's default."""
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
        self.fc = nn.Linear(self.num_features, num_classes).to(next(self.parameters()).device)
        nn.init.kaiming_normal_(self.fc.weight)

    def forward_features(self, x):
        raise NotImplementedError

    def pool(self, x):
        raise NotImplementedError

    def forward_head(self, x, pre_logits: bool = False):
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def register_depths(prefix: str, depths, network: type, doc: str, namespace: dict) -> None:
    """Register `network(depth=D, **kwargs)` as PREFIX{D} for each depth, named in the calling module's `namespace`
    (timm lists a model under its module); `doc` may use {depth}."""
    for depth in depths:
        name = f"{prefix}{depth}"
        namespace[name] = register(name, functools.partial(network, depth=depth), doc.format(depth=depth),
                                   namespace["__name__"])


def register(name: str, build, doc: str, module: str):
    """Register `build(**kwargs)` with timm as `name` (no pretrained weights: a rewind point comes from pretraining)."""

    def factory(pretrained: bool = False, **kwargs):
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; a rewind point comes from `earlyphase pretrain`")
        return build(**kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    factory.__module__ = module
    return register_model(factory)
