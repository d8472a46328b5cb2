"""Per-sample batched augmentation on the training device (kornia), and seeded epoch order.

Each epoch's data is a pure function of (seed, epoch): the order is a seeded permutation and the
standard augmentation (random crop with zero padding, optional flip) is drawn per sample for the whole
split at once under a seed derived from (seed, epoch). So a run can start at any step (rewinding to
500it, resuming after a kill) and see exactly the batches an uninterrupted run sees, and one kornia
call per epoch replaces hundreds of per-batch calls. Crop and flip only move pixels, so the augmented
split stays uint8.
"""

from __future__ import annotations

import hashlib

import torch
import kornia.augmentation as K

from .data import ImageData

_CHUNK = 8192  # images per kornia call: bounds the float32 working memory on CPU


def derive_seed(*parts) -> int:
    """A 63-bit seed from integers and strings, stable across processes (unlike hash())."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def standard_augmentation(data: ImageData) -> K.AugmentationSequential:
    size = tuple(data.train_x.shape[-2:])
    ops = [K.RandomCrop(size, padding=data.crop_padding, fill=0)]
    if data.flip:
        ops.append(K.RandomHorizontalFlip())
    return K.AugmentationSequential(*ops)


def fork_rng(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def augment_split(data: ImageData, seed: int, epoch: int, aug=None) -> torch.Tensor:
    """The whole training split, augmented per sample, for one epoch (uint8, same shape)."""
    aug = aug or standard_augmentation(data)
    device = data.train_x.device
    out = torch.empty_like(data.train_x)
    with fork_rng(device):
        torch.manual_seed(derive_seed(seed, "augment", epoch))
        for start in range(0, len(out), _CHUNK):
            chunk = data.train_x[start:start + _CHUNK].float()
            out[start:start + _CHUNK] = aug(chunk).round_().clamp_(0, 255).to(torch.uint8)
    return out


def epoch_order(n: int, seed: int, epoch: int, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive_seed(seed, "order", epoch))
    return torch.randperm(n, generator=gen).to(device)
