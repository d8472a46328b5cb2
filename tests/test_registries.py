"""The model and dataset registries: the paper's other networks (open_lth's counts), their defaults, the interface
every model meets, and VGG, CIFAR-100 and SVHN through every job."""

import json
import math
from pathlib import Path

import pytest
import torch

from earlyphase.studies import cli
from earlyphase.studies.engine import dataset_registry, model_registry, models
from earlyphase.studies.engine.data import load as load_dataset
from earlyphase.studies.jobs import setup
from earlyphase.studies.jobs.config import ImpConfig, TrainConfig, run_dir, run_name
from earlyphase.studies.jobs.flags import parse_overrides

from cifar_files import WRITERS, unchecked_readers, write_cifar100_tree, write_cifar_tree, write_svhn_files
from conftest import load, one_line_error, run_cli

OPEN_LTH_COUNTS = {  # open_lth's models/test: parameters at the default widths (VGG 64, ResNet 16)
    "cifar_vgg11": 9_231_114, "cifar_vgg13": 9_416_010, "cifar_vgg16": 14_728_266, "cifar_vgg19": 20_040_522,
    "cifar_resnet20": 272_474, "cifar_resnet56": 855_770, "cifar_resnet110": 1_730_714,
}


def _one_step(dataset: str, model: str, root: Path, capsys) -> Path:
    """`earlyphase train` of one step on `dataset` (its files written first where it has them); the run directory,
    checked to be the one the naming policy gives."""
    argv = [f"--dataset={dataset}", f"--model={model}", "--width=4", "--batch_size=8", "--training_steps=1it",
            "--milestone_steps=", f"--data_dir={root / 'data'}", f"--out={root / 'runs'}"]
    if dataset != "digits":
        WRITERS[dataset](root / "data")  # a dataset read from files needs a writer of small ones (cifar_files.py)
    code, stdout, err = run_cli(["train", *argv], capsys)
    assert code == 0, err
    run = Path(stdout.strip().splitlines()[-1])
    assert run.name == run_dir("train", setup.validate(parse_overrides(TrainConfig, argv))).name
    assert json.loads((run / "summary.json").read_text())["end_step"] == 1
    return run


@pytest.mark.parametrize("entry", dataset_registry.DATASETS, ids=lambda d: d.name)
def test_every_dataset_entry_loads_as_it_says_and_trains_a_step(entry, tmp_path, monkeypatch, capsys):
    """Like timm's tests over list_models(): every registry entry, so a new dataset is checked by being added."""
    unchecked_readers(monkeypatch)
    run = _one_step(entry.name, "cifar_resnet8", tmp_path, capsys)
    data = load_dataset(entry.name, str(tmp_path / "data"))
    assert (data.num_classes, data.train_x.shape[-1], data.crop_padding, data.flip) == (
        entry.num_classes, entry.image_size, entry.crop_padding, entry.flip)
    assert load(run / "final.pt")["model"]["fc.weight"].shape[0] == entry.num_classes


@pytest.mark.parametrize("family", model_registry.FAMILIES, ids=lambda f: f.prefix)
def test_every_model_family_builds_its_depths_and_trains_a_step(family, tmp_path, monkeypatch, capsys):
    """Every family: each registered depth builds through its entry (as timm lists it), a depth that is valid but
    not registered builds too (where the family has one), and the smallest trains a step on the first dataset large
    enough for it."""
    import timm

    assert {f"{family.prefix}{d}" for d in family.depths} <= set(timm.list_models(f"{family.prefix}*"))
    for depth in family.depths:
        with torch.device("meta"):
            model = models.create(f"{family.prefix}{depth}", width=4)
        assert isinstance(model, models.network_class(family)) and model.num_classes == 10
    unregistered = [d for d in range(2, 200) if d not in family.depths and _valid(family, d)][:1]
    for depth in unregistered:
        with torch.device("meta"):
            assert isinstance(models.create(f"{family.prefix}{depth}", width=4), models.network_class(family))
    dataset = next(d.name for d in dataset_registry.DATASETS if d.image_size >= 2 ** family.halvings)
    unchecked_readers(monkeypatch)
    _one_step(dataset, f"{family.prefix}{min(family.depths)}", tmp_path, capsys)


def _valid(family, depth: int) -> bool:
    try:
        family.check_depth(depth)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name, count", OPEN_LTH_COUNTS.items())
def test_parameter_counts_are_open_lths(name, count):
    with torch.device("meta"):  # counting needs no memory
        model = models.create(name)
    assert sum(p.numel() for p in model.parameters()) == count


def test_vgg_plan_width_init_and_image_size():
    torch.manual_seed(0)
    model = models.create("cifar_vgg16", width=8)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert all(c.bias is not None for c in convs) and model.num_features == 64 and model.fc.in_features == 64
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 4
    w = convs[5].weight  # 32 x 32 x 3 x 3: fan_in 288
    assert w.std().item() == pytest.approx(math.sqrt(2 / 288), rel=0.1)
    gammas = torch.cat([m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert gammas.min() >= 0 and gammas.max() < 1 and gammas.std() > 0.2
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    model.reset_classifier(100)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100) and model.fc.in_features == 64


def test_family_defaults_fill_unset_fields_and_leave_resnet_run_names_as_they_were():
    vgg = ImpConfig(model="cifar_vgg11", dataset="cifar10").resolved()
    assert (vgg.width, vgg.prune_ignore, vgg.lr, vgg.training_steps) == (64, "fc.weight", 0.1, "160ep")
    resnet = ImpConfig().resolved()
    assert (resnet.width, resnet.prune_ignore, resnet.rewind_step) == (16, "", "24it")
    name = lambda argv: run_name("imp", parse_overrides(ImpConfig, argv))  # noqa: E731
    # the defaults name nothing: spelling them out is the same run, for either family
    assert name(["--width=16", "--prune_ignore="]) == name([]) == "imp_20565609a5d2"  # as before the registry
    vgg_args = ["--model=cifar_vgg11", "--dataset=cifar10"]
    assert name(vgg_args + ["--width=64", "--prune_ignore=fc.weight"]) == name(vgg_args)
    assert name(vgg_args + ["--prune_ignore="]) != name(vgg_args)  # pruning the classifier too is another condition


@pytest.mark.parametrize("argv, words", [
    (["--model=cifar_vgg11"], ["needs images of at least 32x32", "digits", "--dataset=cifar10 or cifar100 or svhn"]),
    (["--model=cifar_vgg12", "--dataset=cifar10"], ["11, 13, 16 or 19"]),
    (["--model=cifar_resnet18"], ["multiple of 6"]),
    (["--model=no_such_net"], ["unknown model", "cifar_vgg{11,13,16,19}", "timm"]),
    (["--model=mobilenetv3_small_050"], ["lacks fc", "Adding a model"]),
    (["--model=resnet10t", "--width=8"], ["--width=8 applies to earlyphase's own families"]),
    (["--dataset=imagenet"], ["unknown dataset", "cifar100", "svhn"]),
])
def test_models_and_datasets_that_cannot_work_are_refused_in_one_line(argv, words, capsys, out):
    code, _, err = run_cli(["imp", *argv, f"--out={out}"], capsys)
    one_line_error(code, err, *words)
    assert not out.exists()  # refused before anything is written


def test_vgg_through_a_study_with_every_condition_control_perturbation_and_stability(tmp_path, monkeypatch, capsys):
    unchecked_readers(monkeypatch)
    write_cifar_tree(tmp_path / "data", per_batch=16)
    runs = tmp_path / "runs"
    args = ["study", "--cross_levels=none",
            "--preset=paper", "--model=cifar_vgg11", "--width=8", "--batch_size=32", "--training_steps=6it",
            "--milestone_steps=4it", "--rewind_step=2it", "--pretrain_steps=2it", "--pretrain_budgets=", "--levels=1",
            "--seeds=0", "--controls=random_reinit,random_prune_global,random_prune_layerwise",
            "--perturb=permute,noise", "--stability=0,1", "--stability_points=1", "--eval_every=1",
            f"--data_dir={tmp_path / 'data'}", f"--out={runs}"]
    assert cli.main(args) == 0
    study_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    data = json.loads((study_dir / "report" / "report.json").read_text())
    assert [c["label"] for c in data["conditions"]] == ["reset", "rewind 2it", "blur 2it", "random_labels 2it",
                                                        "rotation 2it", "simclr 2it"]
    for unit in json.loads((study_dir / "study.json").read_text())["units"]:
        imp_dir = runs / unit["imp_dir"]
        config = json.loads((imp_dir / "config.json").read_text())
        assert (config["model"], config["width"], config["prune_ignore"]) == ("cifar_vgg11", 8, "fc.weight")
        mask = load(imp_dir / "level_1" / "mask.pt")
        assert "fc.weight" not in mask and "fc.bias" not in mask  # the classifier is never pruned (open_lth's default)
        assert bool(load(imp_dir / "level_1" / "final.pt")["model"]["fc.weight"].ne(0).all())
        kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
        assert kept == pytest.approx(0.8, abs=1e-3)  # the convs are: 20% of them at level 1
        for level in (0, 1):  # both start states got an instability analysis on VGG
            entry, = json.loads((imp_dir / f"level_{level}" / "stability" / "stability.json").read_text()).values()
            assert entry["level"] == level and len(entry["path"]) == 3 and math.isfinite(entry["instability"])
        if "pretrain_dir" in unit:  # the pretext heads sat on VGG's 64 features; the rewind point has a 10-way fc
            assert load(runs / unit["pretrain_dir"] / "rewind_point.pt")["model"]["fc.weight"].shape == (10, 64)
    rewind = next(u for u in json.loads((study_dir / "study.json").read_text())["units"] if u["condition"] == "rewind")
    parts = {p.name for p in (runs / rewind["imp_dir"] / "level_1").iterdir() if p.is_dir()}
    assert {"random_reinit", "random_prune_global", "random_prune_layerwise", "perturb_permute",
            "perturb_noise"} <= parts


@pytest.mark.parametrize("dataset, writer, model, classes", [
    ("cifar100", write_cifar100_tree, "cifar_resnet20", 100), ("svhn", write_svhn_files, "cifar_vgg13", 10)])
def test_cifar100_and_svhn_train_tickets(tmp_path, monkeypatch, capsys, dataset, writer, model, classes):
    unchecked_readers(monkeypatch)
    writer(tmp_path / "data")
    code, stdout, err = run_cli(["imp", f"--dataset={dataset}", f"--model={model}", "--width=4", "--batch_size=32",
                                 "--training_steps=3it", "--milestone_steps=", "--rewind_step=1it", "--levels=1",
                                 f"--data_dir={tmp_path / 'data'}", f"--out={tmp_path / 'runs'}"], capsys)
    assert code == 0, err
    run = Path(stdout.strip().splitlines()[-1])
    tickets = json.loads((run / "tickets.json").read_text())
    assert [t["level"] for t in tickets] == [0, 1] and all(0 <= t["test_accuracy"] <= 100 for t in tickets)
    assert load(run / "level_1" / "final.pt")["model"]["fc.weight"].shape[0] == classes
    assert json.loads((run / "config.json").read_text())["training_steps"] == "3it"


def test_a_timm_model_of_no_family_trains_tickets_and_prunes_its_classifier(capsys, out):
    code, stdout, err = run_cli(["imp", "--model=resnet10t", "--training_steps=2it", "--milestone_steps=",
                                 "--rewind_step=1it", "--levels=1", f"--out={out}"], capsys)
    assert code == 0, err
    run = Path(stdout.strip().splitlines()[-1])
    config = json.loads((run / "config.json").read_text())
    assert config["width"] is None and config["prune_ignore"] == ""
    mask = load(run / "level_1" / "mask.pt")
    assert "fc.weight" in mask and not bool(mask["fc.weight"].all())  # its classifier is pruned with the rest
    kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert kept == pytest.approx(0.8, abs=1e-3)
