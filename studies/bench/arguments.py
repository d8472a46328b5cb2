"""`earlyphase bench`'s command line parsed with nothing heavy imported (no torch): the CLI refuses a bad flag from
here before it imports the bench, which parses with the same function."""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.errors import UsageError
from ..jobs.flags import option, parse_overrides, platform


@dataclass
class BenchConfig:
    """Time the trainer against a bare PyTorch loop (`earlyphase bench`)."""

    device: str = platform("auto", "auto, cpu, cuda or cuda:N")
    threads: int | None = platform(None, "CPU threads (as every command's --threads; default: the cores this process "
                                         "may use, or EARLYPHASE_THREADS)")
    precision: str = option("auto", "auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16")
    compile: str = option(
        "auto",
        "CUDA only: auto (= cudagraph), none, cudagraph, cudagraph-inductor, default, reduce-overhead, max-autotune",
    )
    repeats: int = option(3, "timed repeats (medians), after a short warm-up")
    steps_per_epoch: int | None = option(None, "iterations per synthetic epoch (default: 6 on CPU, 391 on CUDA)")
    width: int = option(16, "ResNet-20 width (16 is the paper's)")
    stacked: int = option(0, "also time K runs trained at once (0: skip), by --engine")
    engine: str = option("streams", "how the K runs train at once: streams (train_interleaved) or vmap (train_stacked)")
    json: bool = option(False, "print one JSON object")
    gpu_suite: bool = option(False, "run the prepared GPU suite (correctness vs CPU, then timed variants)")
    digits: bool = option(False, "also time the main job's digits training at 1 and 2 threads and as two 1-thread "
                                 "processes at once (whether study's worker processes pay here)")
    digits_epochs: int = option(6, "epochs of each --digits training (the quick preset's 6)")
    budget_s: float = option(330.0, "GPU suite: no variant starts after this many seconds")


def bench(argv: list[str]) -> BenchConfig:
    cfg = parse_overrides(BenchConfig, argv)
    if cfg.threads is not None and cfg.threads < 1:
        raise UsageError(f"--threads={cfg.threads}: use a whole number of threads >= 1")
    if cfg.digits_epochs < 1:
        raise UsageError("--digits_epochs must be a positive integer")
    return cfg
