"""Pruning masks: which weights are prunable, and densities.

A mask is a dict {parameter name: bool tensor of the parameter's shape}; True keeps a weight. It
names exactly the prunable parameters (a parameter outside the mask is never pruned). On disk it is
`mask.pt` in the same form; the trainer accepts it as is (it casts to the parameter dtype).

The prunable set (the paper's, for ResNet-20): the weight of every convolution and linear layer,
including the first convolution, the 1x1 projection shortcuts and the final classifier. Biases and
BatchNorm parameters are never pruned. `ignore` removes named parameters (or modules, meaning their
`.weight`) from the set.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

Mask = dict  # {parameter name: bool tensor}

PRUNABLE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_names(model: nn.Module, ignore: Iterable[str] = ()) -> list[str]:
    """Names of the prunable weights of `model`, in the model's parameter order, minus `ignore`.

    `ignore` holds parameter names (`fc.weight`) or module names (`fc`); a name that matches no
    prunable weight raises ValueError, so a typo never silently prunes a layer meant to be kept.
    """
    names = [f"{m_name}.weight" if m_name else "weight"
             for m_name, module in model.named_modules() if isinstance(module, PRUNABLE_MODULES)]
    dropped = set()
    for item in ignore:
        name = item if item in names else f"{item}.weight"
        if name not in names:
            raise ValueError(f"prune_ignore: {item!r} is not a prunable weight; prunable weights are e.g. "
                             f"{', '.join(names[:2])} ... {names[-1]}")
        dropped.add(name)
    return [n for n in names if n not in dropped]


def dense_mask(model: nn.Module, names: Iterable[str]) -> Mask:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in names}


def kept(mask: Mask) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def size(mask: Mask) -> int:
    return int(sum(m.numel() for m in mask.values()))


def density(mask: Mask) -> float:
    """Fraction of the prunable weights kept."""
    total = size(mask)
    return kept(mask) / total if total else 1.0


def density_report(mask: Mask) -> dict:
    """Total and per-layer density, as written to `density.json`."""
    return {"density": density(mask), "kept": kept(mask), "prunable": size(mask),
            "layers": {n: {"density": float(m.float().mean()), "kept": int(m.sum()), "size": m.numel()}
                       for n, m in mask.items()}}


def is_nested(inner: Mask, outer: Mask) -> bool:
    """True when every weight kept by `inner` is kept by `outer` (a pruned weight never comes back)."""
    return inner.keys() == outer.keys() and all(not (inner[n] & ~outer[n]).any() for n in inner)


def check_mask(mask: Mask, model: nn.Module, names: Iterable[str] | None = None) -> None:
    """ValueError unless `mask` is a bool mask whose entries match `model`'s parameters (and `names`, if given)."""
    params = dict(model.named_parameters())
    if not isinstance(mask, dict):
        raise ValueError(f"a mask is a dict {{parameter name: bool tensor}}, got {type(mask).__name__}")
    for n, m in mask.items():
        if n not in params:
            raise ValueError(f"mask names {n!r}, which the model does not have")
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != params[n].shape:
            raise ValueError(f"mask entry {n!r} must be a bool tensor of shape {tuple(params[n].shape)}")
    if names is not None and set(mask) != set(names):
        extra, missing = sorted(set(mask) - set(names)), sorted(set(names) - set(mask))
        raise ValueError(f"mask does not cover the prunable weights (extra: {extra[:3]}, missing: {missing[:3]})")
