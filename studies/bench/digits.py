"""`earlyphase bench --digits`: the main job's own trainings (the quick preset's digits training: width 12, batch 64,
`--digits_epochs` epochs) at 1 and 2 threads in this process, and as two 1-thread processes at once, so that
anyone can re-measure on their machine whether `earlyphase study` should train in worker processes (its default
`--jobs=0` takes one per core on the CPU).

Each timing is one whole `trainer.train` call into a fresh folder (every per-epoch cost counted), after the data is
loaded; the two processes are started, import, load, then wait for one go signal (a file) and time themselves, so
neither's start-up nor its exit is counted (each reports when its training ended). Reported: steps per second per
training and in aggregate, and the time of two trainings as two 1-thread processes at once relative to one after the
other in one 2-thread process (below 1: workers pay).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, os, sys, time
from pathlib import Path
from earlyphase.studies.bench.digits import timed_training
go, epochs, out, ready = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
prepared = timed_training(epochs, out, threads=1, prepare_only=True)
ready.touch()
while not go.exists():
    time.sleep(0.005)
print(json.dumps(prepared() | {"ended": time.monotonic()}))
"""


def _config(epochs: int, out: str, threads: int):
    from ..jobs.config import TrainConfig

    return TrainConfig(dataset="digits", width=12, batch_size=64, training_steps=f"{epochs}ep",
                       milestone_steps=f"{max(1, epochs // 2)}ep", eval_every=epochs, checkpoint_every=epochs,
                       threads=threads, out=out, seed=0)


def timed_training(epochs: int, out: str, threads: int, prepare_only: bool = False):
    """One quick-preset digits training timed as a whole: {"seconds", "steps"} (or, prepare_only, a callable that
    runs it: the data loaded and the model built first)."""
    from ..engine import threads as thread_count
    from ..engine.trainer import train
    from ..jobs import setup
    from ..jobs.config import run_dir

    thread_count.apply(threads)
    cfg = setup.validate(_config(epochs, out, threads))
    device = setup.resolve_device(cfg.device)
    data = setup.load_data(cfg, device)
    plan = setup.make_plan(cfg, data, device, progress="bench digits")
    model = setup.make_model(cfg, data, device)
    folder = run_dir("train", cfg)

    def run() -> dict:
        start = time.perf_counter()
        train(model, data, plan, folder)
        return {"seconds": time.perf_counter() - start, "steps": plan.end - plan.start}

    return run if prepare_only else run()


def two_processes(epochs: int) -> dict:
    """Two 1-thread trainings at once, each in its own process: the wall time both took and each one's."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "EARLYPHASE_THREADS": "1"}
        ready = [Path(tmp) / f"ready{i}" for i in range(2)]
        children = [subprocess.Popen([sys.executable, "-c", CHILD, str(go), str(epochs), f"{tmp}/run{i}",
                                      str(ready[i])], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True) for i in range(2)]
        deadline = time.time() + 300
        while time.time() < deadline and not all(r.exists() for r in ready):
            if any(c.poll() not in (None, 0) for c in children):
                raise RuntimeError("a timing process failed before it started")
            time.sleep(0.02)
        start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
        go.touch()
        results = [json.loads(c.communicate(timeout=600)[0].strip().splitlines()[-1]) for c in children]
        # from the go signal to the last training's end: the processes' exits (~1 s with torch loaded) are not
        # trainings' time (counting them read 68 steps/s in aggregate where the trainings ran at 95)
        return {"wall_s": max(r["ended"] for r in results) - start, "each_s": [r["seconds"] for r in results],
                "steps": results[0]["steps"]}


def measure_digits(epochs: int = 6) -> dict:
    """One 2-thread, one 1-thread training here, then two 1-thread processes at once."""
    with tempfile.TemporaryDirectory() as tmp:
        two = timed_training(epochs, f"{tmp}/t2", threads=2)
        one = timed_training(epochs, f"{tmp}/t1", threads=1)
    pair = two_processes(epochs)
    steps = two["steps"]
    return {"digits_steps": steps, "digits_epochs": epochs,
            "one_process_2_threads_steps_per_s": steps / two["seconds"],
            "one_process_1_thread_steps_per_s": steps / one["seconds"],
            "two_processes_1_thread_steps_per_s_aggregate": 2 * steps / pair["wall_s"],
            "two_processes_vs_sequential": pair["wall_s"] / (2 * two["seconds"])}


def table(result: dict) -> str:
    return "\n".join([
        f"digits quick-preset training ({result['digits_epochs']} epochs, {result['digits_steps']} steps, width 12, "
        f"batch 64):",
        f"  one process, 2 threads : {result['one_process_2_threads_steps_per_s']:7.1f} steps/s",
        f"  one process, 1 thread  : {result['one_process_1_thread_steps_per_s']:7.1f} steps/s",
        f"  two processes, 1 thread each, at once: {result['two_processes_1_thread_steps_per_s_aggregate']:7.1f} "
        f"steps/s in aggregate",
        f"  two trainings as two processes / one after the other with 2 threads: "
        f"{result['two_processes_vs_sequential']:.2f} (below 1: study's worker processes pay)"])
