"""`earlyphase study --jobs=J`: the units trained by J processes, each with its share of the CPU threads, with the
same results as one process with that thread count; workers stop with their parent, and the study resumes."""

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from earlyphase.studies.campaigns import shared_work
from earlyphase.studies.engine.locks import RunLock

FLAGS = ["--width=4", "--training_steps=2ep", "--milestone_steps=1ep", "--eval_every=2", "--levels=1",
        "--rewind_step=3it", "--pretrain_steps=3it", "--batch_size=128", "--conditions=reset,rewind,rotation",
        "--controls=", "--stability="]


def study(*args, env=None, **kwargs):
    environment = {k: v for k, v in os.environ.items() if k not in ("EARLYPHASE_THREADS", "OMP_NUM_THREADS")}
    return subprocess.run([sys.executable, "-m", "earlyphase.studies.cli", "study", *FLAGS, *args],
                          env={**environment, **(env or {})}, capture_output=True, text=True, timeout=600, **kwargs)


def tickets(study_dir: Path) -> dict:
    """Each unit's ticket records, but the `rewind` description (it names the runs folder's path)."""
    record = json.loads((study_dir / "study.json").read_text())
    return {(u["condition"], u["seed"]): [{k: v for k, v in t.items() if k != "rewind"} for t in json.loads(
        (study_dir.parent / u["imp_dir"] / "tickets.json").read_text())] for u in record["units"]}


def test_two_workers_give_the_results_of_one_process_with_their_thread_count(tmp_path):
    two = study(f"--out={tmp_path}/two", "--jobs=2", "--seeds=0,1")
    assert two.returncode == 0, two.stderr
    assert "study: 2 worker processes, 1 CPU thread(s) each" in two.stderr
    two_dir = Path(two.stdout.strip().splitlines()[-1])
    log = (two_dir / "workers" / "worker-1.log").read_text()
    one = study(f"--out={tmp_path}/one", "--jobs=1", "--threads=1", "--seeds=0,1")
    assert one.returncode == 0, one.stderr
    one_dir = Path(one.stdout.strip().splitlines()[-1])
    assert one_dir.name == two_dir.name and tickets(two_dir) == tickets(one_dir)  # bit for bit: same accuracies
    crossed = [{d: json.loads((p.parent / d / "crossed.json").read_text()) for d in json.loads(
        (p / "study.json").read_text())["crossed"]} for p in (two_dir, one_dir)]
    assert len(crossed[0]) == 4 and crossed[0] == crossed[1]  # the crossed tickets too
    # every training ran once, in one process or the other (shared_work's claims), none twice or skipped
    trained = [line.split(": density")[0] for line in (two.stderr + log).splitlines() if line.endswith("(done)")]
    alone = [line.split(": density")[0] for line in one.stderr.splitlines() if line.endswith("(done)")]
    assert sorted(trained) == sorted(alone) and len(alone) == 6 * 2 + 4 * 2  # units' 2 levels, pairs' 2 parts
    assert {(two_dir / "claims" / f"{kind}-{n}" / ".lock").is_file() for kind, count in (("unit", 6), ("pair", 4))
            for n in range(count)} == {True}
    report = json.loads((two_dir / "report" / "report.json").read_text())
    assert report["incomplete"] == [] and len(report["conditions"]) == 3
    # --jobs is a platform field: under a sweep's share of threads the default is one process
    shared = study(f"--out={tmp_path}/one", "--seeds=0,1", env={"EARLYPHASE_THREADS": "1"})
    assert shared.returncode == 0 and "worker processes" not in shared.stderr


def test_killing_the_parent_stops_every_worker_and_the_study_resumes(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k not in ("EARLYPHASE_THREADS", "OMP_NUM_THREADS")}
    args = [sys.executable, "-m", "earlyphase.studies.cli", "study", *FLAGS, "--cross_levels=none", f"--out={tmp_path}",
            "--jobs=2", "--seeds=0,1,2"]
    parent = subprocess.Popen(args, env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob("study_*/workers/worker-1.log")) and time.time() < deadline:
        assert parent.poll() is None, "the study ended before it could be killed"
        time.sleep(0.05)
    log = next(tmp_path.glob("study_*/workers/worker-1.log"))
    while "imp level" not in log.read_text() and time.time() < deadline:  # the worker is training
        time.sleep(0.05)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    time.sleep(2)
    workers = subprocess.run(["pgrep", "-f", "--", f"--out={tmp_path} --jobs=2 --seeds=0,1,2 --worker="],
                             capture_output=True, text=True)
    assert workers.returncode == 1 and workers.stdout.strip() == "", "a worker trains on after its parent was killed"
    rerun = subprocess.run(args, env=environment, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(next(tmp_path.glob("study_*/report/report.json")).read_text())
    assert report["incomplete"] == [] and {len(c["seeds"]) for c in report["conditions"]} == {3}


class FakeProcess:
    """A child that records its command and environment and takes a moment to finish (so the pool's slots
    overlap)."""

    started: list = []

    def __init__(self, args, env=None, **_):
        self.args, self.env = args, env
        FakeProcess.started.append(self)

    def wait(self):
        time.sleep(0.3)
        return 0

    def poll(self):
        return 0


def test_each_worker_gets_its_share_of_threads_and_a_gpu_of_its_own(tmp_path, monkeypatch, capsys):
    """Boxes with several GPUs (tested by what each worker is given: no GPU here): `sweep run --jobs=J` and `study
    --jobs=J` give each worker CUDA_VISIBLE_DEVICES = one visible GPU, round-robin."""
    import yaml

    from earlyphase.studies import cli
    from earlyphase.studies.campaigns import study as study_cmd
    from earlyphase.studies.campaigns import sweep as sweep_cmd
    from earlyphase.studies.engine import threads

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv("EARLYPHASE_THREADS", "4")
    assert threads.visible_gpus() == ["3", "5"]
    assert [threads.worker_environment(i, 2, ["3", "5"])["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["3", "5", "3"]
    path = tmp_path / "four.yaml"
    path.write_text(yaml.safe_dump({"program": "earlyphase", "method": "grid",
                                    "parameters": {"seed": {"values": [0, 1, 2, 3]}},
                                    "command": ["${env}", "earlyphase", "train", "--width=4", "${args}"]}))
    FakeProcess.started = []
    fake = types.SimpleNamespace(**{k: getattr(subprocess, k) for k in ("STDOUT", "DEVNULL", "PIPE", "run")},
                                 Popen=FakeProcess)  # the modules' own subprocess, not everyone's
    monkeypatch.setattr(sweep_cmd, "subprocess", fake)
    assert cli.main(["sweep", "run", str(path), f"--out={tmp_path}/runs", "--jobs=2"]) == 0
    envs = [p.env for p in FakeProcess.started]
    assert len(envs) == 4 and {e["EARLYPHASE_THREADS"] for e in envs} == {"2"}
    assert {e["CUDA_VISIBLE_DEVICES"] for e in envs} == {"3", "5"}  # both GPUs used, one per slot
    assert "GPUs 3, 5 round-robin" in capsys.readouterr().err
    # a study's workers: worker I gets GPU I mod n; this process (worker 0) keeps the first
    FakeProcess.started = []
    monkeypatch.setattr(study_cmd, "subprocess", fake)
    monkeypatch.setattr(study_cmd, "run", lambda cfg, units: (cfg.worker, None))
    cfg = study_cmd.parse(["--jobs=3", f"--out={tmp_path}/runs"])
    assert study_cmd.run_with_workers(cfg, ["--jobs=3"], 3, []) == ("0/3", None)
    assert [(p.args[-1], p.env["CUDA_VISIBLE_DEVICES"], p.env["EARLYPHASE_THREADS"]) for p in FakeProcess.started] == [
        ("--worker=1/3", "5", "1"), ("--worker=2/3", "3", "1")]


def shared_items(order: list, *specs):
    """shared_work items named by `specs` (name, needs) whose jobs record the order they ran in."""
    def job(name):
        order.append(name)
        return
        yield  # a scheduler job that needs no training

    return [shared_work.Item(name, needs, functools.partial(job, name)) for name, needs in specs]


def test_shared_work_takes_free_items_first_and_waits_only_when_all_are_held(tmp_path):
    order: list = []
    items = shared_items(order, ("unit-0", ()), ("unit-1", ()), ("unit-2", ()), ("pair-0", ("unit-0", "unit-1")))
    held = RunLock(tmp_path / "unit-0")  # another process works on unit-0
    assert held.try_acquire()
    threading.Timer(0.5, held.release).start()
    for _ in shared_work.walk(items, tmp_path):
        pass
    # the free units first; the pair waits for unit-0, found done once its holder lets it go
    assert order == ["unit-1", "unit-2", "unit-0", "pair-0"]
    order.clear()
    for _ in shared_work.walk(items, tmp_path, worker=1, workers=2):  # worker 1 of 2: its share first, when ready
        pass
    assert order == ["unit-1", "unit-0", "pair-0", "unit-2"]  # its share: unit-1 and pair-0
    for bad in ([("a", ("b",)), ("b", ("a",))], [("a", ("c",))], [("a", ()), ("a", ())]):
        with pytest.raises(ValueError, match="shared work"):
            list(shared_work.walk(shared_items([], *bad), tmp_path))
