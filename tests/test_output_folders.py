"""Where output goes: an --out or -o that cannot hold it is one line before anything is written; a write the file
system refuses or a full disk is one line, loses nothing and a rerun finishes identically; reports are replaced
whole, whoever writes or is killed meanwhile; a folder where a lock file goes is one line."""

import base64
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from earlyphase.studies import cli
from earlyphase.studies.engine import checkpoints
from earlyphase.studies.reporting import report

from conftest import TINY, final_weights, one_line_error, run_cli, same_state, write_imp

RESUMABLE = ["--width=4", "--training_steps=4ep", "--milestone_steps=2ep,3ep", "--eval_every=1"]


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


def _mount_tmpfs(path, size):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _synthetic_runs(root: Path, gap: float) -> Path:
    for seed in range(3):
        write_imp(root, f"imp_reset_{seed}", seed, [0.9, 0.88, 0.8, 0.7], k=0)
        write_imp(root, f"imp_rewind_{seed}", seed, [0.9, 0.89, 0.85, 0.7 + gap + 0.01 * seed], k=24)
    return root


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


def test_a_write_the_file_system_refuses_is_one_line(out, monkeypatch, capsys):
    def refuse(path, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(checkpoints, "_write_new", refuse)
    code, _, stderr = run_cli(["train", f"--out={out}", *TINY], capsys)
    one_line_error(code, stderr, "config.json", "Permission denied", "choose another --out")


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


def test_a_report_killed_while_writing_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    root = tmp_path / "runs"
    for s in range(3):
        write_imp(root, f"imp_a{s}", s, [0.9, 0.8])
        write_imp(root, f"imp_z{s}", s, [0.9, 0.7], k=0)
    out = tmp_path / "rep"
    assert cli.main(["report", str(root), "-o", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def dies_halfway(self, target, *args, **kwargs):  # a kill or a full disk in the middle of a figure
        (target.write if hasattr(target, "write") else open(target, "wb").write)(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", dies_halfway)
    with pytest.raises(OSError):
        from earlyphase.studies.reporting import report
        report.write_report([root], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no half file, no temporary left
