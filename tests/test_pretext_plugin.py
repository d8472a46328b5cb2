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

README = Path(__file__).resolve().parents[1] / "README.md"
BROKEN_PYPROJECT = """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "earlyphase-broken-demo"
version = "0.0.1"

[project.entry-points."earlyphase.pretext"]
broken_demo = "broken_demo:Task"

[tool.setuptools]
py-modules = ["broken_demo"]
"""


def readme_package() -> tuple[str, str, str]:
    """(pyproject text, module name, module text) from the README's "Writing a pretext task" section."""
    section = README.read_text().split("## Writing a pretext task", 1)[1].split("\n## ", 1)[0]
    toml_text = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    module_text = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = tomllib.loads(toml_text)["tool"]["setuptools"]["py-modules"][0]
    return toml_text, module, module_text


def earlyphase(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_third_party_plugin_end_to_end(tmp_path):
    toml_text, module, module_text = readme_package()
    good, bad, site, out = tmp_path / "good", tmp_path / "bad", tmp_path / "site", tmp_path / "runs"
    good.mkdir(), bad.mkdir()
    (good / "pyproject.toml").write_text(toml_text)
    (good / f"{module}.py").write_text(module_text)
    (bad / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (bad / "broken_demo.py").write_text("import not_a_module_anywhere_xyz\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(good), str(bad)],
                   check=True, capture_output=True, timeout=300)

    listed = earlyphase(site, "pretext", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.startswith("upside_down ") and "[earlyphase-upside-down 0.1.0]" in line for line in lines)
    assert "--upside_down_p=0.5" in listed.stdout  # a plugin's options get flags, as earlyphase's own tasks do
    broken = [line for line in lines if line.startswith("broken_demo ")]
    assert broken and "BROKEN ModuleNotFoundError" in broken[0] and "not_a_module_anywhere_xyz" in broken[0]
    assert all(any(line.startswith(n + " ") for line in lines) for n in ("rotation", "simclr", "supervised"))

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
