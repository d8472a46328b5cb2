"""The pretext tasks as a library: exact rotations, fixed random labels, blur, SimCLR views, options, registry."""

from importlib.metadata import EntryPoint

import numpy as np
import pytest
import torch

from earlyphase.pretext import registry
from earlyphase.pretext.base import PretextTask, TaskInfo, declared_options, parse_args
from earlyphase.pretext.blur import Blur
from earlyphase.pretext.random_labels import RandomLabels
from earlyphase.pretext.rotation import Rotation
from earlyphase.pretext.simclr import SimCLR
from earlyphase.studies.jobs.config import with_task_options
from earlyphase.studies.jobs.pretrain import PretrainConfig, flag_for

BUILT_INS = {"supervised", "rotation", "simclr", "random_labels", "blur"}


def digits_info(**kw):
    return TaskInfo(**{"num_examples": 1437, "image_size": (8, 8), "mean": (0.3,) * 3, "std": (0.4,) * 3,
                       "flip": False, **kw})


def test_rotation_is_exact_rot90_per_label():
    torch.manual_seed(0)
    x = torch.arange(64 * 3 * 5 * 5, dtype=torch.float32).view(64, 3, 5, 5)  # asymmetric under every rotation
    inputs, k = Rotation(TaskInfo(image_size=(5, 5))).batch(x, torch.zeros(64, dtype=torch.long), torch.arange(64))
    assert k.dtype == torch.long and set(k.tolist()) == {0, 1, 2, 3}  # all four labels appear in 64 draws
    for i in range(64):
        expected = np.rot90(x[i].numpy(), k[i].item(), axes=(1, 2))  # k quarter turns counter-clockwise
        assert np.array_equal(inputs[i].numpy(), expected)
    # Counter-clockwise, spelled out: [[1, 2], [3, 4]] turned by 90 degrees.
    quarter = Rotation(TaskInfo(image_size=(2, 2))).batch
    square = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    torch.manual_seed(0)
    while True:  # draw until label 1 comes up
        out, label = quarter(square, torch.zeros(1, dtype=torch.long), torch.arange(1))
        if label.item() == 1:
            break
    assert out.view(2, 2).tolist() == [[2.0, 4.0], [1.0, 3.0]]


def test_rotation_all_four_and_head():
    x = torch.randn(3, 3, 4, 4)
    task = Rotation(TaskInfo(image_size=(4, 4)), all_four="true")
    inputs, k = task.batch(x, torch.zeros(3, dtype=torch.long), torch.arange(3))
    assert inputs.shape == (12, 3, 4, 4) and k.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert torch.equal(inputs[7], torch.rot90(x[1], 2, dims=(-2, -1)))
    assert task.head(16, 10)(torch.randn(2, 16)).shape == (2, 4)
    with pytest.raises(ValueError, match="square"):
        Rotation(TaskInfo(image_size=(4, 6)))


def test_random_labels_seeded_fixed_and_at_chance():
    n = 5000
    info = TaskInfo(seed=7, num_examples=n)
    y = torch.randint(10, (n,), generator=torch.Generator().manual_seed(1))
    idx = torch.randperm(n)
    task = RandomLabels(info)
    _, first = task.batch(None, y[idx], idx)
    other = torch.randperm(n)  # another epoch, another order
    _, again = task.batch(None, y[other], other)
    assert torch.equal(first[idx.argsort()], again[other.argsort()])
    assert torch.equal(RandomLabels(info).batch(None, y[idx], idx)[1], first)  # same seed, same labels
    assert not torch.equal(RandomLabels(TaskInfo(seed=8, num_examples=n)).batch(None, y[idx], idx)[1], first)
    assert first.min() >= 0 and first.max() <= 9
    assert abs((first != y[idx]).float().mean().item() - 0.9) < 0.02  # a random label is right 1 time in 10
    half = RandomLabels(info, fraction=0.5)
    assert int(half.relabelled.sum()) == n // 2
    assert abs((half.batch(None, y, torch.arange(n))[1] != y).float().mean().item() - 0.45) < 0.03
    with pytest.raises(ValueError, match="fraction"):
        RandomLabels(info, fraction=1.5)


@pytest.mark.parametrize("gaussian", [False, True])
def test_blur_removes_high_frequencies_and_keeps_constants(gaussian):
    checker = (torch.arange(32).view(-1, 1) + torch.arange(32)) % 2 * 2.0 - 1.0  # +-1, zero mean
    x = checker.expand(2, 3, 32, 32).clone()
    task = Blur(TaskInfo(image_size=(32, 32)), gaussian=gaussian)
    blurred, labels = task.batch(x, torch.tensor([3, 5]), torch.arange(2))
    assert labels.tolist() == [3, 5]
    assert blurred.pow(2).sum() < 0.05 * x.pow(2).sum()
    smooth = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)  # low frequencies survive
    assert task.batch(smooth, None, None)[0].pow(2).sum() > 0.8 * smooth.pow(2).sum()
    constant = torch.full((2, 3, 32, 32), -0.7)
    assert torch.allclose(task.batch(constant, None, None)[0], constant, atol=1e-6)
    with pytest.raises(ValueError, match="factor"):
        Blur(TaskInfo(image_size=(8, 8)), factor=9)


def test_simclr_views_differ_and_pair_up():
    torch.manual_seed(0)
    info = digits_info()
    mean, std = info.normalisation("cpu")
    x = (torch.rand(16, 3, 8, 8) - mean) / std
    task = SimCLR(info, out_dim=8)
    views, partner = task.batch(x, None, torch.arange(16))
    assert views.shape == (32, 3, 8, 8)
    assert ((views[:16] - views[16:]).flatten(1).abs().amax(1) > 1e-3).all()  # every pair differs
    assert partner[:16].tolist() == list(range(16, 32)) and partner[16:].tolist() == list(range(16))
    head = task.head(16, 10)
    z = head(torch.randn(32, 16))
    assert z.shape == (32, 8) and task.loss(z, partner).ndim == 0
    # Identical pair embeddings are retrieved perfectly; the loss prefers them.
    base = torch.randn(16, 8)
    assert task.correct(torch.cat([base, base]), partner).item() == 32
    assert task.loss(torch.cat([base, base]), partner) < task.loss(torch.cat([base, torch.randn(16, 8)]), partner)
    for bad, message in (({"temperature": 0}, "temperature=0.0: must be > 0"), ({"out_dim": 0}, "out_dim=0"),
                         ({"min_scale": 1.5}, "min_scale=1.5: must be in")):  # names the one value at fault
        with pytest.raises(ValueError, match=message):
            SimCLR(info, **bad)


def test_options_are_typed_checked_and_match_the_config_fields():
    assert parse_args("a=1, b = x") == {"a": "1", "b": "x"}
    with pytest.raises(ValueError, match="key=value"):
        parse_args("a")
    with pytest.raises(ValueError, match="has no option 'temp'; it takes: temperature, out_dim, min_scale"):
        SimCLR(digits_info(), temp=0.1)
    with pytest.raises(ValueError, match="expected int"):
        Blur(digits_info(), factor="2.5")
    assert SimCLR(digits_info(), temperature="0.2").temperature == 0.2
    every = with_task_options(PretrainConfig).__dataclass_fields__  # the tasks' options, added from their declarations
    defaults = {f: every[f].default for f in every}
    for plugin in registry.discover():
        if plugin.name in BUILT_INS:
            for key, declared in declared_options(plugin.task).items():
                field = every[flag_for(plugin.name, key)]
                assert defaults[field.name] == declared.default and field.metadata["help"] == declared.help
                assert declared.help, (plugin.name, key)  # every built-in option explains itself


def test_registry_lists_built_ins_and_tolerates_broken_plugins(monkeypatch):
    found = {p.name: p for p in registry.discover()}
    assert BUILT_INS <= set(found)
    assert all(found[n].task is not None and found[n].distribution.startswith("earlyphase ") for n in BUILT_INS)
    fake = [EntryPoint("rotation", "earlyphase.pretext.rotation:Rotation", registry.GROUP),
            EntryPoint("broken", "no_such_module_xyz:Task", registry.GROUP),
            EntryPoint("notatask", "torch.nn:Linear", registry.GROUP),
            EntryPoint("rotation", "earlyphase.pretext.blur:Blur", registry.GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep for ep in fake if ep.group == group])
    listed = registry.discover()
    assert [p.name for p in listed] == ["broken", "notatask", "rotation", "rotation"]
    assert "ModuleNotFoundError" in listed[0].error and "no_such_module_xyz" in listed[0].error
    assert "not a subclass" in listed[1].error
    assert listed[2].task is Rotation and "duplicate name" in listed[3].error
    assert registry.load("rotation").task is Rotation
    with pytest.raises(ValueError, match="pretext 'broken' .* failed to load: ModuleNotFoundError"):
        registry.load("broken")
    with pytest.raises(ValueError, match="unknown pretext 'nope': choose one of broken, notatask, rotation"):
        registry.load("nope")


def test_base_task_is_supervised_identity():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([1, 2, 3, 4])
    task = PretextTask()
    assert task.batch(x, y, None) == (x, y) and task.head(8, 10) is None and task.settings() == {}
