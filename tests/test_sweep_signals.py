"""`earlyphase sweep run` stops with its children (issue 29 §18, §21): SIGTERM reaches the running study at once
(resumable, recorded as not done), kill -9 of the sweep leaves no child training on its own, and a run's log is
appended to, never truncated. A FIFO where a record belongs is refused, never read (§19)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY, final_weights, one_line_error, run_cli, same_state

SLOW = ["${env}", "earlyphase", "train", "--width=4", "--training_steps=40ep", "--threads=1", "${args}"]


def start_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    path, out = tmp_path / "slow.yaml", tmp_path / "runs"
    path.write_text(yaml.safe_dump({"program": "earlyphase", "method": "grid",
                                    "parameters": {"seed": {"values": [0]}}, "command": SLOW}))
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "earlyphase.studies.cli", "sweep", "run", str(path),
                              f"--out={out}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob("train_*/metrics.jsonl")) and time.time() < deadline:  # the child is training
        time.sleep(0.1)
    assert list(out.glob("train_*/metrics.jsonl")), "the sweep's run never started training"
    return sweep, path, out


def children_of(out: Path) -> list[int]:
    """Processes whose command line names this sweep's --out (its children, wherever they were reparented)."""
    found = subprocess.run(["pgrep", "-f", "--", f"--out={out}"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def wait_gone(pids: list[int], seconds: float = 30) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not any(Path(f"/proc/{p}").exists() and "zombie" not in _state(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_sigterm_stops_the_running_study_at_once_and_a_rerun_resumes(tmp_path):
    sweep, path, out = start_sweep(tmp_path)
    child = [p for p in children_of(out) if p != sweep.pid]
    assert child
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=60) == 143
    assert wait_gone(child)
    (ledger_dir,) = (out / "sweeps").iterdir()
    ledger = json.loads((ledger_dir / "ledger.json").read_text())
    assert [v["returncode"] for v in ledger.values()] != [0]  # stopped, so not recorded as done
    assert not list(out.glob("train_*/summary.json"))
    log = (ledger_dir / "run-0000.log").read_text()
    assert log.count("=== --seed=0: started by process") == 1 and "interrupted" in log


def test_kill_9_of_the_sweep_leaves_no_child_training(tmp_path):
    sweep, path, out = start_sweep(tmp_path)
    child = [p for p in children_of(out) if p != sweep.pid]
    assert child
    sweep.kill()
    sweep.wait()
    assert wait_gone(child)  # PR_SET_PDEATHSIG: the study got SIGTERM when its parent died


def test_a_fifo_where_a_record_belongs_is_refused_not_read(tmp_path, capsys):
    code, stdout, _ = run_cli(["imp", *TINY, "--rewind_step=3it", "--levels=1", "--threads=1",
                               f"--out={tmp_path}/runs"], capsys)
    run = Path(stdout.strip().splitlines()[-1])
    (run / "level_1" / "summary.json").unlink()
    os.mkfifo(run / "level_1" / "summary.json")
    code, _, err = run_cli(["imp", *TINY, "--rewind_step=3it", "--levels=1", "--threads=1",
                            f"--out={tmp_path}/runs"], capsys)
    one_line_error(code, err, "summary.json is not a regular file")
    code, _, err = run_cli(["report", str(run), "-o", str(tmp_path / "rep")], capsys)
    assert code == 0 and "not a regular file" in (tmp_path / "rep" / "report.json").read_text()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_print_the_interrupt_line_and_a_rerun_resumes_identically(out, tmp_path, sig, code):
    args = ["train", "--width=2", "--training_steps=12ep", "--eval_every=12", "--checkpoint_every=1"]
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", *args, f"--out={reference}"], check=True,
                   capture_output=True)
    process = subprocess.Popen([sys.executable, "-m", "earlyphase.studies.cli", *args, f"--out={out}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("train_*/checkpoint.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert err.strip().splitlines()[-1] == "earlyphase: interrupted; rerun the same command to resume"
    (run,) = out.glob("train_*")
    assert not (run / "summary.json").exists() and (run / "checkpoint.pt").exists()
    assert not list(run.glob("*.tmp"))
    done = subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", *args, f"--out={out}"], check=True,
                          capture_output=True, text=True)
    assert done.returncode == 0
    (finished,) = reference.glob("train_*")
    assert same_state(final_weights(run), final_weights(finished))
