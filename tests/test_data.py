from pathlib import Path

import pytest
import torch

from earlyphase.studies.engine.augment import augment_split, derive_seed, epoch_order, per_chunk, standard_augmentation
from earlyphase.studies.engine.data import load, load_digits, load_torchvision
from earlyphase.studies.engine.errors import UsageError

from cifar_files import (
    UncheckedCIFAR10,
    UncheckedCIFAR100,
    UncheckedSVHN,
    write_cifar100_tree,
    write_cifar_tree,
    write_svhn_files,
)


def test_cifar_tree_goes_through_torchvision(tmp_path):
    written = write_cifar_tree(tmp_path, per_batch=20)
    data = load_torchvision("cifar10", tmp_path, reader=UncheckedCIFAR10)
    assert data.train_x.shape == (100, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (20, 3, 32, 32) and data.num_classes == 10
    raw, labels = written["data_batch_2"]
    # CHW bytes in the file -> the same CHW tensor (torchvision goes through HWC and back)
    assert torch.equal(data.train_x[20:40], torch.from_numpy(raw.reshape(20, 3, 32, 32)))
    assert data.train_y[20:40].tolist() == labels
    assert data.flip and data.crop_padding == 4


def test_missing_cifar_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(UsageError, match=r"cifar-10-batches-py.*--download=true"):
        load_torchvision("cifar10", tmp_path / "nowhere")


def test_corrupt_cifar_is_reported_with_its_path(tmp_path):
    write_cifar_tree(tmp_path)  # md5 sums differ from the real files: the real reader refuses them
    with pytest.raises(UsageError, match=r"corrupt.*cifar-10-batches-py"):
        load_torchvision("cifar10", tmp_path)


def test_cifar100_reads_fine_labels_through_torchvision(tmp_path):
    written = write_cifar100_tree(tmp_path, train=50, test=20)
    data = load_torchvision("cifar100", tmp_path, reader=UncheckedCIFAR100)
    assert data.num_classes == 100 and data.train_x.shape == (50, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    raw, fine = written["train"]
    assert torch.equal(data.train_x, torch.from_numpy(raw.reshape(50, 3, 32, 32)))
    assert data.train_y.tolist() == fine and data.test_y.tolist() == written["test"][1]
    assert data.flip and data.crop_padding == 4


def test_svhn_reads_the_mat_files_with_ten_as_zero_and_no_flip(tmp_path):
    written = write_svhn_files(tmp_path, train=30, test=12)
    data = load_torchvision("svhn", tmp_path, reader=UncheckedSVHN)
    x, y = written["train"]
    assert data.train_x.shape == (30, 3, 32, 32) and data.test_x.shape == (12, 3, 32, 32)
    # X is H x W x C x N in the file: image i channel c is X[:, :, c, i]
    assert torch.equal(data.train_x[3, 1], torch.from_numpy(x[:, :, 1, 3]))
    assert data.train_y.tolist() == [int(v) % 10 for v in y[:, 0]] and 0 in data.train_y.tolist()
    assert not data.flip and data.crop_padding == 4 and data.num_classes == 10


@pytest.mark.parametrize("name, path", [("cifar100", "cifar-100-python"), ("svhn", "train_32x32.mat")])
def test_missing_or_corrupt_torchvision_datasets_name_the_path_and_the_fix(tmp_path, name, path):
    with pytest.raises(UsageError, match=rf"not found at .*{path}: pass --download=true"):
        load(name, str(tmp_path / "nowhere"))
    (write_cifar100_tree if name == "cifar100" else write_svhn_files)(tmp_path)
    with pytest.raises(UsageError, match=rf"at .*{path} is missing files or corrupt.*--download=true"):
        load(name, str(tmp_path))  # the real readers check md5 sums: ours differ


def test_digits_split_and_values():
    data = load_digits()
    assert data.train_x.shape == (1437, 3, 8, 8) and data.test_x.shape == (360, 3, 8, 8)
    assert data.train_x.dtype == torch.uint8 and int(data.train_x.max()) == 255
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])
    assert sorted(torch.bincount(data.test_y).tolist())[0] >= 35  # stratified
    assert not data.flip
    again = load_digits()
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_y, data.test_y)
    x = data.normaliser()(data.train_x)
    assert abs(x.mean().item()) < 1e-3 and x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_augmentation_is_per_sample_and_seeded(tmp_path):
    write_cifar_tree(tmp_path, per_batch=40)
    data = load_torchvision("cifar10", tmp_path, reader=UncheckedCIFAR10)
    aug = augment_split(data, seed=3, epoch=0)
    assert aug.dtype == torch.uint8 and aug.shape == data.train_x.shape
    # find each image's shift by matching against padded originals: the draws must differ across samples
    shifts = set()
    padded = torch.nn.functional.pad(data.train_x[:40].float(), (4, 4, 4, 4))
    for i in range(40):
        found = None
        for dy in range(9):
            for dx in range(9):
                window = padded[i, :, dy:dy + 32, dx:dx + 32]
                if torch.equal(window, aug[i].float()) or torch.equal(window.flip(-1), aug[i].float()):
                    found = (
                        dy,
                        dx,
                        torch.equal(window.flip(-1), aug[i].float()) and not torch.equal(window, aug[i].float()),
                    )
        assert found is not None, "augmented image is not a padded crop (or its flip) of the original"
        shifts.add(found)
    assert len(shifts) > 10
    assert any(s[2] for s in shifts) and not all(s[2] for s in shifts)  # flips drawn per sample
    assert torch.equal(augment_split(data, seed=3, epoch=0), aug)
    assert not torch.equal(augment_split(data, seed=3, epoch=1), aug)


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(100, 0, 0, "cpu")
    assert sorted(a.tolist()) == list(range(100))
    assert torch.equal(a, epoch_order(100, 0, 0, "cpu"))
    assert not torch.equal(a, epoch_order(100, 0, 1, "cpu")) and not torch.equal(a, epoch_order(100, 1, 0, "cpu"))


def augment_with_kornia(data, seed, epoch):
    """augment_split through kornia's own application: the reference the gathered crop and flip must equal."""
    aug = standard_augmentation(data)
    return per_chunk(data.train_x, derive_seed(seed, "augment", epoch),
                     lambda chunk: aug(chunk.float()).round_().clamp_(0, 255).to(torch.uint8))


def test_gathered_crop_and_flip_equal_kornias_own_application():
    from earlyphase.studies.bench.timing import synthetic_cifar

    digits = load_digits()
    cifar_like = synthetic_cifar(600, torch.device("cpu"), seed=4)  # padding 4 and flips, as CIFAR-10
    for data in (digits, cifar_like):
        for epoch in range(3):
            ours = augment_split(data, seed=7, epoch=epoch)
            assert torch.equal(ours, augment_with_kornia(data, seed=7, epoch=epoch))
            assert (ours != data.train_x).any()


def test_table_normaliser_gives_the_cpu_numbers_bit_for_bit():
    """Off the CPU a per-channel table (computed on the CPU) normalises: same float32 values exactly."""
    from earlyphase.studies.bench.timing import synthetic_cifar

    for data in (load_digits(), synthetic_cifar(300, torch.device("cpu"), seed=2)):
        every_level = (
            torch.arange(256, dtype=torch.uint8).view(4, 64).expand(2, data.train_x.shape[1], 4, 64).contiguous()
        )
        for x in (data.train_x[:200], torch.stack([data.train_x[:50], data.train_x[50:100]]), every_level):
            passes, table = data.normaliser(table=False)(x), data.normaliser(table=True)(x)
            assert table.dtype == torch.float32 and table.shape == x.shape
            assert torch.equal(passes, table)
        mean = torch.tensor(data.mean, dtype=torch.float64).view(-1, 1, 1)
        std = torch.tensor(data.std, dtype=torch.float64).view(-1, 1, 1)
        assert torch.allclose(
            data.normaliser()(every_level).double(), (every_level.double() / 255 - mean) / std, atol=1e-5
        )


def test_a_failed_download_leaves_nothing_behind(tmp_path):
    class Offline(UncheckedCIFAR10):
        """torchvision's reader as it behaves without network: folders made, then the download fails."""

        def __init__(self, root, train=True, download=False):
            Path(root, self.base_folder).mkdir(parents=True, exist_ok=True)
            Path(root, self.filename).write_bytes(b"partial")
            raise OSError("<urlopen error [Errno 101] Network is unreachable>")

    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    for root in (tmp_path / "new" / "data", tmp_path / "kept"):
        with pytest.raises(UsageError, match="cannot get CIFAR-10 into .*Network is unreachable"):
            load_torchvision("cifar10", root, download=True, reader=Offline)
    assert not (tmp_path / "new").exists()  # every folder it made is gone
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]  # what was there stays


def test_processes_downloading_into_one_folder_take_turns(tmp_path):
    """Sweep agents on one machine share --data_dir: one downloads, the others wait, then read what it wrote."""
    import threading
    import time

    spans, downloads = [], []

    class Slow(UncheckedCIFAR10):
        """torchvision's reader with a download that takes a while (the batches are written at its end)."""

        def __init__(self, root, train=True, download=False):
            began = time.monotonic()
            if download and not Path(root, self.base_folder).is_dir():
                downloads.append(threading.get_ident())
                time.sleep(0.3)
                write_cifar_tree(root)
            super().__init__(root, train=train, download=False)
            spans.append((began, time.monotonic()))

    root = tmp_path / "data"
    results = []
    fetch = lambda: results.append(load_torchvision("cifar10", root, download=True, reader=Slow))  # noqa: E731
    threads = [threading.Thread(target=fetch) for _ in range(3)]  # each lock its own open file, as processes
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(downloads) == 1 and len(results) == 3
    assert all(torch.equal(r.train_x, results[0].train_x) for r in results)
    calls = sorted(spans)  # two reader calls (train, test) per load, never overlapping another load's
    loads = [(calls[i][0], calls[i + 1][1]) for i in range(0, len(calls), 2)]
    assert all(a[1] <= b[0] for a, b in zip(loads, loads[1:]))
