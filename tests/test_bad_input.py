"""Bad input is refused in one line (exit 2) before anything is written: non-finite numbers, a learning
rate that overflows, a flag without its value, seeds out of range, an --out that cannot hold runs."""

import json
import math
import os
import shutil
import subprocess

import pytest

from earlyphase.studies.campaigns.study import StudyConfig
from earlyphase.studies.engine.errors import UsageError
from earlyphase.studies.jobs import setup
from earlyphase.studies.jobs.config import TrainConfig, with_task_options
from earlyphase.studies.jobs.flags import parse_overrides, with_values
from earlyphase.studies.jobs.imp import ImpConfig
from earlyphase.studies.jobs.pretrain import PretrainConfig

from conftest import TINY, one_line_error, run_cli


# ------------------------------------------------------------------------------- non-finite hyperparameters
@pytest.mark.parametrize("command,flag", [
    ("train", "--lr=inf"), ("train", "--weight_decay=nan"), ("train", "--gamma=inf"), ("train", "--momentum=-inf"),
    ("imp", "--lr=nan"), ("pretrain", "--pretrain_lr=inf"), ("pretrain", "--simclr_temperature=nan"),
])
def test_non_finite_flags_are_refused_before_anything_is_written(out, capsys, command, flag):
    code, stdout, stderr = run_cli([command, f"--out={out}", *TINY, flag], capsys)
    one_line_error(code, stderr, flag, "finite")
    assert not out.exists()


@pytest.mark.parametrize("cls,field", [(TrainConfig, "lr"), (TrainConfig, "weight_decay"), (ImpConfig, "perturb_noise"),
                                       (PretrainConfig, "random_labels_fraction"), (StudyConfig, "simclr_min_scale")])
def test_validate_refuses_non_finite_fields_of_configs_built_in_python(tmp_path, cls, field):
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(UsageError, match=f"--{field}=.*finite"):
            cfg = with_values(with_task_options(cls)(), {"out": str(tmp_path / "runs"), field: value})
            setup.validate(cfg.pretrain if cls is StudyConfig else cfg)  # a study validates each unit's configs


def test_a_learning_rate_that_overflows_at_a_milestone_is_refused(out, capsys):
    code, _, stderr = run_cli(["train", f"--out={out}", *TINY, "--gamma=1e200", "--milestone_steps=2it,4it"], capsys)
    one_line_error(code, stderr, "--gamma=1e+200", "overflows")
    assert not out.exists()


# ------------------------------------------------------------------------------- a flag without its value
def test_a_flag_without_a_value_does_not_take_the_next_flag_as_its_value(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli(["train", *TINY, "--out", "--seed=1"], capsys)
    one_line_error(code, stderr, "--out needs a value: --out=VALUE")
    assert list(tmp_path.iterdir()) == []
    cfg = parse_overrides(TrainConfig, ["--out", "elsewhere", "--augment", "--seed", "-1"])
    assert (cfg.out, cfg.augment, cfg.seed) == ("elsewhere", True, -1)  # values still follow their flag


# ------------------------------------------------------------------------------- unusable --out
def test_an_unusable_out_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where an empty --out would write
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    (tmp_path / "loop").symlink_to("loop")
    for out, words in [(a_file, ("is a file, not a folder",)), (a_file / "runs", ("below", "which is a file")),
                       (tmp_path / ("x" * 300), ("longer than the file system allows", "shorter --out")),
                       (tmp_path / "loop", ("is a broken link, not a folder",)), ("", ("--out is empty",))]:
        code, _, stderr = run_cli(["train", f"--out={out}", *TINY], capsys)
        one_line_error(code, stderr, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "loop"] and a_file.read_text() == "keep me"


def test_an_out_without_write_permission_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anyway: make the check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(locked) else real(p, mode, **kw))
    code, _, stderr = run_cli(["train", f"--out={locked / 'runs'}", *TINY], capsys)
    one_line_error(code, stderr, f"cannot write in {locked}", "choose a folder you can write to")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_an_immutable_out_is_one_line(tmp_path, capsys):
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    if subprocess.run(["chattr", "+i", str(frozen)], capture_output=True).returncode:
        pytest.skip("this file system or user cannot set the immutable attribute")
    try:
        code, _, stderr = run_cli(["train", f"--out={frozen}", *TINY], capsys)
        one_line_error(code, stderr, f"cannot write in {frozen}")
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)
    assert list(frozen.iterdir()) == []


# ------------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("seed", ["-1", str(2 ** 64), str(10 ** 30)])
def test_a_seed_out_of_range_is_refused_before_anything_is_written(out, capsys, seed):
    code, _, stderr = run_cli(["train", f"--out={out}", *TINY, f"--seed={seed}"], capsys)
    one_line_error(code, stderr, f"--seed={seed}", "from 0 to 2**64 - 1")
    assert not out.exists()


@pytest.mark.parametrize("command,field", [("train", "data_seed"), ("stability", "data_seed"),
                                           ("stability", "stability_data_seed")])
def test_every_seed_field_is_range_checked(out, capsys, command, field):
    code, _, stderr = run_cli([command, f"--out={out}", *TINY, f"--{field}=-3"], capsys)
    one_line_error(code, stderr, f"--{field}=-3", "from 0 to 2**64 - 1")
    assert not out.exists()


def test_the_largest_seed_trains(out, capsys):
    largest = 2 ** 64 - 1
    code, stdout, _ = run_cli(["train", f"--out={out}", "--width=4", "--training_steps=2it", f"--seed={largest}"],
                              capsys)
    folder = stdout.strip().splitlines()[-1]
    assert code == 0 and json.load(open(os.path.join(folder, "config.json")))["seed"] == largest
