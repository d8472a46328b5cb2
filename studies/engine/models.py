"""Making a model by name, and the interface every model meets.

Importing this module imports every family's module named in engine/model_registry.py (which registers their
usual depths with timm). `create` builds a family model through its entry's network class, with its width (any
valid depth, registered or not), or any other timm model with timm's own arguments, and checks it meets
`ImageClassifier`: the jobs swap and reset the classifier (pretext heads, fresh classifiers) and name its state
entries `fc.weight`/`fc.bias`.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from torch import nn

from .model_registry import FAMILIES, ModelFamily, check_name, family_and_depth

for _family in FAMILIES:  # each family's module registers its usual depths with timm when imported
    importlib.import_module(_family.network.partition(":")[0])


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
    if found:  # through its entry, so any valid depth builds (cifar_resnet26 too)
        family, depth = found
        model = network_class(family)(depth=depth, width=family.defaults["width"] if width is None else width,
                                      num_classes=num_classes)
    else:
        if width is not None:
            raise ValueError(f"--width applies to earlyphase's own families, not to timm's {name}: leave it out")
        model = timm.create_model(name, num_classes=num_classes)
    check_interface(model, name)
    return model


def network_class(family: ModelFamily) -> type:
    module, _, cls = family.network.partition(":")
    return getattr(importlib.import_module(module), cls)


def check_interface(model: nn.Module, name: str) -> None:
    missing = [attr for attr in ("fc", "num_features", "num_classes", "reset_classifier") if not hasattr(model, attr)]
    if missing or not isinstance(model, ImageClassifier) or not isinstance(model.fc, nn.Linear):
        what = f"lacks {', '.join(missing)}" if missing else "has no linear classifier named fc"
        raise ValueError(f"model {name!r} {what}: earlyphase needs timm's classifier conventions (a linear .fc on "
                         f".num_features, .num_classes, .reset_classifier(n)); see the README's 'Adding a model'")
