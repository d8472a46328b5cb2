"""Shared test setup: W&B off, a fresh runs folder per test, and the helpers several test files use (run the CLI
in-process, check its one-line error, load saved weights, compare states)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# The tests' studies run in the test process (one per study): a process given its threads by a parent does not
# start worker processes of its own (study --jobs=0). The same count as the default: nothing else changes.
# tests/test_study_workers.py unsets it to test the workers.
os.environ.setdefault("EARLYPHASE_THREADS", str(max(1, len(os.sched_getaffinity(0)))))


TINY = ["--width=4", "--training_steps=1ep"]  # the smallest training that has an epoch, for tests of wiring


@pytest.fixture
def out(tmp_path):
    """A fresh runs folder for a test."""
    return tmp_path / "runs"


def run_cli(args, capsys):
    """(exit code, stdout, stderr) of `earlyphase ARGS`, run in this process."""
    from earlyphase.studies import cli

    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code, stderr, *words):
    """The error is one line, the last on stderr (imp prints its progress there before it); returns it."""
    assert code == 2, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("earlyphase: error: ") and stderr.count("earlyphase: error") == 1, stderr
    assert "Traceback" not in stderr and all(w in line for w in words), line
    return line


def load(path):
    """A saved file, as the product loads it (weights_only)."""
    return torch.load(path, weights_only=True)


def final_weights(path):
    """The model state of a final.pt (or of RUN_DIR/final.pt)."""
    path = os.fspath(path)
    return load(path if path.endswith(".pt") else os.path.join(path, "final.pt"))["model"]


def same_state(a, b):
    """Two state dicts hold the same tensors, bit for bit."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_9_then_rerun(argv: list[str], out: Path) -> tuple[Path, Path]:
    """`earlyphase ARGV` run to the end in out/full, and in out/killed killed with SIGKILL once its first
    checkpoint exists, then rerun there; returns (the uninterrupted run dir, the killed-and-rerun one)."""
    args = [sys.executable, "-m", "earlyphase.studies.cli", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    full = subprocess.run(args + [f"--out={out}/full"], env=env, capture_output=True, text=True, check=True)
    full_dir = Path(full.stdout.strip().splitlines()[-1])
    proc = subprocess.Popen(args + [f"--out={out}/killed"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    killed_dir = out / "killed" / full_dir.name
    deadline = time.time() + 120
    while not (killed_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "summary.json").exists(), "the run finished before it could be killed"
    rerun = subprocess.run(args + [f"--out={out}/killed"], env=env, capture_output=True, text=True, check=True)
    assert rerun.stdout.strip().splitlines()[-1] == str(killed_dir)
    return full_dir, killed_dir


def sweep_file(folder: Path, text: str) -> Path:
    """A sweep file holding `text` (YAML, possibly hostile)."""
    path = folder / "s.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- run records written without training (reports)
T_975_2 = 4.302652729749462  # Student's t, 97.5% quantile, 2 degrees of freedom (3 seeds), from tables
DENSITIES = (1.0, 0.5, 0.25, 0.125)


def write_imp(root, name, seed, accuracies, *, k=24, controls=None, pretext=None, densities=DENSITIES, **config):
    """An IMP run directory as `earlyphase imp` writes it (config.json, tickets.json), without training."""
    d = root / name
    d.mkdir(parents=True)
    base = {"kind": "imp", "seed": seed, "levels": len(accuracies) - 1, "dataset": "digits", "training_steps": "60it",
            "training_steps_it": 60, "lr": 0.1, "milestone_steps": "30it", "gamma": 0.1, "warmup_steps": "0it",
            "batch_size": 64, "threads": 2, "rewind_step": f"{k}it", "rewind_step_it": k, **config}
    if pretext:
        base.update(
            rewind_step=None,
            rewind_from=f"/elsewhere/pretrain_{pretext}_{seed}",
            rewind_point={
                "step": k,
                "description": f"{pretext} seed {seed}",
                "pretext": {"name": pretext, "pretrain_steps": f"{k}it", "options": {}, "seed": seed},
            },
        )
    (d / "config.json").write_text(json.dumps(base))
    tickets = [{"level": i, "kind": "trunk", "density": densities[i], "test_accuracy": a, "seed": seed}
               for i, a in enumerate(accuracies)]
    for kind, accs in (controls or {}).items():
        tickets += [{"level": i + 1, "kind": kind, "density": densities[i + 1], "test_accuracy": a, "seed": seed}
                    for i, a in enumerate(accs)]
    (d / "tickets.json").write_text(json.dumps(tickets))
    return d


def write_stability(run, level, instabilities_by_setting, density=1.0):
    folder = run / f"level_{level}" / "stability"
    folder.mkdir(parents=True)
    path = [{"alpha": a, "test_error": 0.1, "train_error": 0.05} for a in (0.0, 0.5, 1.0)]
    (folder / "stability.json").write_text(json.dumps({setting: {
        "level": level, "instability": x, "train_instability": x / 2, "path": path, "density": density}
        for setting, x in instabilities_by_setting.items()}))
