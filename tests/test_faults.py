"""Faults end in one line (exit 2) and lose nothing: a write the file system refuses, a full disk
(simulated by a failing write, and for real on a tiny tmpfs where this machine allows mounting one),
corrupt records; reruns recover and finish as an uninterrupted run does."""

import errno
import json
import os
import shutil
import subprocess

import pytest
import torch

from earlyphase.studies.engine import checkpoints
from earlyphase.studies.engine.trainer import train
from earlyphase.studies.jobs import setup
from earlyphase.studies.jobs.config import TrainConfig

from conftest import TINY, final_weights, one_line_error, run_cli, same_state

RESUMABLE = ["--width=4", "--training_steps=4ep", "--milestone_steps=2ep,3ep", "--eval_every=1"]


def test_a_write_the_file_system_refuses_is_one_line(out, monkeypatch, capsys):
    def refuse(path, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(checkpoints, "_write_new", refuse)
    code, _, stderr = run_cli(["train", f"--out={out}", *TINY], capsys)
    one_line_error(code, stderr, "config.json", "Permission denied", "choose another --out")


def _tiny_run(out):
    cfg = setup.validate(TrainConfig(out=str(out), width=4, training_steps="4ep", eval_every=1))
    device = torch.device("cpu")
    data = setup.load_data(cfg, device)
    return setup.make_model(cfg, data, device), data, setup.make_plan(cfg, data, device)


# ------------------------------------------------------------------------------- a full disk
def _fill_disk_at(monkeypatch, name, nth):
    """The nth write of a file called `name` writes half its data, then fails as a full disk does."""
    calls = {"n": 0}
    real_new, real_append = checkpoints._write_new, checkpoints._append

    def full(path, data, real):
        if path.name.startswith(name):
            calls["n"] += 1
            if calls["n"] == nth:
                real(path, data[:len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(checkpoints, "_write_new", lambda p, d: full(p, d, real_new))
    monkeypatch.setattr(checkpoints, "_append", lambda p, t: full(p, t, real_append))


@pytest.mark.parametrize("name,nth", [("checkpoint.pt", 2), ("metrics.jsonl", 3), ("summary.json", 1)])
def test_a_full_disk_is_one_line_leaves_no_partial_file_and_a_rerun_finishes_identically(out, monkeypatch, capsys,
                                                                                          name, nth):
    args = ["train", *RESUMABLE]
    assert run_cli(args + [f"--out={out}/full"], capsys)[0] == 0
    with monkeypatch.context() as patch:
        _fill_disk_at(patch, name, nth)
        code, _, stderr = run_cli(args + [f"--out={out}/filled"], capsys)
    (folder,) = (out / "filled").iterdir()
    one_line_error(code, stderr, "the disk is full", str(folder / name), "free some space and rerun")
    assert not list(out.rglob("*.tmp")) and not (folder / "summary.json").exists()
    code, stdout, _ = run_cli(args + [f"--out={out}/filled"], capsys)
    assert code == 0 and stdout.strip().splitlines()[-1] == str(folder)
    reference = out / "full" / folder.name
    assert same_state(final_weights(reference / "final.pt"), final_weights(folder / "final.pt"))
    for record in ("metrics.jsonl", "summary.json"):
        assert (reference / record).read_text() == (folder / record).read_text()


def _mount_tmpfs(path, size):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("mount") is None, reason="needs mount")
def test_a_real_full_disk_then_more_space_resumes_identically(out, tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "160k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        args = ["train", *RESUMABLE]
        code, _, stderr = run_cli(args + [f"--out={disk}"], capsys)
        one_line_error(code, stderr, "the disk is full", str(disk), "rerun")
        assert not list(disk.rglob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        code, stdout, _ = run_cli(args + [f"--out={disk}"], capsys)
        assert code == 0
        folder = stdout.strip().splitlines()[-1]
        assert run_cli(args + [f"--out={out}"], capsys)[0] == 0
        reference = out / os.path.basename(folder)
        assert same_state(final_weights(reference / "final.pt"), final_weights(os.path.join(folder, "final.pt")))
        assert (reference / "metrics.jsonl").read_text() == open(os.path.join(folder, "metrics.jsonl")).read()
    finally:
        if subprocess.run(["umount", str(disk)]).returncode:
            subprocess.run(["umount", "-l", str(disk)], check=True)  # lazily, should a file still be open there


# ------------------------------------------------------------------------------- corrupt records
@pytest.mark.parametrize("content,problem", [("{\"test_acc", "not valid JSON"), ("[]", "not a JSON object"),
                                             ("{\"step\": 1}", "no 'test_accuracy'")])
def test_a_corrupt_summary_is_one_line_naming_it_and_the_fix(out, capsys, content, problem):
    args = ["train", f"--out={out}", *TINY]
    code, stdout, _ = run_cli(args, capsys)
    summary = os.path.join(stdout.strip().splitlines()[-1], "summary.json")
    with open(summary, "w") as f:
        f.write(content)
    code, _, stderr = run_cli(args, capsys)
    one_line_error(code, stderr, summary, problem, "move it away to train that run again")
    assert open(summary).read() == content


def test_a_corrupt_density_record_is_one_line_naming_it(out, capsys):
    args = ["imp", f"--out={out}", *TINY, "--rewind_step=5it", "--prune_fraction=0.5", "--levels=1"]
    code, stdout, _ = run_cli(args, capsys)
    density = os.path.join(stdout.strip().splitlines()[-1], "level_1", "density.json")
    with open(density, "w") as f:
        f.write("{\"dens")
    code, _, stderr = run_cli(args, capsys)
    one_line_error(code, stderr, density, "not valid JSON", "rebuilt from mask.pt")
    os.remove(density)  # the fix the line names
    code, _, _ = run_cli(args, capsys)
    assert code == 0 and json.load(open(density))["density"] == 0.5


def test_metrics_lines_that_are_not_records_are_dropped_on_resume(out):
    class Crash(Exception):
        pass

    def crash_at(step):
        def hook(s, model, loss):
            if s == step:
                raise Crash
        return hook

    model, data, plan = _tiny_run(out)
    train(model, data, plan, out / "full")
    model, data, plan = _tiny_run(out)
    with pytest.raises(Crash):
        train(model, data, plan, out / "resumed", step_hooks=[crash_at(60)])
    with (out / "resumed" / "metrics.jsonl").open("a") as f:
        f.write('[1, 2]\n"text"\n17\nnull\n{"no_step": true}\n{"step": "46"}\n')
    model, data, plan = _tiny_run(out)
    assert train(model, data, plan, out / "resumed").resumed_from == 46
    assert (out / "full" / "metrics.jsonl").read_text() == (out / "resumed" / "metrics.jsonl").read_text()
    assert same_state(final_weights(out / "full" / "final.pt"), final_weights(out / "resumed" / "final.pt"))
