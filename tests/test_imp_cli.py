"""`earlyphase imp` as a command: output, bad inputs, and a real kill -9 in the middle of a level."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from earlyphase.studies.engine import models
from earlyphase.studies.jobs import imp as imp_job
from earlyphase.studies.jobs.flags import parse_overrides

from conftest import run_cli

FLAGS = ["--width=4", "--training_steps=1ep", "--rewind_step=5it", "--prune_fraction=0.5"]


def test_prints_the_table_then_the_run_dir_last(out, capsys):
    args = ["imp", f"--out={out}", *FLAGS, "--levels=1", "--controls=random_reinit"]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0
    lines = stdout.strip().splitlines()
    run_dir = lines[-1]
    assert os.path.basename(run_dir).startswith("imp_") and os.path.dirname(run_dir) == str(out)
    assert lines[0].split() == ["level", "density", "%", "trunk", "acc", "random_reinit", "acc"]
    tickets = json.loads(open(os.path.join(run_dir, "tickets.json")).read())
    assert lines[1].split()[:3] == ["0", "100.00", f"{tickets[0]['test_accuracy']:.4f}"]
    assert lines[2].split() == [
        "1",
        "50.00",
        f"{tickets[1]['test_accuracy']:.4f}",
        f"{tickets[2]['test_accuracy']:.4f}",
    ]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0 and stdout.strip().splitlines()[-1] == run_dir
    assert stderr.count("already finished") == 3


def _rewind_file(path, width, arch=True, step=2):
    model = models.create("cifar_resnet20", width=width)
    state = {"model": model.state_dict(), "mask": None, "description": "test"}
    if step is not None:
        state["step"] = step
    if arch:
        state["arch"] = {"model": "cifar_resnet20", "width": width, "num_classes": 10}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("args,message", [
    (["--prune_fraction=0"], "--prune_fraction=0.0: must be strictly between 0 and 1"),
    (["--prune_fraction=1"], "strictly between 0 and 1"),
    (["--prune_fraction=1.5"], "strictly between 0 and 1"),
    (["--levels=-1"], "--levels=-1"),
    (["--rewind_step=2ep"], "(46it) is not before the end of training (1ep = 23it)"),
    (["--rewind_step=soon"], "--rewind_step"),
    (["--rewind_from=/nonexistent/run"], "no rewind point there"),
    (["--rewind_from=WIDTH8"], "width=8 but this run builds width=4"),
    (["--rewind_from=NOARCH8"], "does not fit cifar_resnet20 width 4"),
    (["--rewind_from=TEXT"], "TEXT is not a PyTorch file"),
    (["--rewind_from=CORRUPT"], "is corrupt or unreadable"),
    (["--rewind_from=NOTAPOINT"], "is not a rewind point"),
    (["--rewind_from=GOOD", "--rewind_optimizer=rewound"], "holds none: use fresh"),
    (["--rewind_from=NOSTEP"], "does not say which step it stands for"),
    (["--rewind_from=LATE"], "stands for step 23it, which is not before the end of training"),
    (["--rewind_step=23it"], "--rewind_step=23it (23it) is not before the end of training"),
    (["--rewind_optimizer=momentum"], "choose fresh or rewound"),
    (["--controls=random_reinit,random_prune"], "unknown control 'random_prune'"),
    (["--prune_ignore=bn.weight"], "not a prunable weight"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(out, tmp_path, capsys, args, message):
    files = {
        "WIDTH8": _rewind_file(tmp_path / "w8.pt", 8),
        "NOARCH8": _rewind_file(tmp_path / "n8.pt", 8, arch=False),
        "GOOD": _rewind_file(tmp_path / "good.pt", 4),
        "CORRUPT": tmp_path / "bad.pt",
        "NOTAPOINT": tmp_path / "np.pt",
        "TEXT": tmp_path / "TEXT",
        "NOSTEP": _rewind_file(tmp_path / "nostep.pt", 4, step=None),
        "LATE": _rewind_file(tmp_path / "late.pt", 4, step=23),
    }
    files["TEXT"].write_bytes(b"not a checkpoint")
    files["CORRUPT"].write_bytes(files["GOOD"].read_bytes()[:300])  # a torch file cut short
    torch.save({"weights": 1}, files["NOTAPOINT"])
    args = [a.split("=")[0] + "=" + str(files[a.split("=")[1]]) if a.split("=")[1] in files else a for a in args]
    given = {a.split("=")[0] for a in args}  # a flag is given once: the case's value replaces FLAGS's
    code, stdout, stderr = run_cli(["imp", f"--out={out}", *[t for t in FLAGS if t.split("=")[0] not in given], *args],
                                capsys)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "concurrent", [[], ["--controls=random_reinit", "--concurrent=2"]], ids=["sequential", "streams"]
)
def test_kill_9_during_a_level_then_rerun_matches_uninterrupted(out, concurrent):
    # with --concurrent=2 (streams) the killed run trains level L's trunk and control interleaved, the
    # reference one after the other: bit-identical all the same
    flags = ["--width=4", "--training_steps=2ep", "--rewind_step=5it", "--prune_fraction=0.5", "--levels=2",
             *concurrent[:1]]
    full_dir, _ = imp_job.run(parse_overrides(imp_job.ImpConfig, flags + [f"--out={out}/full"]))  # the reference
    args = [sys.executable, "-m", "earlyphase.studies.cli", "imp", *flags, *concurrent[1:], f"--out={out}/killed"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same kernels as the reference
    killed = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_dir = out / "killed" / full_dir.name
    deadline = time.time() + 120
    while time.time() < deadline and not (killed_dir / "level_1" / "checkpoint.pt").exists():
        time.sleep(0.005)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert (killed_dir / "level_1" / "checkpoint.pt").exists(), "killed too late: level 1 had finished"
    assert not (killed_dir / "level_1" / "summary.json").exists()
    assert len(json.loads((killed_dir / "tickets.json").read_text())) == 1  # only level 0 finished

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    assert rerun.stdout.strip().splitlines()[-1] == str(killed_dir)
    assert [line for line in rerun.stderr.splitlines() if "level 0 trunk" in line][0].endswith("(already finished)")
    assert (killed_dir / "tickets.json").read_text() == (full_dir / "tickets.json").read_text()
    for part in ("level_1", "level_2") + (("level_1/random_reinit", "level_2/random_reinit") if concurrent else ()):
        a = torch.load(full_dir / part / "final.pt", weights_only=True)["model"]
        b = torch.load(killed_dir / part / "final.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), part
