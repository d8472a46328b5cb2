"""`earlyphase pretrain`: rewind points, standard rewinding as a pretext, sparse pretraining, naming, errors."""

import json

import torch

from earlyphase.studies import cli
from earlyphase.studies.engine import models
from earlyphase.studies.engine.augment import derive_seed
from earlyphase.studies.jobs import config
from earlyphase.studies.jobs import pretrain as pretrain_job
from earlyphase.studies.jobs import train as train_job
from earlyphase.studies.jobs.config import TrainConfig

from conftest import load, same_state

PretrainConfig = config.with_task_options(config.PretrainConfig)  # with the tasks' options (simclr_out_dim, ...)

FIELDS = dict(width=4, pretrain_steps="6it", eval_every=1)


def pretrain(out, **kw):
    return pretrain_job.run(PretrainConfig(out=str(out), **{**FIELDS, **kw}))


def backbone(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def test_rotation_rewind_point_has_pretrained_backbone_and_fresh_classifier(out):
    run_dir, result = pretrain(out, pretext="rotation")
    assert run_dir.name.startswith("pretrain_rotation_") and result.summary["end_step"] == 6
    point, final = load(run_dir / "rewind_point.pt"), load(run_dir / "final.pt")["model"]
    assert final["fc.weight"].shape == (4, 16)  # trained with the 4-way rotation head
    fresh = models.create("cifar_resnet20", width=4).state_dict()
    assert point["model"].keys() == fresh.keys() and point["model"]["fc.weight"].shape == (10, 16)
    assert same_state(backbone(point["model"]), backbone(final))  # the pretrained backbone, BN statistics included
    classifier = models.create("cifar_resnet20", width=4)
    torch.manual_seed(derive_seed(0, "classifier"))
    classifier.reset_classifier(10)
    assert torch.equal(point["model"]["fc.weight"], classifier.fc.weight.detach())  # seeded, not the pretext head
    assert point["mask"] is None and point["arch"] == {"model": "cifar_resnet20", "width": 4, "num_classes": 10}
    assert "rotation(all_four=False) pretraining for 6it" in point["description"]
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["test_accuracy"] <= 1 and record["test_loss"] > 0  # the task's own test metrics
    # Rerunning finds the finished run and leaves it alone.
    mtime = (run_dir / "rewind_point.pt").stat().st_mtime_ns
    again_dir, again = pretrain(out, pretext="rotation")
    assert again_dir == run_dir and again.skipped and (run_dir / "rewind_point.pt").stat().st_mtime_ns == mtime


def test_supervised_pretext_is_standard_rewinding(out):
    run_dir, _ = pretrain(out, pretext="supervised", pretrain_steps="5it")
    dense_dir, _ = train_job.run(TrainConfig(out=str(out), width=4, training_steps="5it", eval_every=1))
    assert same_state(load(run_dir / "rewind_point.pt")["model"], load(dense_dir / "final.pt")["model"])


def test_sparse_pretraining_keeps_the_mask(out, tmp_path):
    model = models.create("cifar_resnet20", width=4)
    gen = torch.Generator().manual_seed(3)
    mask = {n: torch.rand(p.shape, generator=gen) < 0.3 for n, p in model.named_parameters() if p.dim() > 1}
    torch.save(mask, tmp_path / "mask.pt")
    run_dir, _ = pretrain(out, pretext="rotation", mask=str(tmp_path / "mask.pt"))
    point, final = load(run_dir / "rewind_point.pt"), load(run_dir / "final.pt")["model"]
    assert point["mask"].keys() == mask.keys() and all(torch.equal(point["mask"][n], mask[n]) for n in mask)
    for name, keep in mask.items():
        assert (point["model"][name][~keep] == 0).all() and (point["model"][name][keep] != 0).all()
    assert (final["fc.weight"] != 0).all()  # the rotation head itself was not masked
    # The mask enters the run name by content: the same mask elsewhere names the same run.
    (tmp_path / "copy").mkdir()
    torch.save(mask, tmp_path / "copy" / "mask.pt")
    assert pretrain(out, pretext="rotation", mask=str(tmp_path / "copy"))[0] == run_dir
    assert run_dir != pretrain_job.pretrain_dir(
        PretrainConfig(out=str(out), **FIELDS), pretrain_job.registry.load("rotation"), ""
    )
    # A mask for another width is refused before anything is written.
    wide = {
        n: torch.ones(p.shape, dtype=torch.bool) for n, p in models.create("cifar_resnet20", width=8).named_parameters()
    }
    torch.save(wide, tmp_path / "wide.pt")
    assert cli.main(["pretrain", "--width=4", f"--mask={tmp_path / 'wide.pt'}", f"--out={out / 'x'}"]) == 2
    assert not (out / "x").exists()


def test_simclr_loss_decreases_on_digits(out):
    run_dir, _ = pretrain(out, pretext="simclr", width=8, pretrain_steps="3ep", simclr_out_dim=32)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and records[-1]["train_loss"] < records[0]["train_loss"] - 0.1
    assert load(run_dir / "rewind_point.pt")["model"]["fc.weight"].shape == (10, 32)


def test_run_names_cover_the_task_and_its_options_only(out):
    def name(**kw):
        cfg, plugin, _ = pretrain_job.validate(PretrainConfig(out=str(out), **{**FIELDS, **kw}))
        return pretrain_job.pretrain_dir(cfg, plugin, "").name

    base = name(pretext="blur")
    assert base.startswith("pretrain_blur_")
    assert name(pretext="blur", blur_factor=3) != base
    assert name(pretext="blur", simclr_temperature=0.1, training_steps="2ep") == base  # cannot change this run
    assert name(pretext="blur", pretrain_batch_size=64) == base  # the dataset's batch size
    # the pretraining follows the training schedule: its milestones name it, and a constant rate is another run
    assert name(pretext="blur", milestone_steps="1it") != base and name(pretext="blur", pretrain_lr=0.1) != base
    assert name(pretext="random_labels") != name(pretext="random_labels", random_labels_fraction=0.5)


def test_random_labels_and_blur_pretrain_with_options(out):
    run_dir, result = pretrain(out, pretext="random_labels", random_labels_fraction=0.5)
    assert load(run_dir / "rewind_point.pt")["model"]["fc.weight"].shape == (10, 16)
    assert json.loads((run_dir / "config.json").read_text())["pretext_options"] == {"fraction": 0.5}
    run_dir, _ = pretrain(out, pretext="blur", blur_factor=2, blur_gaussian=True, fresh_classifier=True)
    point, final = load(run_dir / "rewind_point.pt"), load(run_dir / "final.pt")["model"]
    assert not torch.equal(point["model"]["fc.weight"], final["fc.weight"])  # --fresh_classifier replaced it


def test_usage_errors_are_one_line_exit_2(out, capsys):
    assert cli.main(["pretrain", "--pretext=nope", f"--out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown pretext 'nope': choose one of" in err
    assert all(name in err for name in ("blur", "random_labels", "rotation", "simclr", "supervised"))
    for flags, message in [
        (["--pretext=simclr", "--simclr_temperature=0.2", "--pretext_args=temperature=0.1"],
         "temperature of simclr is set twice, by --simclr_temperature and --pretext_args: set it once"),
        (["--pretext=rotation", "--pretext_args=angle=3"], "rotation has no option 'angle'; it takes: all_four"),
        (["--pretext=blur", "--blur_factor=9"], "blur factor=9"),
        (["--pretext=rotation", "--pretrain_steps=7"], "--pretrain_steps"),
        (["--pretext=rotation", "--mask=/nonexistent"], "no mask file"),
    ]:
        assert cli.main(["pretrain", *flags, f"--out={out}"]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()


def test_pretext_list_command(capsys):
    assert cli.main(["pretext", "list"]) == 0
    text = capsys.readouterr().out
    for name in ("blur", "random_labels", "rotation", "simclr", "supervised"):
        assert any(line.startswith(name + " ") and "[earlyphase " in line for line in text.splitlines())
    assert "--simclr_temperature=0.5" in text and "--rotation_all_four=False" in text
    label_free = {line.split()[0] for line in text.splitlines() if "(no true labels)" in line}
    assert {"rotation", "simclr"} <= label_free and not label_free & {"blur", "supervised", "subset"}
    assert cli.main(["pretext", "show"]) == 2
