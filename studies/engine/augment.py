"""Per-sample batched augmentation on the training device (kornia), and seeded epoch order.

Each epoch's data is a pure function of (seed, epoch): the order is a seeded permutation and the
standard augmentation (random crop with zero padding, optional flip) is drawn per sample for the whole
split at once under a seed derived from (seed, epoch). So a run can start at any step (rewinding to
500it, resuming after a kill) and see exactly the batches an uninterrupted run sees, and one kornia
call per epoch replaces hundreds of per-batch calls. Crop and flip only move pixels, so the augmented
split stays uint8.

kornia draws every sample's crop offset and flip (`forward_parameters`); applying them is then two
`torch.gather`s on the uint8 split instead of kornia's float crop-and-warp, pixel for pixel the same
images (tests/test_data.py compares both) at a fraction of the cost: on an H200 kornia's application
took 0.49 s per CIFAR-10 epoch, longer than the epoch's ~0.4 s of graphed training steps.
"""

from __future__ import annotations

import hashlib

import kornia.augmentation as K
import torch

from .data import ImageData

_CHUNK = 8192  # images per kornia call: bounds the float32 working memory on CPU


def derive_seed(*parts) -> int:
    """A 63-bit seed from integers and strings, stable across processes (unlike hash())."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_task_step(seed: int, step: int) -> None:
    """Before each step of a stochastic task (random views, rotations): its draws come from (run seed, step), so a
    run resumed or rewound at any step draws what an uninterrupted one does. Both training loops call it."""
    torch.manual_seed(derive_seed(seed, "batch", step))


def standard_augmentation(data: ImageData) -> K.AugmentationSequential:
    height, width = data.train_x.shape[-2:]
    ops: list[K.AugmentationBase2D] = [K.RandomCrop((height, width), padding=data.crop_padding, fill=0)]
    if data.flip:
        ops.append(K.RandomHorizontalFlip())
    return K.AugmentationSequential(*ops)


def fork_rng(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def augment_split(data: ImageData, seed: int, epoch: int, aug=None) -> torch.Tensor:
    """The whole training split, augmented per sample, for one epoch (uint8, same shape)."""
    return augment_images(data, data.train_x, derive_seed(seed, "augment", epoch), aug)


def augment_images(data: ImageData, images: torch.Tensor, seed: int, aug=None) -> torch.Tensor:
    """`images` (uint8, from the training split) augmented per sample under `seed` (uint8, same shape)."""
    aug = aug or standard_augmentation(data)
    return per_chunk(images, seed, lambda chunk: crop_and_flip(chunk, aug.forward_parameters(chunk.shape),
                                                                data.crop_padding))


def per_chunk(images: torch.Tensor, seed: int, augment) -> torch.Tensor:
    """augment(chunk) over `images` in chunks, under `seed` (the draws run on in order)."""
    out = torch.empty_like(images)
    with fork_rng(images.device):
        torch.manual_seed(seed)
        for start in range(0, len(out), _CHUNK):
            out[start:start + _CHUNK] = augment(images[start:start + _CHUNK])
    return out


def crop_and_flip(images: torch.Tensor, params: list, padding: int) -> torch.Tensor:
    """Apply kornia's drawn RandomCrop (zero padding) and RandomHorizontalFlip parameters to uint8 images."""
    n, c, h, w = images.shape
    by_op = {p.name.rsplit("_", 1)[0]: p.data for p in params}
    corner = by_op["RandomCrop"]["src"][:, 0].round().long().to(images.device)  # (x, y) in the padded image
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    rows = corner[:, 1:2] + torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device).expand(n, w)
    if "RandomHorizontalFlip" in by_op:
        flip = by_op["RandomHorizontalFlip"]["batch_prob"].to(images.device) > 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    cols = corner[:, 0:1] + cols
    picked = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded.shape[3]))
    return picked.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def epoch_order(n: int, seed: int, epoch: int, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive_seed(seed, "order", epoch))
    return torch.randperm(n, generator=gen).to(device)
