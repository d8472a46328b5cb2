"""The model families earlyphase builds: one entry each, its name, its timm factories, its defaults.

A family is its entry here: the network class it builds (engine/resnet.py, engine/vgg.py; importing
`earlyphase.studies.engine.models` imports each entry's module, which registers its usual depths with timm) and
open_lth's `default_hparams` per model:
the config fields the family sets when a run leaves them unset (width, prune_ignore) and how far it shrinks its
input (a model that halves the image five times cannot take 8x8 digits). On CIFAR-10 open_lth trains its
ResNets and VGGs with the same schedule (160ep, lr 0.1, milestones 80ep,120ep, batch 128), so no family
changes the dataset's schedule; an entry may (`defaults` holds any config field).

`--model` also takes any timm model name (`timm.list_models()`) that meets `models.ImageClassifier`; such a model
gets no family defaults and is built with timm's own arguments (`--width` does not apply to it).

Light on purpose (no torch): configs resolve their defaults, and the report names runs, without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping


def check_resnet_depth(depth: int) -> None:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"CIFAR ResNet depth {depth} is invalid: (depth - 2) must be a positive multiple of 6, e.g. 20, 32, 56"
        )


VGG_DEPTHS = (11, 13, 16, 19)


def check_vgg_depth(depth: int) -> None:
    if depth not in VGG_DEPTHS:
        raise ValueError(f"CIFAR VGG depth {depth} is invalid: use 11, 13, 16 or 19")


@dataclass(frozen=True)
class ModelFamily:
    prefix: str  # the name is PREFIX{DEPTH}
    summary: str  # for --help and error messages
    # "module:Class" of the network, built as Class(depth=, width=, num_classes=) for every valid depth; importing
    # the module registers the family's usual depths with timm (timm.list_models("cifar_*") lists them)
    network: str
    check_depth: Callable[[int], None]  # raises ValueError naming the valid depths
    defaults: Mapping  # config fields the family sets where a run leaves them unset
    depths: tuple  # the depths registered with timm by name (others that check_depth takes build all the same)
    halvings: int  # times the image is halved before the classifier: needs images of at least 2**halvings pixels


FAMILIES = (
    ModelFamily("cifar_resnet", "cifar_resnet{D}, (D-2) % 6 == 0 (20, 56, 110, ...)",
                "earlyphase.studies.engine.resnet:CifarResNet", check_resnet_depth,
                MappingProxyType({"width": 16, "prune_ignore": ""}), depths=(8, 14, 20, 32, 44, 56, 110),
                halvings=0),  # global pooling: any size
    ModelFamily("cifar_vgg", "cifar_vgg{11,13,16,19}", "earlyphase.studies.engine.vgg:CifarVGG", check_vgg_depth,
                MappingProxyType({"width": 64, "prune_ignore": "fc.weight"}), depths=VGG_DEPTHS,
                halvings=5),  # 4 max pools + avg pool
)
NAMES_HELP = ", ".join(f.summary for f in FAMILIES) + ", or any timm model with an .fc classifier"


def family(prefix: str) -> ModelFamily:
    return next(f for f in FAMILIES if f.prefix == prefix)


def family_and_depth(name: str) -> tuple[ModelFamily, int] | None:
    """(family, depth) for PREFIX{DIGITS}; None for names of no family (timm's own models)."""
    for family in FAMILIES:
        depth = name.removeprefix(family.prefix)
        if depth != name and depth.isdigit():
            return family, int(depth)
    return None


def defaults(name: str) -> dict:
    """The config fields the model's family sets; a timm model of no family prunes every conv/linear weight and has
    no width."""
    found = family_and_depth(name)
    return dict(found[0].defaults) if found else {"prune_ignore": ""}


def check_name(name: str) -> None:
    """A family name with a valid depth, or a model timm knows; else ValueError naming the choices."""
    found = family_and_depth(name)
    if found:
        family, depth = found
        family.check_depth(depth)
        return
    import timm  # only for names of no family

    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: use {NAMES_HELP} (timm.list_models())")


def min_image_size(name: str) -> int:
    found = family_and_depth(name)
    return 2 ** found[0].halvings if found else 1
