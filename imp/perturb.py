"""Perturbations of a rewind point (the paper's Section 4), as pure functions on state dicts and masks.

Each perturbation changes only the *surviving* prunable weights (the mask's entries that are True);
pruned weights stay exactly 0, the mask is unchanged, and every other tensor (biases, BatchNorm
parameters and buffers) is copied from the rewind point. "init" is the network's original
initialisation, "rewind" the rewind point (the ticket's unperturbed start state).

- `sign_rewind_mag_init`: each weight gets the rewind point's sign and the initialisation's magnitude.
- `sign_init_mag_rewind`: the reverse: the initialisation's sign, the rewind point's magnitude.
- `random_mag`: the rewind point's signs with fresh magnitudes |N(0, 2 / fan_in)| (the Kaiming-normal
  initialisation the network was drawn from).
- `permute`: the surviving weights of each layer shuffled among the surviving positions (each value
  moves with its sign), so the layer's multiset of values is kept.
- `permute_keep_sign`: the surviving magnitudes of each layer shuffled among the surviving positions,
  each position keeping its own sign (the multiset of magnitudes and every sign are kept).
- `noise`: w + scale * std_l * N(0, 1), with std_l the (population) standard deviation of layer l's
  surviving weights at the rewind point and `scale` the caller's `noise` argument.

Signs: a weight that is exactly 0 counts as positive, so a surviving weight never becomes 0 by
taking a sign. Randomness comes only from the `torch.Generator` passed in, drawn on the CPU in sorted
parameter-name order, so a seed fixes the result whatever the dict order or device.
"""

from __future__ import annotations

import math

import torch

from .masks import Mask

PERTURBATIONS = ("sign_rewind_mag_init", "sign_init_mag_rewind", "random_mag", "permute", "permute_keep_sign", "noise")
NEEDS_INIT = ("sign_rewind_mag_init", "sign_init_mag_rewind")


def parse_perturbations(names) -> tuple[str, ...]:
    """Names (or ["all"]) -> names in the canonical order, duplicates dropped; ValueError on an unknown one."""
    names = list(names)
    if names == ["all"]:
        return PERTURBATIONS
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"unknown perturbation {unknown[0]!r}: choose from {', '.join(PERTURBATIONS)} (or all)")
    return tuple(p for p in PERTURBATIONS if p in names)


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 or -1 (0 counts as positive)."""
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


def kaiming_std(shape) -> float:
    """std of `nn.init.kaiming_normal_` (fan_in, ReLU gain): sqrt(2 / fan_in)."""
    fan_in = shape[1] * math.prod(shape[2:]) if len(shape) > 1 else shape[0]
    return math.sqrt(2.0 / fan_in)


def _layer(w: torch.Tensor, keep: torch.Tensor, init: torch.Tensor | None, generator: torch.Generator,
           noise: float, perturbation: str) -> torch.Tensor:
    """The perturbed surviving values of one layer, as a flat tensor over its kept positions."""
    values = w[keep]
    if perturbation in NEEDS_INIT and init is None:
        raise ValueError(f"{perturbation} needs the initialisation")
    if perturbation == "sign_rewind_mag_init" and init is not None:
        return sign(values) * init[keep].abs()
    if perturbation == "sign_init_mag_rewind" and init is not None:
        return sign(init[keep]) * values.abs()
    if perturbation == "random_mag":
        draws = torch.randn(values.shape, generator=generator, dtype=values.dtype)
        return sign(values) * (draws * kaiming_std(w.shape)).abs()
    if perturbation == "permute":
        return values[torch.randperm(len(values), generator=generator)]
    if perturbation == "permute_keep_sign":
        return sign(values) * values.abs()[torch.randperm(len(values), generator=generator)]
    if perturbation == "noise":
        std = values.std(correction=0) if len(values) else values.new_zeros(())
        return values + noise * std * torch.randn(values.shape, generator=generator, dtype=values.dtype)
    raise ValueError(f"unknown perturbation {perturbation!r}: choose from {', '.join(PERTURBATIONS)}")


def perturb(perturbation: str, rewind: dict, mask: Mask, generator: torch.Generator, *,
            init: dict | None = None, noise: float = 1.0) -> dict:
    """A copy of the state dict `rewind` with the surviving weights of every masked layer perturbed.

    rewind: the ticket's start state (pruned weights may hold anything; they come out exactly 0).
    mask: {name: bool tensor}, the prunable layers; init: the original initialisation (needed by the
    sign/magnitude swaps); generator: the only source of randomness; noise: the scale of `noise`.
    """
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {perturbation!r}: choose from {', '.join(PERTURBATIONS)}")
    if perturbation in NEEDS_INIT and init is None:
        raise ValueError(f"{perturbation} needs the initialisation (init=...)")
    if perturbation == "noise" and not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise scale must be a finite number >= 0, got {noise}")
    missing = [
        n for n in mask if n not in rewind or (init is not None and perturbation in NEEDS_INIT and n not in init)
    ]
    if missing:
        raise ValueError(f"the state lacks masked parameters {missing[:3]}")
    out = {name: tensor.detach().clone() for name, tensor in rewind.items()}
    for name in sorted(mask):
        w = rewind[name].detach().cpu()
        keep = mask[name].cpu().bool()
        if keep.shape != w.shape:
            raise ValueError(f"mask for {name!r} has shape {tuple(keep.shape)}, the state {tuple(w.shape)}")
        ref = init[name].detach().cpu().to(w.dtype) if init is not None and perturbation in NEEDS_INIT else None
        if ref is not None and ref.shape != w.shape:
            raise ValueError(f"init {name!r} has shape {tuple(ref.shape)}, the rewind point {tuple(w.shape)}")
        new = torch.zeros_like(w)
        new[keep] = _layer(w, keep, ref, generator, noise, perturbation)
        out[name] = new.to(rewind[name].device)
    return out
