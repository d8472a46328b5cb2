"""Writes a small CIFAR-10-format tree: the same pickled batches torchvision's reader opens."""

import pickle
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10

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


class UncheckedCIFAR10(CIFAR10):
    """torchvision's reader with the md5 checks off (our batches are not the real files)."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}
