"""Making a model by name, and the interface every model meets.

Importing this module registers earlyphase's families with timm (engine/resnet.py, engine/vgg.py); their
defaults and names live in engine/model_registry.py. `create` builds a family model with its width, or any
other timm model with timm's own arguments, and checks it meets `ImageClassifier`: the jobs swap and reset the
classifier (pretext heads, fresh classifiers) and name its state entries `fc.weight`/`fc.bias`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn

from . import resnet, vgg  # noqa: F401  (registers cifar_resnet{D} and cifar_vgg{D} with timm)
from .model_registry import check_name, family_and_depth
from .resnet import CifarResNet


@runtime_checkable
class ImageClassifier(Protocol):
    """What the jobs rely on (timm's conventions): `fc`, the linear classifier on `num_features` pooled features
    (a pretext task's head replaces it); `num_classes`; `reset_classifier(n)`, a fresh n-way `fc`; and
    `forward(images) -> logits`."""

    fc: nn.Module
    num_features: int
    num_classes: int

    def reset_classifier(self, num_classes: int) -> None: ...

    def forward(self, x): ...


def create(name: str, width: int | None = None, num_classes: int = 10) -> nn.Module:
    """A model by name: a family's (width: its default when None), else timm's; ValueError for a bad name or a
    model that does not meet ImageClassifier."""
    import timm

    check_name(name)
    found = family_and_depth(name)
    if found and not timm.is_model(name):  # a valid depth that is not registered by name, e.g. cifar_resnet26
        family, depth = found
        return CifarResNet(depth=depth, width=family.defaults["width"] if width is None else width,
                           num_classes=num_classes)
    if found:
        model = timm.create_model(name, num_classes=num_classes, **({} if width is None else {"width": width}))
    else:
        if width is not None:
            raise ValueError(f"--width applies to earlyphase's own families, not to timm's {name}: leave it out")
        model = timm.create_model(name, num_classes=num_classes)
    check_interface(model, name)
    return model


def check_interface(model: nn.Module, name: str) -> None:
    missing = [attr for attr in ("fc", "num_features", "num_classes", "reset_classifier") if not hasattr(model, attr)]
    if missing or not isinstance(model, ImageClassifier) or not isinstance(model.fc, nn.Linear):
        what = f"lacks {', '.join(missing)}" if missing else "has no linear classifier named fc"
        raise ValueError(f"model {name!r} {what}: earlyphase needs timm's classifier conventions (a linear .fc on "
                         f".num_features, .num_classes, .reset_classifier(n)); see the README's 'Adding a model'")
