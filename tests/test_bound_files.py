"""Every weights file a finished run's readers load is bound to the run that wrote it (issue 29 §1, 2, 10): its
sha256 is recorded in summary.json when the run finishes, and a file copied in from another run is refused in one
line by `imp`, and excluded with the reason by `report`, never used."""

import hashlib
import json
import shutil
from pathlib import Path

from conftest import one_line_error, run_cli

T = ["--dataset=digits", "--training_steps=2ep", "--milestone_steps=1ep", "--prune_fraction=0.5", "--threads=1"]


def imp(out, capsys, *extra):
    """An IMP run of T (width 4 and one level unless `extra` says otherwise); its directory."""
    given = {arg.split("=")[0] for arg in extra}
    defaults = [a for a in ("--width=4", "--levels=1") if a.split("=")[0] not in given]
    code, stdout, stderr = run_cli(["imp", *T, *defaults, f"--out={out}", *extra], capsys)
    assert code == 0, stderr
    return Path(stdout.strip().splitlines()[-1])


def test_summary_records_the_digests_of_the_files_a_run_wrote(tmp_path, capsys):
    a = imp(tmp_path / "runs", capsys)
    summary = json.loads((a / "level_0" / "summary.json").read_text())
    names = {p.name for p in (a / "level_0").glob("*.pt") if p.name in ("final.pt", "mask.pt")
             or p.name.startswith("weights_")}
    assert set(summary["files"]) == names and {"weights_24it.pt", "mask.pt"} <= names
    for name, digest in summary["files"].items():
        assert hashlib.sha256((a / "level_0" / name).read_bytes()).hexdigest() == digest


def test_another_runs_final_weights_are_refused_and_excluded(tmp_path, capsys):
    out = tmp_path / "runs"
    a, b = imp(out, capsys), imp(out, capsys, "--seed=1")
    w8 = imp(out, capsys, "--width=8")
    for other in (b, w8):  # another seed's weights, another width's
        shutil.copy(other / "level_1" / "final.pt", a / "level_1" / "final.pt")
        code, stdout, stderr = run_cli(["imp", *T, "--width=4", f"--out={out}", "--levels=2"], capsys)
        one_line_error(code, stderr, str(a / "level_1" / "final.pt"), "is not the file its run wrote")
        assert not (a / "level_2").exists()
        code, stdout, stderr = run_cli(["report", str(a), "-o", str(tmp_path / "report")], capsys)
        assert code == 0, stderr
        data = json.loads((tmp_path / "report" / "report.json").read_text())
        (why,) = [i["why"] for i in data["incomplete"] if i["run"].endswith("level_1")]
        assert "not the file its run wrote" in why  # listed with the reason, its accuracy not shown


def test_another_runs_rewind_point_is_refused(tmp_path, capsys):
    out = tmp_path / "runs"
    a, w8 = imp(out, capsys), imp(out, capsys, "--width=8")
    shutil.copy(w8 / "level_0" / "weights_24it.pt", a / "level_0" / "weights_24it.pt")
    code, stdout, stderr = run_cli(["imp", *T, "--width=4", f"--out={out}", "--levels=2"], capsys)
    one_line_error(code, stderr, "weights_24it.pt", "is not the file its run wrote")
    assert not (a / "level_2").exists()


def test_another_runs_mask_is_refused(tmp_path, capsys):
    out = tmp_path / "runs"
    a, b = imp(out, capsys), imp(out, capsys, "--seed=1")
    shutil.copy(b / "level_1" / "mask.pt", a / "level_1" / "mask.pt")  # the same shapes and density: only the digest
    code, stdout, stderr = run_cli(["imp", *T, "--width=4", f"--out={out}", "--levels=2"], capsys)
    one_line_error(code, stderr, str(a / "level_1" / "mask.pt"), "is not the file its run wrote")
    assert not (a / "level_2").exists()


def test_another_scores_runs_scores_are_refused(tmp_path, capsys):
    """scores.pt names the scores run that wrote it and the sha256 of the final.pt files it was computed from."""
    import torch

    out = tmp_path / "runs"
    args = ["pretrain", "--pretext=subset", "--subset_select=easy", "--subset_score_runs=1", "--subset_score_steps=2",
            "--pretrain_steps=2it", "--width=4", f"--out={out}"]
    for seed in (0, 1):
        assert run_cli(args + [f"--seed={seed}"], capsys)[0] == 0
    first, second = sorted(out.glob("scores_el2n_*"), key=lambda p: p.stat().st_mtime_ns)
    saved = torch.load(first / "scores.pt", weights_only=True)
    assert saved["run"] == first.name and saved["sources"] == {
        "run_0": hashlib.sha256((first / "run_0" / "final.pt").read_bytes()).hexdigest()}
    shutil.copy(second / "scores.pt", first / "scores.pt")
    code, _, stderr = run_cli(args + ["--seed=0", "--subset_fraction=0.3"], capsys)
    one_line_error(code, stderr, str(first / "scores.pt"), f"was written by {second.name}")
    # the right run's name but another scoring run's weights beneath it
    torch.save(saved | {"sources": {"run_0": "0" * 64}}, first / "scores.pt")
    code, _, stderr = run_cli(args + ["--seed=0", "--subset_fraction=0.3"], capsys)
    one_line_error(code, stderr, "was computed from another run_0/final.pt")
    assert len(list(out.glob("pretrain_subset_*"))) == 2


def test_another_widths_scoring_weights_are_refused_when_scores_are_recomputed(tmp_path, capsys):
    """Issue 29 §9: a scoring run's final.pt replaced by another width's, scores.pt removed: one line, no traceback."""
    out = tmp_path / "runs"
    args = ["pretrain", "--pretext=subset", "--subset_select=easy", "--subset_score_runs=1", "--subset_score_steps=2",
            "--pretrain_steps=2it", f"--out={out}"]
    for width in (4, 8):
        assert run_cli(args + [f"--width={width}"], capsys)[0] == 0
    w4, w8 = sorted(out.glob("scores_el2n_*"), key=lambda p: p.stat().st_mtime_ns)
    shutil.copy(w8 / "run_0" / "final.pt", w4 / "run_0" / "final.pt")
    (w4 / "scores.pt").unlink()
    code, _, stderr = run_cli(args + ["--width=4", "--subset_fraction=0.3"], capsys)
    one_line_error(code, stderr, str(w4 / "run_0" / "final.pt"), "is not the file its run wrote")
    assert not (w4 / "scores.pt").exists()
