"""One protocol for every rewind point: pretraining for k steps replaces the run's first k iterations.

So `supervised` pretraining for k steps followed by IMP is standard rewinding to k, bit for bit on the CPU,
at every level (level 0 included), and a pretext condition's levels train exactly what rewinding's do: [k, T).
"""

import json

import torch

from earlyphase.studies.engine import models
from earlyphase.studies.jobs import imp as imp_job
from earlyphase.studies.jobs import pretrain as pretrain_job
from earlyphase.studies.jobs import setup
from earlyphase.studies.jobs.imp import ImpConfig
from earlyphase.studies.jobs.pretrain import PretrainConfig

from conftest import load, same_state

# digits at batch 64: 23 iterations per epoch; a milestone (3it) and warmup (2it) before k = 5 and a milestone
# after it, so the pretraining must follow the training schedule step by step for the chain to be identical
SETTING = dict(width=4, training_steps="1ep", milestone_steps="3it,15it", warmup_steps="2it", eval_every=1)
IMP = dict(prune_fraction=0.5, levels=2, controls="random_reinit")


def _model():
    return models.create("cifar_resnet20", width=4)


def test_supervised_pretraining_for_k_then_imp_is_rewinding_to_k(out):
    rewind_dir, rewind = imp_job.run(ImpConfig(out=str(out), rewind_step="5it", **SETTING, **IMP))
    pre_dir, _ = pretrain_job.run(PretrainConfig(out=str(out), pretext="supervised", pretrain_steps="5it", **SETTING))
    point = load(pre_dir / "rewind_point.pt")
    dense_at_k = load(rewind_dir / "level_0" / "weights_5it.pt")
    assert point["step"] == 5 and same_state(point["model"], dense_at_k["model"])
    names = [n for n, _ in _model().named_parameters()]
    assert same_state(point["momentum"], {n: dense_at_k["optimizer"]["state"][i]["momentum_buffer"]
                                            for i, n in enumerate(names)})

    pre_imp_dir, pretext = imp_job.run(ImpConfig(out=str(out), rewind_from=str(pre_dir), **SETTING, **IMP))
    assert pre_imp_dir != rewind_dir
    # level 0 continues from k; every pruned level, trunk and control, trains [k, T) from the same state
    assert [(r["level"], r["kind"], r["start_step"], r["end_step"]) for r in pretext] == [
        (0, "trunk", 5, 23), (1, "trunk", 5, 23), (1, "random_reinit", 5, 23), (2, "trunk", 5, 23),
        (2, "random_reinit", 5, 23)]
    assert [r["start_step"] for r in rewind] == [0, 5, 5, 5, 5]
    for a, b in zip(rewind, pretext):
        assert (a["level"], a["kind"], a["density"], a["test_accuracy"]) == (b["level"], b["kind"], b["density"],
                                                                              b["test_accuracy"])
        part = a["run_dir"]
        assert same_state(load(rewind_dir / part / "final.pt")["model"], load(pre_imp_dir / part / "final.pt")["model"])
        assert same_state(load(rewind_dir / part / "mask.pt"), load(pre_imp_dir / part / "mask.pt"))
    config = json.loads((pre_imp_dir / "config.json").read_text())
    assert config["rewind_step_it"] == 5 and config["rewind_point"]["pretext"]["name"] == "supervised"


def test_a_task_with_its_own_head_hands_over_its_backbone_momentum_only(out):
    pre_dir, _ = pretrain_job.run(PretrainConfig(out=str(out), pretext="rotation", pretrain_steps="4it", **SETTING))
    point = load(pre_dir / "rewind_point.pt")
    trained = load(pre_dir / "weights_4it.pt")  # the rotation model at the end: 4-way head in fc
    assert point["step"] == 4 and "fc.weight" not in point["momentum"] and "fc.bias" not in point["momentum"]
    backbone = [n for n, _ in _model().named_parameters() if not n.startswith("fc.")]
    assert list(point["momentum"]) == backbone
    assert all(torch.equal(point["momentum"][n], trained["optimizer"]["state"][i]["momentum_buffer"])
               for i, n in enumerate(backbone))

    imp_dir, records = imp_job.run(ImpConfig(out=str(out), rewind_from=str(pre_dir), **SETTING, levels=1,
                                             prune_fraction=0.5))
    assert [r["start_step"] for r in records] == [4, 4]
    start = load(imp_dir / "level_0" / "weights_4it.pt")  # level 0's exact start: the point, with its momentum
    assert same_state(start["model"], point["model"])
    buffers = {n: start["optimizer"]["state"][i]["momentum_buffer"]
               for i, (n, _) in enumerate(_model().named_parameters()) if i in start["optimizer"]["state"]}
    assert same_state(buffers, point["momentum"])  # the fresh classifier starts without momentum
    level1 = load(imp_dir / "level_1" / "weights_4it.pt")
    assert level1["optimizer"]["state"] == {}  # levels >= 1 rewind with a fresh optimiser (the default)


def test_the_pretraining_follows_the_training_schedule_unless_given_its_own_rate(out):
    cfg, plugin, _ = pretrain_job.validate(PretrainConfig(out=str(out), pretext="rotation", pretrain_steps="5it",
                                                          **SETTING))
    data = setup.load_data(cfg, torch.device("cpu"))
    plan, k = pretrain_job.pretrain_plan(cfg, data, torch.device("cpu"), "")
    assert (plan.start, plan.end, k) == (0, 5, 5)
    assert [plan.schedule.lr_at(s) for s in range(5)] == [0.05, 0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1]
    own, _ = pretrain_job.pretrain_plan(pretrain_job.validate(PretrainConfig(
        out=str(out), pretext="rotation", pretrain_steps="5it", pretrain_lr=0.2, pretrain_batch_size=128,
        **SETTING))[0], data, torch.device("cpu"), "")
    # a constant --pretrain_lr (after the warmup); k counts the supervised run's iterations: 5it stays 5it
    assert [own.schedule.lr_at(s) for s in range(5)] == [0.1, 0.2, 0.2, 0.2, 0.2] and own.batch_size == 128
    epochs, k = pretrain_job.pretrain_plan(pretrain_job.validate(PretrainConfig(
        out=str(out), pretext="rotation", pretrain_steps="1ep", pretrain_batch_size=128, **SETTING))[0],
        data, torch.device("cpu"), "")
    assert (epochs.end, k) == (12, 23)  # one epoch of pretraining at batch 128 stands for one epoch at batch 64
