"""A third-party pretext task, built from the README's example package, installed into a temporary folder
(never the global environment) and used through the real `earlyphase` command: listed, pretrained, and its
rewind point fed to `earlyphase imp`. A broken plugin installed beside it is reported, and harms nothing."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import torch

from earlyphase.studies.engine import models

from conftest import final_weights, kill_9_then_rerun, load, same_state

README = Path(__file__).resolve().parents[1] / "README.md"


def plugin_pyproject(name: str, entry_points: dict[str, str], modules: list[str]) -> str:
    """A test plugin's pyproject.toml: its distribution name, its `earlyphase.pretext` entry points, its modules."""
    points = "".join(f'{task} = "{target}"\n' for task, target in entry_points.items())
    return (f'[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{name}"\nversion = "0.0.1"\n\n[project.entry-points."earlyphase.pretext"]\n{points}\n'
            f'[tool.setuptools]\npy-modules = {json.dumps(modules)}\n')


BROKEN_PYPROJECT = plugin_pyproject("earlyphase-broken-demo", {"broken_demo": "broken_demo:Task"}, ["broken_demo"])


def readme_packages() -> list[tuple[str, dict[str, str]]]:
    """(pyproject text, {module name: module text}) of each package in the README's "Writing a pretext task"."""
    section = README.read_text().split("## Writing a pretext task", 1)[1].split("\n## ", 1)[0]
    tomls = re.findall(r"```toml\n(.*?)```", section, re.S)
    modules = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(tomls) == len(modules) == 2
    return [(t, {tomllib.loads(t)["tool"]["setuptools"]["py-modules"][0]: m}) for t, m in zip(tomls, modules)]


def install(tmp_path: Path, packages: list[tuple[str, dict[str, str]]]) -> Path:
    """The packages, each (pyproject text, {module name: module text}), installed into tmp_path/site, never the
    global environment."""
    site, folders = tmp_path / "site", []
    for toml_text, modules in packages:
        folder = tmp_path / next(iter(modules))
        folder.mkdir()
        (folder / "pyproject.toml").write_text(toml_text)
        for module, module_text in modules.items():
            (folder / f"{module}.py").write_text(module_text)
        folders.append(str(folder))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), *folders],
                   check=True, capture_output=True, timeout=300)
    return site


def earlyphase(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_third_party_plugin_end_to_end(tmp_path):
    upside_down, _ = readme_packages()
    broken = (BROKEN_PYPROJECT, {"broken_demo": "import not_a_module_anywhere_xyz\n"})
    site, out = install(tmp_path, [upside_down, broken]), tmp_path / "runs"

    listed = earlyphase(site, "pretext", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.startswith("upside_down ") and "[earlyphase-upside-down 0.1.0]" in line for line in lines)
    assert "--upside_down_p=0.5" in listed.stdout  # a plugin's options get flags, as earlyphase's own tasks do
    broken = [line for line in lines if line.startswith("broken_demo ")]
    assert broken and "BROKEN ModuleNotFoundError" in broken[0] and "not_a_module_anywhere_xyz" in broken[0]
    assert all(any(line.startswith(n + " ") for line in lines) for n in ("rotation", "simclr", "supervised"))
    # a study of every task says which one it leaves out, and why, rather than dropping it silently
    plan = ("from earlyphase.studies.campaigns import study; "
            "print(sorted({u['condition'] for u in study.plan_units(study.parse(['--conditions=all', '--seeds=0']))}))")
    planned = subprocess.run([sys.executable, "-c", plan], env={**os.environ, "PYTHONPATH": str(site)},
                             capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0 and "upside_down" in planned.stdout and "broken_demo" not in planned.stdout
    warning = next(line for line in planned.stderr.splitlines() if "leaves out" in line)
    assert warning.startswith("earlyphase: warning: --conditions=all leaves out the pretext task broken_demo "
                              "(earlyphase-broken-demo") and "ModuleNotFoundError" in warning

    pretrained = earlyphase(site, "pretrain", "--pretext=upside_down", "--pretext_args=p=0.25", "--width=4",
                            "--pretrain_steps=4it", f"--out={out}")
    assert pretrained.returncode == 0, pretrained.stderr
    run_dir = Path(pretrained.stdout.strip().splitlines()[-1])
    assert run_dir.name.startswith("pretrain_upside_down_")
    point = torch.load(run_dir / "rewind_point.pt", weights_only=True)
    final = torch.load(run_dir / "final.pt", weights_only=True)["model"]
    assert final["fc.weight"].shape == (2, 16) and point["model"]["fc.weight"].shape == (10, 16)
    assert "upside_down(p=0.25, fraction=1.0)" in point["description"]
    # the option's flag and --pretext_args are two spellings of one run: the second finds the first's result
    again = earlyphase(site, "pretrain", "--pretext=upside_down", "--upside_down_p=0.25", "--width=4",
                       "--pretrain_steps=4it", f"--out={out}")
    assert again.returncode == 0 and Path(again.stdout.strip().splitlines()[-1]) == run_dir, again.stderr
    # the README's task restricts its examples: the rewind point records how many and which (by digest), the
    # run is named by them, and the same command finds the same run (the same seeded draw)
    part = ["pretrain", "--pretext=upside_down", "--upside_down_fraction=0.1", "--width=4", "--pretrain_steps=4it",
            f"--out={out}"]
    subset = earlyphase(site, *part)
    assert subset.returncode == 0, subset.stderr
    subset_dir = Path(subset.stdout.strip().splitlines()[-1])
    facts = torch.load(subset_dir / "rewind_point.pt", weights_only=True)["pretext"]
    assert subset_dir != run_dir and facts["examples"] == round(0.1 * 1437) and len(facts["examples_digest"]) == 16
    assert "examples" not in point["pretext"]
    assert Path(earlyphase(site, *part).stdout.strip().splitlines()[-1]) == subset_dir
    refused = earlyphase(site, "pretrain", "--pretext=upside_down", "--upside_down_p=2", f"--out={out}")
    assert refused.returncode == 2 and "p=2.0" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    imp = earlyphase(site, "imp", f"--rewind_from={run_dir}", "--levels=1", "--width=4", "--training_steps=8it",
                     "--milestone_steps=", "--prune_fraction=0.5", f"--out={out}")
    assert imp.returncode == 0, imp.stderr
    imp_dir = Path(imp.stdout.strip().splitlines()[-1])
    assert (imp_dir / "tickets.json").is_file() and (imp_dir / "level_1" / "summary.json").is_file()
    # IMP started from the rewind point at its step (4 pretraining steps stand for the run's first 4)
    assert [r["start_step"] for r in json.loads((imp_dir / "tickets.json").read_text())] == [4, 4]
    level0 = torch.load(imp_dir / "level_0" / "weights_4it.pt", weights_only=True)["model"]
    assert all(torch.equal(level0[k], v) for k, v in point["model"].items())


def test_a_plugin_with_a_momentum_teacher_resumes_bit_for_bit_and_joins_a_study(tmp_path, monkeypatch):
    """The README's second package: its teacher and predictor live in checkpoints (kill -9 mid-pretraining, rerun:
    the same bytes), the rewind point holds the network alone, and a study pairs it with rewinding to its k."""
    _, mean_teacher = readme_packages()
    site = install(tmp_path, [mean_teacher])
    (task_file,) = mean_teacher[1].values()
    assert sum(1 for line in task_file.splitlines() if line.strip()) < 60  # the task's whole file
    monkeypatch.setenv("PYTHONPATH", str(site))
    full_dir, killed_dir = kill_9_then_rerun(["pretrain", "--pretext=mean_teacher", "--mean_teacher_momentum=0.9",
                                              "--width=4", "--pretrain_steps=3ep", "--threads=1"], tmp_path / "runs")
    assert same_state(final_weights(full_dir), final_weights(killed_dir))
    point = load(killed_dir / "rewind_point.pt")
    assert point["model"].keys() == models.create("cifar_resnet20", width=4).state_dict().keys()  # no teacher
    assert same_state(point["model"], load(full_dir / "rewind_point.pt")["model"])
    study = earlyphase(site, "study", "--conditions=rewind,mean_teacher", "--seeds=0", "--width=4", "--levels=1",
                       "--training_steps=2ep", "--milestone_steps=1ep", "--rewind_step=3it", "--pretrain_steps=3it",
                       "--batch_size=128", "--stability=", f"--out={tmp_path}/study")
    assert study.returncode == 0, study.stderr
    report = json.loads(next((tmp_path / "study").glob("study_*/report/report.json")).read_text())
    assert {(c["subject"], c["reference"]) for c in report["comparisons"] if c["question"] == "pretext"} == {
        ("mean_teacher 3it", "rewind 3it")}


HOSTILE_PYPROJECT = plugin_pyproject("earlyphase-hostile", {"rotation": "hostile:NotRotation",
                                                            "list_option": "hostile:ListOption",
                                                            "exits": "exiting:Task"}, ["hostile", "exiting"])


HOSTILE = """from earlyphase.pretext.base import Option, PretextTask


class NotRotation(PretextTask):
    name = "rotation"


class ListOption(PretextTask):
    name = "list_option"
    options = {"sizes": Option([1, 2], "a list")}
"""


def test_hostile_plugins_are_reported_and_never_replace_a_built_in(tmp_path):
    site = install(tmp_path, [(HOSTILE_PYPROJECT, {
        "hostile": HOSTILE, "exiting": "import sys\nsys.exit('usage: some argparse of the plugin')\n"})])
    listed = earlyphase(site, "pretext", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    rotation = [line for line in lines if line.startswith("rotation ")]
    assert len(rotation) == 2 and "[earlyphase " in rotation[0]
    assert "duplicate name: earlyphase" in rotation[1] and "earlyphase-hostile" in rotation[1]
    (listing,) = [line for line in lines if line.startswith("list_option ")]
    assert "BROKEN TypeError" in listing and "options take bool, int, float or str" in listing
    (exits,) = [line for line in lines if line.startswith("exits ")]
    assert "BROKEN SystemExit" in exits and "usage: some argparse" in exits
    pretrained = earlyphase(site, "pretrain", "--pretext=rotation", "--width=4", "--pretrain_steps=2it", "--threads=1",
                            f"--out={tmp_path}/runs")
    assert pretrained.returncode == 0, pretrained.stderr
    point = load(Path(pretrained.stdout.strip().splitlines()[-1]) / "rewind_point.pt")
    assert point["pretext"]["target"] == "earlyphase.pretext.rotation:Rotation"
    # a task option given with --help: the tasks' options are listed, the built-in's own
    help_text = earlyphase(site, "pretrain", "--rotation_all_four=true", "--help")
    assert help_text.returncode == 0 and "--rotation_all_four=bool  [True]" in help_text.stdout
