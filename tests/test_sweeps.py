import functools
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from earlyphase.studies import cli
from earlyphase.studies.campaigns import sweep as sweep_cmd

SWEEPS = sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml"))


def test_the_sweep_files_exist():
    names = {p.stem for p in SWEEPS}
    for stem in ("pretext_vs_rewind", "rewind_step", "pretrain_length", "data_diet", "ssl", "seeds_auto",
                 "label_noise"):
        assert stem in names and f"{stem}-quick" in names


def cifar_sized(cfg, device):
    """CIFAR-10's shapes and split sizes without its pixels (which this machine cannot download): the checks
    of the paper sweeps depend on iterations per epoch, not on images."""
    from earlyphase.studies.engine import data

    if cfg.dataset != "cifar10":
        return data.load(cfg.dataset)
    x, y = torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, dtype=torch.long)
    return data.ImageData("cifar10", x.expand(50_000, -1, -1, -1), y.expand(50_000), x.expand(10_000, -1, -1, -1),
                          y.expand(10_000), 10, data.IMAGENET_MEAN, data.IMAGENET_STD, crop_padding=4, flip=True)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_file_is_valid_and_every_run_passes_its_full_check(path, monkeypatch, tmp_path):
    from earlyphase.studies.jobs import setup

    monkeypatch.setattr(setup, "load_data", cifar_sized)
    sweeps, _ = sweep_cmd.import_engine()
    config = yaml.safe_load(path.read_text())
    assert sweeps.schema_violations_from_proposed_config(config) == []
    argvs = sweep_cmd.enumerate_argvs(config, None)
    grid = 1
    for spec in config["parameters"].values():
        grid *= len(spec.get("values", [None]))
    assert len(argvs) == grid
    for argv in argvs:  # every field, every study unit (k < T for each budget, levels that leave weights, ...)
        args = sweep_cmd.earlyphase_args(sweep_cmd.expand_command(config, argv))
        sweep_cmd.check_args(sweep_cmd.with_out(args, tmp_path))


def test_grid_enumerates_exactly_the_agents_argv():
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    config = {"method": "grid", "parameters": {"conditions": {"values": ["reset", "rotation"]},
                                               "seeds": {"values": [0, 1, 2]}, "augment": {"value": False}}}
    argvs = sweep_cmd.enumerate_argvs(config, None)
    expected = [create_sweep_command_args({"args": {"augment": {"value": False}, "conditions": {"value": c},
                                                    "seeds": {"value": s}}})["args"]
                for c in ("reset", "rotation") for s in (0, 1, 2)]
    assert sorted(map(tuple, argvs)) == sorted(map(tuple, expected))
    assert ["--augment=False", "--conditions=reset", "--seeds=0"] in argvs
    assert sweep_cmd.enumerate_argvs(config, 4) == argvs[:4]
    command = sweep_cmd.expand_command(
        {"command": ["${env}", "earlyphase", "study", "--preset=quick", "${args}"]}, argvs[0]
    )
    assert command == ["earlyphase", "study", "--preset=quick", *argvs[0]]


def write(tmp_path, config):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_invalid_sweep_lists_violations(tmp_path, capsys):
    path = write(tmp_path, {"method": "grid", "parameters": {"seeds": {"valuez": [1]}}})
    assert cli.main(["sweep", "run", str(path), f"--out={tmp_path}/runs"]) == 2
    err = capsys.readouterr().err
    assert "not a valid sweep" in err and "valuez" in err
    assert not (tmp_path / "runs").exists()


def test_unknown_parameter_is_refused_before_anything_runs(tmp_path, capsys):
    path = write(tmp_path, {"method": "grid", "parameters": {"sedes": {"values": [0, 1]}},
                            "command": ["${env}", "earlyphase", "study", "${args}"]})
    assert cli.main(["sweep", "run", str(path), f"--out={tmp_path}/runs"]) == 2
    assert "did you mean --seeds" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_random_sweep_needs_count(tmp_path, capsys):
    path = write(tmp_path, {"method": "random", "parameters": {"seed": {"values": [0, 1]}},
                            "command": ["${env}", "earlyphase", "train", "${args}"]})
    assert cli.main(["sweep", "run", str(path)]) == 2
    assert "--count" in capsys.readouterr().err


def test_tiny_sweep_runs_end_to_end_and_skips_finished(tmp_path, capsys):
    path = write(tmp_path, {"method": "grid", "parameters": {"seed": {"values": [0, 1]}},
                            "command": ["${env}", "earlyphase", "train", "--width=2", "--training_steps=3it",
                                        "--batch_size=32", "${args}"]})
    out = tmp_path / "runs"
    assert cli.main(["sweep", "run", str(path), f"--out={out}", "--jobs=2"]) == 0
    ledger_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    ledger = json.loads((ledger_dir / "ledger.json").read_text())
    assert sorted(ledger) == ["--seed=0", "--seed=1"] and all(v["returncode"] == 0 for v in ledger.values())
    trained = sorted(p.parent.name for p in out.glob("train_*/summary.json"))
    assert len(trained) == 2
    configs = [json.loads((out / t / "config.json").read_text()) for t in trained]
    assert sorted(c["seed"] for c in configs) == [0, 1]
    # two jobs at once: each got its share of the cores this process may use, not every core
    assert {c["threads"] for c in configs} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    assert cli.main(["sweep", "run", str(path), f"--out={out}"]) == 0
    assert capsys.readouterr().err.count("finished earlier, skipped") == 2


@functools.lru_cache(maxsize=None)
def units_of_sweep(path):
    """Every sweep run's study units as (condition, steps, seed) (planning a study finds the pretext tasks: kept)."""
    from earlyphase.studies.campaigns import study

    config = yaml.safe_load(path.read_text())
    per_run = []
    for argv in sweep_cmd.enumerate_argvs(config, None):
        args = sweep_cmd.earlyphase_args(sweep_cmd.expand_command(config, argv))
        assert args[0] == "study"
        per_run.append([(u["condition"] + (f"[{u['options']}]" if u.get("options") else ""),
                         u.get("rewind_step") or u["pretrain_steps"], u["seed"])
                        for u in study.plan_units(study.parse(args[1:]))])
    return per_run


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_each_sweep_run_is_one_unit_and_every_unit_trains_once(path):
    """Agents on several machines share no disk: a unit in two sweep runs would train twice, and a sweep run of
    several units could not be grouped in W&B."""
    per_run = units_of_sweep(path)
    if not path.stem.startswith("seeds_auto"):  # a --seeds=auto run adds seeds to its comparisons: it holds them
        assert all(len(units) == 1 for units in per_run), [u for u in per_run if len(u) != 1][:3]
    units = [u for units in per_run for u in units]
    assert len(units) == len(set(units))


def test_the_budget_sweeps_hold_every_reference():
    """Each pretext budget's `rewind k` is a run of the same sweep (the runs do not add references), and so is
    reset."""
    from earlyphase.studies.campaigns import study

    for stem in ("pretrain_length", "pretrain_length-quick", "pretext_vs_rewind", "pretext_vs_rewind-quick",
                 "stability", "stability-quick", "data_diet", "data_diet-quick", "ssl", "ssl-quick", "label_noise",
                 "label_noise-quick"):
        units = {u for units in units_of_sweep(SWEEPS[[p.stem for p in SWEEPS].index(stem)]) for u in units}
        pretext = [(c, steps, seed) for c, steps, seed in units if c not in study.BASELINES]
        assert pretext and all(("rewind", steps, seed) in units for _, steps, seed in pretext), stem
        assert all(("reset", "0it", seed) in units for seed in (0, 1, 2)), stem


def tiny_sweep(path, tmp_path, tasks=None):
    """The quick sweep file as it is, but its trainings tiny (width 2, 3 epochs of 12 iterations, 1 level, no
    stability copies: every k and budget of the file still lies before T) and, given `tasks`, its pretext
    conditions cut to those tasks (the suite's time; the stability verdicts are tests/test_across.py's)."""
    config = yaml.safe_load(path.read_text())
    assert config["parameters"].pop("training_steps") == {"value": "6ep"}  # the T of the file's results in the README
    at = config["command"].index("${args}")
    config["command"][at:at] = ["--width=2", "--batch_size=128", "--training_steps=3ep", "--milestone_steps=1ep,2ep",
                                "--levels=1", "--eval_every=3", "--stability="]
    conditions = config["parameters"]["conditions"]
    if tasks and "values" in conditions:
        conditions["values"] = [c for c in conditions["values"] if c.split("=")[0] in ("reset", "rewind", *tasks)]
    tiny = tmp_path / path.name
    tiny.write_text(yaml.safe_dump(config))
    return tiny


def test_the_quick_sweeps_answer_across_k_and_across_budget(tmp_path, capsys):
    out = tmp_path / "runs"
    for stem, tasks in (("rewind_step-quick", None), ("pretrain_length-quick", ("rotation", "blur"))):
        path = tiny_sweep(Path(__file__).parent.parent / "sweeps" / f"{stem}.yaml", tmp_path, tasks)
        assert cli.main(["sweep", "run", str(path), f"--out={out}", "--concurrent=2"]) == 0
    assert cli.main(["report", str(out), "-o", str(tmp_path / "report")]) == 0
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    (by_k,) = data["by_k"]
    assert sorted({p["k"] for p in by_k["points"]}) == [0, 2, 6, 12, 23, 24]  # reset, the sweeps' k and budgets
    assert {p["n"] for p in by_k["vs_dense"]} == {3} and len(by_k["smallest_matching_k"]) == 1
    assert sorted(s["task"] for s in data["by_budget"]) == ["blur", "rotation"]
    for series in data["by_budget"]:
        assert [b["k"] for b in series["budgets"]] == [2, 6, 24]
        assert [b["reference"] for b in series["budgets"]] == ["rewind 2it", "rewind 6it", "rewind 2ep"]
        assert all(b["verdict"] in ("matches", "falls short", "undetermined") for b in series["budgets"])
    text = " ".join(data["findings"])
    assert text.startswith("Across k (0it, 2it, 6it, 12it, 23it, 24it; reset is k = 0): tickets match")
    for task in ("rotation", "blur"):
        assert f"**{task}** against supervised rewinding to the same k" in text
    for name in ("accuracy_vs_k.png", "pretext_vs_budget.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
