"""Global magnitude pruning and random pruning (global or layer-wise).

Magnitude pruning ranks |w| of all surviving prunable weights together (one ranking across layers,
not per layer) and removes `round(fraction * surviving)` of them, so every level removes the same
fraction of what is left and masks are nested by construction. Ties are broken by position (sorted
parameter name, then flat index), so the result is deterministic. Already-pruned weights never
enter the ranking, whatever value they hold.

Random pruning draws a mask with a given number of kept weights, uniformly over all prunable
positions (global) or with each layer keeping exactly the same count as a reference mask
(layer-wise). Draws come from an explicit `torch.Generator`, in sorted-name order, so a seed fixes
the mask regardless of dict order.
"""

from __future__ import annotations

import math

import torch

from .masks import Mask


def weights_to_prune(surviving: int, fraction: float) -> int:
    """`fraction` of `surviving` weights, rounded half up to a whole weight."""
    return int(math.floor(fraction * surviving + 0.5))


def survivors(kept: int, fraction: float, levels: int) -> list[int]:
    """The weights left after each of `levels` levels of pruning `fraction` of the survivors (IMP's counts,
    which depend only on the count: level L's entry is index L - 1)."""
    out = []
    for _ in range(levels):
        kept -= weights_to_prune(kept, fraction)
        out.append(kept)
    return out


def _flatten(mask: Mask, names: list[str]) -> torch.Tensor:
    return torch.cat([mask[n].reshape(-1).cpu() for n in names])


def _unflatten(flat: torch.Tensor, like: Mask, names: list[str]) -> Mask:
    out, start = {}, 0
    for n in names:
        count = like[n].numel()
        out[n] = flat[start:start + count].reshape(like[n].shape).clone()
        start += count
    return {n: out[n] for n in like}  # keep the reference mask's key order


def global_magnitude_prune(weights: dict, mask: Mask, fraction: float) -> Mask:
    """A new mask: `mask` minus the `fraction` of its surviving weights with the smallest |w| globally.

    weights: {name: tensor} holding at least the mask's names (e.g. a state dict of trained weights).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"prune fraction must be in (0, 1), got {fraction}")
    names = sorted(mask)
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"weights lack prunable parameters {missing[:3]}")
    magnitude = torch.cat([weights[n].detach().reshape(-1).float().abs().cpu() for n in names])
    keep = _flatten(mask, names)
    survivors = keep.nonzero().squeeze(1)
    scores = magnitude[survivors]
    if not torch.isfinite(scores).all():
        raise ValueError("the weights to prune are not finite (did training diverge?)")
    remove = survivors[torch.sort(scores, stable=True).indices[:weights_to_prune(len(survivors), fraction)]]
    keep = keep.clone()
    keep[remove] = False
    return _unflatten(keep, mask, names)


def random_prune_global(like: Mask, keep_count: int, generator: torch.Generator) -> Mask:
    """A random mask over `like`'s shapes keeping exactly `keep_count` weights, uniform over all positions."""
    names = sorted(like)
    total = sum(like[n].numel() for n in names)
    if not 0 <= keep_count <= total:
        raise ValueError(f"cannot keep {keep_count} of {total} weights")
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total, generator=generator)[:keep_count]] = True
    return _unflatten(flat, like, names)


def random_prune_layerwise(like: Mask, generator: torch.Generator) -> Mask:
    """A random mask keeping, in every layer, exactly as many weights as `like` keeps there."""
    out = {}
    for n in sorted(like):
        count, k = like[n].numel(), int(like[n].sum())
        flat = torch.zeros(count, dtype=torch.bool)
        flat[torch.randperm(count, generator=generator)[:k]] = True
        out[n] = flat.reshape(like[n].shape)
    return {n: out[n] for n in like}
