"""The paper's baselines for a ticket at IMP level L (each a separately trained network).

- `random_reinit`: the trunk's level-L mask on a fresh random initialisation (a new seed, derived
  from (seed, "reinit", L) by the caller), trained over the same steps as the trunk level.
- `random_prune_global`: a random mask keeping exactly as many weights as the trunk's level-L mask,
  uniform over all prunable positions; trained from the rewind point.
- `random_prune_layerwise`: a random mask keeping exactly the trunk's count in every layer; trained
  from the rewind point.
"""

from __future__ import annotations

import torch

from .masks import Mask, kept
from .pruning import random_prune_global, random_prune_layerwise

CONTROLS = ("random_reinit", "random_prune_global", "random_prune_layerwise")


def parse_controls(names) -> tuple[str, ...]:
    """Names -> the same names in the canonical order, duplicates dropped; ValueError on an unknown one."""
    names = list(names)
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown control {unknown[0]!r}: choose from {', '.join(CONTROLS)}")
    return tuple(c for c in CONTROLS if c in names)


def reinitialises(control: str) -> bool:
    """Whether the control starts from a fresh initialisation (else from the rewind point)."""
    return control == "random_reinit"


def control_mask(control: str, trunk_mask: Mask, generator: torch.Generator) -> Mask:
    """The mask a control trains under, given the trunk's mask at the same level."""
    if control == "random_reinit":
        return {n: m.clone() for n, m in trunk_mask.items()}
    if control == "random_prune_global":
        return random_prune_global(trunk_mask, kept(trunk_mask), generator)
    if control == "random_prune_layerwise":
        return random_prune_layerwise(trunk_mask, generator)
    raise ValueError(f"unknown control {control!r}: choose from {', '.join(CONTROLS)}")
