"""Damaged or hostile input that used to end in a traceback or a silent wrong choice (issue 29 §3, 6, 11-17): each
is now one line (exit 2) naming what to fix, or a plugin reported as broken while the rest keeps working."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from earlyphase.studies.reporting import report

from conftest import TINY, load, one_line_error, run_cli, write_imp

ONE_LEVEL = ["--rewind_step=3it", "--levels=1", "--threads=1"]
HOSTILE_PYPROJECT = """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "earlyphase-hostile"
version = "0.0.1"

[project.entry-points."earlyphase.pretext"]
rotation = "hostile:NotRotation"
list_option = "hostile:ListOption"
exits = "exiting:Task"

[tool.setuptools]
py-modules = ["hostile", "exiting"]
"""
HOSTILE = """from earlyphase.pretext.base import Option, PretextTask


class NotRotation(PretextTask):
    name = "rotation"


class ListOption(PretextTask):
    name = "list_option"
    options = {"sizes": Option([1, 2], "a list")}
"""


def test_hostile_plugins_are_reported_and_never_replace_a_built_in(tmp_path):
    package, site = tmp_path / "hostile", tmp_path / "site"
    package.mkdir()
    (package / "pyproject.toml").write_text(HOSTILE_PYPROJECT)
    (package / "hostile.py").write_text(HOSTILE)
    (package / "exiting.py").write_text("import sys\nsys.exit('usage: some argparse of the plugin')\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(package)],
                   check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}

    def earlyphase(*args):
        return subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", *args], env=env, capture_output=True,
                              text=True, timeout=300)

    listed = earlyphase("pretext", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    rotation = [line for line in lines if line.startswith("rotation ")]
    assert len(rotation) == 2 and "[earlyphase " in rotation[0]
    assert "duplicate name: earlyphase" in rotation[1] and "earlyphase-hostile" in rotation[1]
    (listing,) = [line for line in lines if line.startswith("list_option ")]
    assert "BROKEN TypeError" in listing and "options take bool, int, float or str" in listing
    (exits,) = [line for line in lines if line.startswith("exits ")]
    assert "BROKEN SystemExit" in exits and "usage: some argparse" in exits
    pretrained = earlyphase("pretrain", "--pretext=rotation", "--width=4", "--pretrain_steps=2it", "--threads=1",
                            f"--out={tmp_path}/runs")
    assert pretrained.returncode == 0, pretrained.stderr
    point = load(Path(pretrained.stdout.strip().splitlines()[-1]) / "rewind_point.pt")
    assert point["pretext"]["target"] == "earlyphase.pretext.rotation:Rotation"
    help_text = earlyphase("pretrain", "--rotation_all_four=true", "--help")  # a task option given: the tasks' listed
    assert help_text.returncode == 0 and "--rotation_all_four=bool  [True]" in help_text.stdout


def test_records_nested_too_deeply_are_one_line(tmp_path, capsys):
    code, stdout, _ = run_cli(["imp", *TINY, *ONE_LEVEL, f"--out={tmp_path}/runs"], capsys)
    run = Path(stdout.strip().splitlines()[-1])
    (run / "level_1" / "summary.json").write_text("[" * 100_000)
    code, _, err = run_cli(["report", str(run), "-o", str(tmp_path / "report")], capsys)
    assert code == 0, err  # the part is listed as damaged, the rest reported
    incomplete = json.loads((tmp_path / "report" / "report.json").read_text())["incomplete"]
    assert "nested too deeply" in json.dumps(incomplete)
    code, _, err = run_cli(["imp", *TINY, "--rewind_step=3it", "--levels=2", "--threads=1",
                            f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "summary.json", "nested too deeply")


def test_a_folder_where_the_lock_file_goes_is_one_line(tmp_path, capsys):
    out = tmp_path / "runs"
    code, stdout, _ = run_cli(["train", *TINY, "--threads=1", f"--out={out}"], capsys)
    run = Path(stdout.strip().splitlines()[-1])
    for name in ("summary.json", "final.pt"):
        (run / name).unlink()
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").mkdir()
    code, _, err = run_cli(["train", *TINY, "--threads=1", f"--out={out}"], capsys)
    one_line_error(code, err, ".lock is a directory, not a lock file")


def test_special_folders_and_sweeps_the_engine_cannot_run_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(["train", *TINY, "--out=/proc/earlyphase-runs"], capsys)
    one_line_error(code, err, "--out=/proc/earlyphase-runs: cannot make folders in /proc")
    sweep = tmp_path / "bayes.yaml"
    sweep.write_text("program: earlyphase\nmethod: bayes\nparameters:\n  seeds:\n    values: [0, 1]\n"
                     "command:\n  - earlyphase\n  - study\n  - ${args}\n")
    code, _, err = run_cli(["sweep", "run", str(sweep), f"--out={tmp_path}/runs", "--count=2"], capsys)
    one_line_error(code, err, 'Bayesian search requires "metric" section')
    assert not (tmp_path / "runs").exists()


def test_a_bad_matplotlib_backend_in_the_environment_does_not_stop_a_report(tmp_path):
    for seed in range(3):  # records enough for figures: reset and rewinding, three seeds, three levels
        write_imp(tmp_path / "runs", f"imp_reset_{seed}", seed, [0.9, 0.88, 0.8, 0.7], k=0)
        write_imp(tmp_path / "runs", f"imp_rewind_{seed}", seed, [0.9, 0.89, 0.85, 0.8 + 0.01 * seed], k=24)
    env = {**os.environ, "MPLBACKEND": "nonsense", "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", "report", str(tmp_path / "runs"), "-o",
                           str(tmp_path / "report")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = list((tmp_path / "report").glob("*.png"))
    assert figures and all(f.read_bytes()[:4] == b"\x89PNG" for f in figures)


def test_scores_that_are_not_finite_are_refused(tmp_path, capsys):
    args = ["pretrain", "--pretext=subset", "--subset_select=easy", "--subset_score_runs=1", "--width=4",
            "--pretrain_steps=2it", "--threads=1", f"--out={tmp_path}/runs"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    (scores_dir,) = (tmp_path / "runs").glob("scores_el2n_*")
    saved = load(scores_dir / "scores.pt")
    saved["scores"] = torch.full_like(saved["scores"], float("nan"))
    torch.save(saved, scores_dir / "scores.pt")
    before = (scores_dir / "scores.pt").read_bytes()
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, "scores.pt holds scores that are not finite numbers")
    assert (scores_dir / "scores.pt").read_bytes() == before


def _synthetic_runs(root: Path, gap: float) -> Path:
    for seed in range(3):
        write_imp(root, f"imp_reset_{seed}", seed, [0.9, 0.88, 0.8, 0.7], k=0)
        write_imp(root, f"imp_rewind_{seed}", seed, [0.9, 0.89, 0.85, 0.7 + gap + 0.01 * seed], k=24)
    return root


def test_two_reports_into_one_folder_leave_one_whole(tmp_path):
    """Two writers at once: the folder ends up holding one report, its HTML embedding its own figures."""
    a, b, out = _synthetic_runs(tmp_path / "a", 0.05), _synthetic_runs(tmp_path / "b", 0.10), tmp_path / "rep"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "earlyphase.studies.cli", "report", str(f), "-o", str(out)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for f in (a, b)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    data = json.loads((out / "report.json").read_text())
    alone = [json.loads((report.write_report([f], tmp_path / f"alone_{f.name}") / "report.json").read_text())
             for f in (a, b)]
    assert data in alone  # one report's records, not a mix
    html, markdown = (out / "report.html").read_text(), (out / "report.md").read_text()
    for png in out.glob("*.png"):
        assert base64.b64encode(png.read_bytes()).decode() in html  # the figures its own HTML embeds
    assert data["findings"][0].replace("**", "") in markdown.replace("**", "")
    assert not [p for p in tmp_path.glob(".rep.*") if p.is_dir()]  # no staging or previous folder (the lock stays)


def test_a_report_replaces_the_previous_one_whole_and_keeps_what_is_not_a_report(tmp_path, capsys):
    out = tmp_path / "rep"
    code, _, err = run_cli(["report", str(_synthetic_runs(tmp_path / "a", 0.05)), "-o", str(out)], capsys)
    assert code == 0, err
    (out / "old_figure.png").write_bytes(b"\x89PNG stale")  # a figure the next report does not draw
    (out / "notes.txt").write_text("mine")
    (out / "wandb").mkdir()
    (out / "wandb" / "run.wandb").write_text("offline run")
    code, _, err = run_cli(["report", str(_synthetic_runs(tmp_path / "b", 0.10)), "-o", str(out)], capsys)
    assert code == 0, err
    assert not (out / "old_figure.png").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "wandb" / "run.wandb").read_text() == "offline run"


def test_a_writer_killed_between_the_renames_loses_nothing(tmp_path, capsys):
    """What a kill -9 can leave: a staging folder and the previous report moved aside; the next writer puts the
    previous folder's own files back and reports."""
    out = tmp_path / "rep"
    old, staging = tmp_path / ".rep.ab12.old", tmp_path / ".rep.cd34.tmp"
    old.mkdir(), staging.mkdir()
    (old / "report.md").write_text("previous")
    (old / "notes.txt").write_text("mine")
    (staging / "report.md").write_text("half")
    code, _, err = run_cli(["report", str(_synthetic_runs(tmp_path / "a", 0.05)), "-o", str(out)], capsys)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine" and "previous" not in (out / "report.md").read_text()
    assert not old.exists() and not staging.exists()


def test_a_network_too_large_for_memory_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["imp", "--width=100000", "--training_steps=1ep", f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "--width=100000: the network does not fit in memory", "choose a smaller --width")


def test_an_empty_entry_in_a_list_is_refused(tmp_path, capsys):
    code, _, err = run_cli(["study", "--seeds=0,,1", f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "'0,,1' has an empty entry between commas")
    assert not (tmp_path / "runs").exists()
