"""Writes small CIFAR-10, CIFAR-100 and SVHN files in their real formats: the files torchvision's readers open."""

import pickle
from pathlib import Path

import numpy as np
from scipy.io import savemat
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar_tree(root: Path, per_batch: int = 20, seed: int = 0) -> dict:
    """Five train batches and one test batch of `per_batch` random images; returns what was written."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        data = rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)  # str keys, as the real files read
        written[name] = (data, labels)
    with open(folder / CIFAR10.meta["filename"], "wb") as f:
        pickle.dump({"label_names": NAMES, "num_cases_per_batch": per_batch}, f)
    return written


def write_cifar100_tree(root: Path, train: int = 100, test: int = 40, seed: int = 0) -> dict:
    """CIFAR-100's python version: one `train` and one `test` file with fine and coarse labels, and `meta`."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR100.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in (("train", train), ("test", test)):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": fine, "coarse_labels": [x // 5 for x in fine]}, f)
        written[name] = (data, fine)
    with open(folder / CIFAR100.meta["filename"], "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": []}, f)
    return written


def write_svhn_files(root: Path, train: int = 60, test: int = 30, seed: int = 0) -> dict:
    """SVHN's cropped-digit .mat files: X is 32 x 32 x 3 x N uint8, y is N x 1 with 10 standing for the digit 0."""
    rng = np.random.default_rng(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", train), ("test", test)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
        savemat(Path(root) / SVHN.split_list[split][1], {"X": x, "y": y})
        written[split] = (x, y)
    return written


class UncheckedCIFAR10(CIFAR10):
    """torchvision's reader with the md5 checks off (our batches are not the real files)."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class UncheckedCIFAR100(CIFAR100):
    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


class UncheckedSVHN(SVHN):
    split_list = {split: [url, name, None] for split, (url, name, _) in SVHN.split_list.items()}


def unchecked_readers(monkeypatch) -> None:
    """Make the product open the files above: torchvision's readers without their md5 checks."""
    import torchvision.datasets

    for reader in (UncheckedCIFAR10, UncheckedCIFAR100, UncheckedSVHN):
        monkeypatch.setattr(torchvision.datasets, reader.__mro__[1].__name__, reader)


# The writer of each registered dataset read from files (digits is embedded): a new dataset entry adds its own here.
WRITERS = {"cifar10": write_cifar_tree, "cifar100": write_cifar100_tree, "svhn": write_svhn_files}
