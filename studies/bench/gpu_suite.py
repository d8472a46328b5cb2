"""`earlyphase bench --gpu-suite`: the one prepared script for a short GPU lease (builds nothing).

1. Correctness (TF32 off): the CUDA path against the CPU (same data, init, mask and steps; kornia
   draws the augmentation on the CPU, so it must match exactly), `train_stacked` against `train` on
   CUDA, the whole-step CUDA graph against the eager step (trainer and vmap stack, fp32 and bf16),
   `train_interleaved` on K streams against `train` run by run (must be bit-identical), and each
   torch.compile mode timed against eager. Relative error of all weights, sqrt(sum |a - b|^2 /
   sum |b|^2), after 1 float32 step (< 1e-4) and, sharper, after 4 float64 steps (< 1e-8); then a
   torch.profiler count of GPU kernel time per bare step (eager and graphed): the floor per step.
2. Timing variants, in priority order: the CUDA default (cudagraph bf16), K runs interleaved on K
   streams (K=8, 16), the vmap stack of 8, eager bf16, cudagraph fp32, reduce-overhead, streams K=32.
   Each is `bench.measure` (bare loop and trainer alternating, real CIFAR-10-sized synthetic epochs of
   391 steps, 4 epochs = one evaluation per repeat; concurrent variants 1 epoch per repeat) and
   prints images/s and seconds per CIFAR-10 epoch.
3. Summary: the fastest correct step mode (to put in trainer.CUDA_COMPILE_AUTO), the targets
   (<= 0.3 s per epoch; >= 0.5 M images/s concurrent), the grid projection, and one JSON line, last.

Robust by construction: every check and variant runs in its own try/except under an alarm, so one
failure is printed and the rest still run; the two first checks always run, and no timed variant
starts after `--budget_s` seconds. Without
CUDA it says so and exits 2, unless `--device=cpu` asks for a dry run of the same code at toy sizes.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn import functional as F

from earlyphase.pretext.supervised import Supervised

from ..engine.augment import augment_split
from ..engine.schedule import Training, train_interleaved
from ..engine.stacked import StackedRun, train_stacked
from ..engine.trainer import CUDA_COMPILE_AUTO, train
from ..jobs import setup
from .arguments import BenchConfig
from .timing import (
    BATCH,
    CIFAR_TRAIN,
    GRID_EPOCHS,
    BareLoop,
    bench_plan,
    device_name,
    half_mask,
    measure,
    resnet20,
    synthetic_cifar,
)

# Float32 after one step: a few steps would measure chaos, not correctness (early SGD steps amplify a 1e-7
# perturbation to 1e-4 within two steps, measured on CPU). Float64 over several steps is the sharp check.
CHECKS = {"fp32": (1, 1e-4), "fp64": (4, 1e-8)}  # precision: (steps, relative-error tolerance)
# A compiled step is checked in bf16, reusing the graph just timed (a float32 graph would cost another
# compilation); inductor's fused kernels round differently, so only gross errors show: 1 step, < 1e-2.
COMPILE_CHECK = ("bf16", 1, 1e-2)


class Float64Supervised(Supervised):
    """True labels with inputs and loss in float64 (the model is made float64 too)."""

    def batch(self, x, y, idx):
        return x.double(), y

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs, targets)


def say(text: str = "") -> None:
    print(text, flush=True)


@contextmanager
def alarm(seconds: float):
    """Raise TimeoutError in the main thread after `seconds` (a hung compile must not eat the lease)."""
    def fire(signum, frame):
        raise TimeoutError(f"variant exceeded its {seconds:.0f} s limit")

    if not hasattr(signal, "SIGALRM"):
        yield
        return
    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(max(1, int(seconds)))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def strict_fp32():
    """Float32 without TF32, for comparisons against the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel_error(a: dict, b: dict) -> float:
    num = sum(float((a[k].double().cpu() - b[k].double().cpu()).pow(2).sum()) for k in b if b[k].is_floating_point())
    den = sum(float(b[k].double().cpu().pow(2).sum()) for k in b if b[k].is_floating_point())
    return math.sqrt(num / den)


def final_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "final.pt", weights_only=True, map_location="cpu")["model"]


def train_once(model, data, plan, mask=None, task=None) -> dict:
    with tempfile.TemporaryDirectory(prefix="earlyphase-suite-") as tmp:
        train(model, data, plan, Path(tmp), mask=mask, task=task)
        return final_weights(Path(tmp))


def comparison_setup(width: int, precision: str, device: torch.device, seed: int = 0):
    """(model, plan, task) for a `precision` comparison: fp32 = the real path for 1 step, fp64 = 4 steps."""
    steps, _ = CHECKS[precision]
    model = resnet20(width, device, seed=seed)
    task = None
    if precision == "fp64":
        model, task = model.double(), Float64Supervised()
    return model, replace(bench_plan(4, 1, "fp32", "none", seed=seed), end=steps), task


def verdict(errors: dict) -> dict:
    return {**{f"rel_error_{p}": e for p, e in errors.items()}, "steps": {p: CHECKS[p][0] for p in errors},
            "ok": all(e < CHECKS[p][1] for p, e in errors.items())}


def check_device_vs_cpu(device: torch.device, width: int) -> dict:
    data_cpu = synthetic_cifar(4 * BATCH, torch.device("cpu"))
    data_dev = data_cpu.to(device)
    same = (augment_split(data_cpu, 0, 0) == augment_split(data_dev, 0, 0).cpu()).float().mean().item()
    errors = {}
    for precision in CHECKS:
        model, plan, task = comparison_setup(width, precision, torch.device("cpu"))
        mask = half_mask(model)
        with strict_fp32():
            ref = train_once(copy.deepcopy(model), data_cpu, plan, mask, task)
            got = train_once(copy.deepcopy(model).to(device), data_dev, plan,
                             {n: m.to(device) for n, m in mask.items()}, task)
        errors[precision] = rel_error(got, ref)
    out = verdict(errors)
    return {"augmentation_equal_fraction": same, **out, "ok": out["ok"] and same == 1.0}


def check_stacked(device: torch.device, width: int, k: int = 2) -> dict:
    data = synthetic_cifar(4 * BATCH, device)
    errors = {}
    for precision in CHECKS:
        members = [comparison_setup(width, precision, device, seed=s) for s in range(k)]
        mask = half_mask(members[0][0])
        with strict_fp32(), tempfile.TemporaryDirectory(prefix="earlyphase-suite-") as tmp:
            runs = [StackedRun(copy.deepcopy(m), plan, Path(tmp) / f"s{s}", task=task, mask=mask)
                    for s, (m, plan, task) in enumerate(members)]
            train_stacked(runs, data)
            errors[precision] = max(rel_error(final_weights(Path(tmp) / f"s{s}"),
                                              train_once(copy.deepcopy(m), data, plan, mask, task))
                                    for s, (m, plan, task) in enumerate(members))
    return {"k": k, **verdict(errors)}


def check_compile(device: torch.device, width: int, mode: str) -> dict:
    """One compiled step against the eager one, same data, init and mask (see COMPILE_CHECK)."""
    precision, steps, tolerance = COMPILE_CHECK
    data = synthetic_cifar(4 * BATCH, device)
    model = resnet20(width, device)
    plan = replace(bench_plan(4, 1, precision, "none"), end=steps)
    mask = half_mask(model)
    ref = train_once(copy.deepcopy(model), data, plan, mask)
    got = train_once(copy.deepcopy(model), data, replace(plan, compile=mode), mask)
    err = rel_error(got, ref)
    return {"mode": mode, f"rel_error_{precision}": err, "steps": steps, "ok": err < tolerance}


def check_cudagraph(device: torch.device, width: int) -> dict:
    """The whole-step CUDA graph against the eager step: trainer and a K=2 stack, 3 steps, fp32 (TF32 off) and bf16."""
    data = synthetic_cifar(4 * BATCH, device)
    tolerance = {"fp32": 1e-4, "bf16": 1e-2}
    out = {}
    for precision in ("fp32", "bf16"):
        model = resnet20(width, device)
        plan = replace(bench_plan(4, 1, precision, "none"), end=3)
        mask = half_mask(model)
        with strict_fp32():
            ref = train_once(copy.deepcopy(model), data, plan, mask)
            got = train_once(copy.deepcopy(model), data, replace(plan, compile="cudagraph"), mask)
            out[f"trainer_{precision}"] = rel_error(got, ref)
            stacks = {}
            for mode in ("none", "cudagraph"):
                with tempfile.TemporaryDirectory(prefix="earlyphase-suite-") as tmp:
                    runs = [StackedRun(resnet20(width, device, seed=s), replace(plan, seed=s, compile=mode),
                                       Path(tmp) / f"s{s}", mask=mask) for s in range(2)]
                    train_stacked(runs, data)
                    stacks[mode] = [final_weights(Path(tmp) / f"s{s}") for s in range(2)]
            out[f"stacked_{precision}"] = max(rel_error(g, r) for g, r in zip(stacks["cudagraph"], stacks["none"]))
    return {"mode": "cudagraph", **{f"rel_error_{k}": v for k, v in out.items()}, "steps": 3,
            "ok": all(v < tolerance[k.split("_")[1]] for k, v in out.items())}


def check_streams(device: torch.device, width: int, k: int = 3) -> dict:
    """train_interleaved (K runs on K CUDA streams, graphed bf16 steps) against train() run by run: 6 steps."""
    data = synthetic_cifar(4 * BATCH, device)
    plan = replace(bench_plan(4, 2, "bf16", "cudagraph"), end=6)
    runs = lambda root: [Training(resnet20(width, device, seed=s), data, replace(plan, seed=s), root / f"s{s}",  # noqa: E731
                                  mask=half_mask(resnet20(width, device, seed=s))) for s in range(k)]
    with tempfile.TemporaryDirectory(prefix="earlyphase-suite-") as tmp:
        train_interleaved(runs(Path(tmp) / "streams"))
        sequential = runs(Path(tmp) / "seq")
        for t in sequential:
            t.train()
        err = max(rel_error(final_weights(Path(tmp) / "streams" / f"s{s}"), final_weights(Path(tmp) / "seq" / f"s{s}"))
                  for s in range(k))
    # bit-identical unless cuDNN's own kernels are nondeterministic (atomics), which a rerun shows too
    return {"k": k, "rel_error_bf16": err, "bit_identical": err == 0.0, "steps": 6, "ok": err < 1e-3}


def profile(device: torch.device, width: int) -> dict:
    """GPU kernel time against wall time per bare step, eager and graphed (bf16): where the time goes."""
    out = {}
    for mode in ("none", "cudagraph"):
        loop = BareLoop(width, device, bench_plan(8, 1, "bf16", mode), 8)
        out[mode] = loop.gpu_ms_per_step()
    return out


def variants(cuda: bool) -> list[tuple[str, dict]]:
    """(name, measure() keyword arguments), most important first. Stacked ones time 1 epoch per repeat."""
    ks = (8, 16) if cuda else (2,)
    stack = dict(trainer=False, bare=False, epochs=1)
    out = [("cudagraph bf16", dict(precision="bf16", compile="cudagraph")),
           ("cudagraph-inductor bf16", dict(precision="bf16", compile="cudagraph-inductor"))]
    out += [(f"streams K={k} bf16 cudagraph", dict(precision="bf16", compile="cudagraph", stacked=k, engine="streams",
                                                   **stack)) for k in ks]
    out += [(f"vmap K={ks[0]} bf16 cudagraph", dict(precision="bf16", compile="cudagraph", stacked=ks[0], engine="vmap",
                                                  **stack)),
            ("eager bf16", dict(precision="bf16", compile="none")),
            ("cudagraph fp32", dict(precision="fp32", compile="cudagraph")),
            ("reduce-overhead bf16", dict(precision="bf16", compile="reduce-overhead")),
            ("streams K=32 bf16 cudagraph", dict(precision="bf16", compile="cudagraph", stacked=32, engine="streams",
                                                  **stack))]
    return out


class _Guard:
    """Runs each check or timed variant under an alarm and the suite's time budget; a failure is recorded, and the
    others go on."""

    def __init__(self, report: dict, budget_s: float, cuda: bool):
        self.report, self.budget_s, self.cuda, self.start = report, budget_s, cuda, time.perf_counter()

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def __call__(self, kind: str, name: str, fn, cap: float):
        if kind == "time" and self.left() < 10:
            self.report["errors"][name] = "skipped: time budget spent"
            say(f"[{kind}] {name}: skipped (budget)")
            return None
        t0 = time.perf_counter()
        try:
            with alarm(cap if kind == "check" else min(cap, self.left())):
                out = fn()
        except Exception as err:  # noqa: BLE001  one failing variant must not lose the others
            self.report["errors"][name] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            say(f"[{kind}] {name}: FAILED {self.report['errors'][name]}")
            traceback.print_exc(limit=3, file=sys.stderr)
            out = None
        finally:
            if self.cuda:
                torch.cuda.empty_cache()
        if out is not None:
            out["seconds"] = round(time.perf_counter() - t0, 1)
        return out


def _run_checks(guarded: _Guard, device, width: int, cuda: bool) -> None:
    checks = [("cuda_vs_cpu", lambda: check_device_vs_cpu(device, width)),
              ("stacked_vs_train", lambda: check_stacked(device, width)),
              ("compile_cudagraph", lambda: check_cudagraph(device, width)),
              ("streams_vs_train", lambda: check_streams(device, width))]
    if cuda:
        checks.append(("profile", lambda: {**profile(device, width), "ok": True}))
    for name, fn in checks:
        result = guarded("check", name, fn, 90)
        if result is not None:
            guarded.report["checks"][name] = result
            say(f"[check] {name}: {'ok' if result['ok'] else 'MISMATCH'}  " + json.dumps(result))


def _run_variants(guarded: _Guard, device, width: int, spe: int, repeats: int, cuda: bool) -> None:
    report = guarded.report
    for name, kwargs in variants(cuda):
        result = guarded("time", name, lambda: measure(device, kwargs["precision"], kwargs["compile"], width, spe,
                                                        repeats, stacked=kwargs.get("stacked", 0),
                                                        channels_last=kwargs.get("channels_last"),
                                                        trainer=kwargs.get("trainer", True),
                                                        bare=kwargs.get("bare", True), log=say,
                                                        epochs=kwargs.get("epochs"),
                                                        engine=kwargs.get("engine", "streams")), 150)
        if result is None:
            continue
        report["variants"][name] = result
        say(f"[time] {name}: " + summary_line(result))
        mode = kwargs["compile"]
        if mode != "none" and kwargs.get("trainer", True) and f"compile_{mode}" not in report["checks"]:
            check = guarded("check", f"compile_{mode}", lambda: check_compile(device, width, mode), 120)
            if check is not None:
                report["checks"][f"compile_{mode}"] = check
                say(f"[check] compile {mode} vs eager: {'ok' if check['ok'] else 'MISMATCH'}  " + json.dumps(check))


def run_suite(cfg: BenchConfig) -> int:
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if not cuda and cfg.device != "cpu":
        print("no CUDA: the GPU suite needs a CUDA device (pass --device=cpu for a dry run at toy sizes)",
              file=sys.stderr)
        return 2
    device = setup.resolve_device("cuda" if cfg.device == "auto" else cfg.device)
    spe = cfg.steps_per_epoch or (391 if cuda else 2)
    repeats = min(cfg.repeats, 2) if cuda else 1
    report = {"device": device_name(device), "torch": torch.__version__, "width": cfg.width, "steps_per_epoch": spe,
              "repeats": repeats, "checks": {}, "variants": {}, "errors": {}}
    guarded = _Guard(report, cfg.budget_s, cuda)
    say(f"GPU suite on {report['device']}, torch {torch.__version__}; budget {cfg.budget_s:.0f} s")
    _run_checks(guarded, device, cfg.width, cuda)
    _run_variants(guarded, device, cfg.width, spe, repeats, cuda)
    report.update(conclusions(report))
    report["total_s"] = round(time.perf_counter() - guarded.start, 1)
    say("")
    for line in report["conclusion_lines"]:
        say(line)
    say(json.dumps(report))
    return 0


def summary_line(r: dict) -> str:
    parts = []
    if "bare_images_per_s" in r:
        parts.append(f"bare {r['bare_images_per_s']:.0f} img/s ({r['bare_s_per_cifar_epoch']:.3f} s/epoch)")
    if "trainer_images_per_s" in r:
        parts.append(f"trainer {r['trainer_images_per_s']:.0f} img/s ({r['trainer_s_per_cifar_epoch']:.3f} s/epoch), "
                     f"ratio {r['ratio']:.3f}")
    if "stacked_images_per_s" in r:
        parts.append(f"{r['stacked_engine']} K={r['stacked_k']} {r['stacked_images_per_s']:.0f} img/s aggregate "
                     f"({r['stacked_s_per_cifar_epoch_per_run']:.3f} s/epoch per run)")
    return "; ".join(parts)


def conclusions(report: dict) -> dict:
    checks, results = report["checks"], report["variants"]
    single = {name: r for name, r in results.items() if "trainer_images_per_s" in r and "bf16" in name
              and (r["compile"] == "none" or checks.get(f"compile_{r['compile']}", {}).get("ok"))}
    stacked = {name: r for name, r in results.items() if "stacked_images_per_s" in r}
    lines, out = [], {}
    if single:
        best = max(single, key=lambda n: single[n]["trainer_images_per_s"])
        r = single[best]
        out["best_single"] = {
            "variant": best,
            "compile": r["compile"],
            "s_per_cifar_epoch": r["trainer_s_per_cifar_epoch"],
            "images_per_s": r["trainer_images_per_s"],
            "grid_hours": r["grid_hours"],
        }
        lines.append(f"best single run: {best}: {r['trainer_s_per_cifar_epoch']:.3f} s per CIFAR-10 epoch "
                     f"(target <= 0.3: {'met' if r['trainer_s_per_cifar_epoch'] <= 0.3 else 'not met'}); "
                     f"grid of {GRID_EPOCHS} epochs ~ {r['grid_hours']:.1f} h")
        if r["compile"] != CUDA_COMPILE_AUTO:
            lines.append(f"recommendation: set CUDA_COMPILE_AUTO = {r['compile']!r} in studies/engine/trainer.py "
                         f"(now {CUDA_COMPILE_AUTO!r})")
        else:
            lines.append(f"recommendation: keep CUDA_COMPILE_AUTO = {CUDA_COMPILE_AUTO!r}")
    if stacked:
        best = max(stacked, key=lambda n: stacked[n]["stacked_images_per_s"])
        r = stacked[best]
        hours = GRID_EPOCHS * CIFAR_TRAIN / r["stacked_images_per_s"] / 3600
        out["best_stacked"] = {"variant": best, "images_per_s": r["stacked_images_per_s"], "grid_hours": hours}
        lines.append(f"best concurrent: {best}: {r['stacked_images_per_s']:.0f} images/s aggregate (target >= 500000: "
                     f"{'met' if r['stacked_images_per_s'] >= 5e5 else 'not met'}); grid ~ {hours:.2f} h")
    failed = [n for n, c in checks.items() if not c.get("ok")] + list(report["errors"])
    lines.append("problems: " + (", ".join(failed) if failed else "none"))
    out["conclusion_lines"] = lines
    return out
