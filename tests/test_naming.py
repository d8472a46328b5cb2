"""One naming policy: run directory names are a pure function of what a run computes, and they never change.

The expected names below were computed by the code before studies/ was restructured (issue 14) and before
pretext options became derived flags: a run made then is found again now, by every command.
"""

import pytest

from earlyphase.pretext import registry
from earlyphase.pretext.base import PretextTask
from earlyphase.studies.campaigns import study
from earlyphase.studies.jobs import arguments, imp, pretrain, setup
from earlyphase.studies.jobs.config import TrainConfig, condition_fields, run_dir
from earlyphase.studies.jobs.flags import parse_overrides

NAMES = [
    ("train", "train_4a1c9493cfa7"),
    ("train --seed=3", "train_97ab6268ad13"),
    ("train --lr=0.05 --width=8", "train_811a399747ac"),
    ("train --dataset=cifar10", "train_ad77c26102fe"),
    ("train --data_seed=7", "train_19c68f769a49"),
    ("train --eval_every=3", "train_4a1c9493cfa7"),
    ("imp", "imp_20565609a5d2"),
    ("imp --rewind_step=0it", "imp_816faa199fc6"),
    ("imp --prune_fraction=0.5 --levels=3 --controls=random_reinit", "imp_3498d316e8e4"),
    ("imp --rewind_optimizer=rewound", "imp_4089f8f63fe0"),
    ("imp --prune_ignore=fc", "imp_da71a86e0db6"),
    ("imp --stability=0 --levels=1", "imp_20565609a5d2"),
    ("imp --concurrent=4 --concurrent_engine=vmap", "imp_20565609a5d2"),
    ("imp --perturb=noise --levels=2", "imp_20565609a5d2"),
    ("pretrain --pretext=rotation", "pretrain_rotation_38e1d3559e41"),
    ("pretrain --pretext=rotation --rotation_all_four=true", "pretrain_rotation_65cc468c2b9c"),
    ("pretrain --pretext=simclr --simclr_temperature=0.2 --simclr_min_scale=0.5", "pretrain_simclr_28c41418e844"),
    ("pretrain --pretext=random_labels --random_labels_fraction=0.5", "pretrain_random_labels_862ecb803f55"),
    ("pretrain --pretext=blur --blur_factor=3", "pretrain_blur_7a407654a6fb"),
    ("pretrain --pretext=blur --blur_gaussian=true", "pretrain_blur_e01770973cb3"),
    ("pretrain --pretext=supervised --pretrain_steps=6it", "pretrain_supervised_6248f0fa1962"),
    ("pretrain --pretext=rotation --pretrain_lr=0.05 --pretrain_batch_size=32", "pretrain_rotation_e3af24d5a23d"),
    ("pretrain --pretext=rotation --fresh_classifier=true", "pretrain_rotation_62e7cf634e89"),
    # the quick preset's T was 6 epochs before 2026-12-06: the same config keeps the name it had
    ("study --training_steps=6ep", "study_e86bda43a414"),
    ("study --preset=paper", "study_d76a2dbbc046"),
    ("study --training_steps=6ep --seeds=0,1 --conditions=reset,rotation", "study_89f12a39072a"),
    ("study --training_steps=6ep --pretrain_budgets=rotation=2ep --stability= --concurrent=2",
     "study_921cf3cb95e9"),
    ("pretrain --pretext=upside_down", "pretrain_upside_down_b7b010fc25ee"),
    ("pretrain --pretext=upside_down --pretext_args=p=0.25", "pretrain_upside_down_0ece23225f88"),
    ("pretrain --pretext=upside_down --pretext_args=axis=v,p=0.25", "pretrain_upside_down_cd69909f9459"),
]


class UpsideDown(PretextTask):
    """A third-party task (not installed): its options name runs through --pretext_args, as they always did."""

    name = "upside_down"
    options = {"p": 0.5, "axis": "h"}


def name_of(args: list[str]) -> str:
    command, argv = args[0], args[1:] + ["--out=/nonexistent/runs"]
    if command == "train":
        return run_dir("train", setup.validate(parse_overrides(TrainConfig, argv))).name
    if command == "imp":
        return imp.prepare(arguments.imp(argv).imp).out.name
    if command == "pretrain":
        cfg, plugin, _ = pretrain.validate(arguments.pretrain(argv))
        return pretrain.pretrain_dir(cfg, plugin, "").name
    return run_dir("study", study.parse(argv)).name


@pytest.mark.parametrize("args,expected", NAMES, ids=[a for a, _ in NAMES])
def test_run_names_are_those_of_earlier_versions(args, expected, monkeypatch):
    real = registry.load
    monkeypatch.setattr(registry, "load", lambda name, group=registry.GROUP: registry.Plugin(
        name, "upside_down:UpsideDown", "earlyphase-upside-down 0.1.0", UpsideDown) if name == "upside_down"
        else real(name, group))
    assert name_of(args.split()) == expected


def test_equivalent_spellings_name_one_run():
    assert name_of(["pretrain", "--pretext=simclr", "--pretext_args=temperature=0.2"]) == \
        name_of(["pretrain", "--pretext=simclr", "--simclr_temperature=0.2"])
    assert name_of(["imp", "--concurrent=4", "--levels=3", "--stability=0"]) == name_of(["imp"])


def test_a_condition_is_named_by_option_fields_only():
    record = {"seed": 3, "data_seed": 1, "lr": 0.05, "out": "x", "rewind_from": "/a/b", "concurrent_engine": "vmap",
              "levels": 8, "rewind_step_it": 5, "pretext": "rotation", "kind": "imp"}
    assert condition_fields(record) == {"lr": 0.05, "pretext": "rotation"}
