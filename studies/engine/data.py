"""Datasets held whole as uint8 tensors on the training device; which ones exist, and their augmentation (crop padding,
flip): engine/dataset_registry.py.

- `digits` (the embedded default): scikit-learn's 1,797 real 8x8 digit images, grey levels 0..16 scaled
  to 0..255 and repeated to 3 channels, kept at their native 8x8 (the CIFAR ResNet pools globally, so
  it runs on any size). Fixed stratified split (seed 0): 1,437 train / 360 test.
- `cifar10`, `cifar100` (fine labels), `svhn` (train and test splits; torchvision maps label 10 to digit 0):
  read by torchvision's readers from `--data_dir` (they download only with `--download`, and check the files'
  md5 sums). Normalised with ImageNet mean/std, as the reference code does for CIFAR-10 (decision: the
  same for all three; it only centres the inputs).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import dataset_registry
from .errors import UsageError
from .locks import RunLock

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DOWNLOAD_LOCK = ".download.lock"  # in --data_dir while a process downloads into it


@dataclass(frozen=True)
class ImageData:
    name: str
    train_x: torch.Tensor  # uint8, N x C x H x W
    train_y: torch.Tensor  # int64, N
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple
    std: tuple
    crop_padding: int  # standard augmentation: random crop with this zero padding
    flip: bool  # standard augmentation: random horizontal flip

    def to(self, device) -> "ImageData":
        move = lambda t: t.to(device)  # noqa: E731
        return replace(self, train_x=move(self.train_x), train_y=move(self.train_y),
                       test_x=move(self.test_x), test_y=move(self.test_y))

    def iterations_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.train_y) // batch_size)  # the last, smaller batch is kept (391 for CIFAR-10)

    def normaliser(self, table: bool | None = None):
        """A function uint8 images [..., C, H, W] -> normalised float32, (x / 255 - mean) / std.

        On the CPU: four in-place passes. Elsewhere (`table`, default: off the CPU) through a table of each
        channel's 256 values computed by those same passes on the CPU: every device then gets the CPU's
        numbers bit for bit, in one gather. (PyTorch's CUDA kernel divides by a Python scalar through its
        reciprocal, which "may lose one bit": the suspected source of the 5e-6 CUDA-vs-CPU weight
        difference the GPU suite reported, as training amplifies any input difference.) The constants are made once
        here (made per batch they are a host->device copy, which syncs the host on CUDA), so callers keep
        the returned function."""
        channels, device = self.train_x.shape[-3], self.train_x.device
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

        def passes(x_uint8, mean=mean, std=std):
            return x_uint8.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)  # no temporaries

        if table is None:
            table = device.type != "cpu"
        if not table:
            return passes
        levels = torch.arange(256, dtype=torch.uint8).expand(channels, 1, 256)
        values = passes(levels).flatten().to(device)
        offsets = (256 * torch.arange(channels, device=device)).view(-1, 1, 1)
        return lambda x_uint8: values[x_uint8.long() + offsets]


def load_digits() -> ImageData:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # N x 8 x 8
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target
    )
    to_x = lambda a: torch.from_numpy(a).unsqueeze(1).repeat(1, 3, 1, 1).contiguous()  # noqa: E731
    mean = float(x_tr.mean() / 255.0)
    std = float(x_tr.std() / 255.0)
    entry = dataset_registry.entry("digits")
    return ImageData("digits", to_x(x_tr), torch.from_numpy(y_tr).long(), to_x(x_te), torch.from_numpy(y_te).long(),
                     entry.num_classes, (mean,) * 3, (std,) * 3, entry.crop_padding, entry.flip)


@dataclass(frozen=True)
class _Layout:
    """How one torchvision reader lays out its files and arrays."""

    files: Callable  # reader -> (path below the root that must exist, paths a download creates)
    open_split: Callable  # (reader class, root, train, download) -> reader instance
    arrays: Callable  # reader instance -> (uint8 N x C x H x W ndarray, int labels)


def _cifar_files(reader):
    return reader.base_folder, (reader.base_folder, getattr(reader, "filename", ""))


def _svhn_files(reader):
    names = tuple(reader.split_list[split][1] for split in ("train", "test"))
    return names[0], names


_LAYOUTS = {
    "CIFAR10": _Layout(_cifar_files, lambda r, root, train, dl: r(root, train=train, download=dl),
                       lambda d: (d.data.transpose(0, 3, 1, 2), d.targets)),
    "SVHN": _Layout(_svhn_files, lambda r, root, train, dl: r(root, split="train" if train else "test", download=dl),
                    lambda d: (d.data, d.labels)),
}
_LAYOUTS["CIFAR100"] = _LAYOUTS["CIFAR10"]


def load_torchvision(name: str, data_dir: str | Path, download: bool = False, reader=None) -> ImageData:
    """A registered dataset through its torchvision reader (`reader`: that class, or a subclass in tests)."""
    entry = dataset_registry.entry(name)
    if reader is None:
        import torchvision.datasets

        reader = getattr(torchvision.datasets, entry.reader)
    layout = _LAYOUTS[entry.reader]
    root = Path(data_dir).expanduser()
    needed, created_by_download = layout.files(reader)
    if not download and not (root / needed).exists():
        raise UsageError(
            f"{entry.title} not found at {root / needed}: pass --download=true, or put torchvision's "
            f"{entry.title} files there (--data_dir sets the parent folder)"
        )
    lock = root / DOWNLOAD_LOCK
    created = _missing_paths(root, *(root / p for p in created_by_download if p), *([lock] if download else []))
    try:
        # several processes (sweep agents) may download into one folder: one at a time, the others then find it
        with RunLock(root, DOWNLOAD_LOCK, f"downloading {entry.title} into") if download else contextlib.nullcontext():
            splits = [layout.open_split(reader, str(root), train, download) for train in (True, False)]
    except (RuntimeError, ValueError) as err:  # "Dataset not found or corrupted"; a .mat file scipy cannot read
        _remove_if_created(created)
        raise UsageError(
            f"{entry.title} at {root / needed} is missing files or corrupt ({err}); "
            f"delete {'that folder' if entry.reader != 'SVHN' else 'its .mat files'} and rerun with --download=true"
        ) from None
    except OSError as err:  # no network, refused connection, ...
        _remove_if_created(created)
        raise UsageError(f"cannot get {entry.title} into {root / needed}: {err}") from None
    (train_x, train_y), (test_x, test_y) = (layout.arrays(split) for split in splits)
    to_x = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    to_y = lambda labels: torch.as_tensor(np.asarray(labels), dtype=torch.long)  # noqa: E731
    return ImageData(name, to_x(train_x), to_y(train_y), to_x(test_x), to_y(test_y), entry.num_classes,
                     IMAGENET_MEAN, IMAGENET_STD, entry.crop_padding, entry.flip)


def _missing_paths(root: Path, *inside: Path) -> list[Path]:
    """The paths a download may create that do not exist yet: root and its missing parents, and `inside`."""
    missing, path = [], root.absolute()
    while not path.exists():
        missing.append(path)
        path = path.parent
    return [p for p in inside if not p.exists()] + missing


def _remove_if_created(paths: list[Path]) -> None:
    """After a failed download: remove what it created (a partial archive, empty folders), nothing else."""
    for path in paths:  # files first, then folders from the deepest
        if path.is_file():
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def load(name: str, data_dir: str = "", download: bool = False) -> ImageData:
    if name not in dataset_registry.NAMES:
        raise UsageError(f"unknown dataset {name!r}: choose one of {', '.join(dataset_registry.NAMES)}")
    return load_digits() if name == "digits" else load_torchvision(name, data_dir, download)
