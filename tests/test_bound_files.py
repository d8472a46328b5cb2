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
    names = {p.name for p in (a / "level_0").glob("*.pt") if p.name == "final.pt" or p.name.startswith("weights_")}
    assert set(summary["files"]) == names and "weights_24it.pt" in names
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
