"""How many CPU threads a process's ops use (`--threads`).

Several processes that each take every core slow each other far more than their share: OpenMP's workers
spin-wait for cores another process holds (measured in the README's "Speed"). So the default is the cores this
process may run on (`os.sched_getaffinity`, which honours taskset and container CPU sets; torch's own default
counts the machine's cores), or `EARLYPHASE_THREADS` where a parent that starts several processes set it:
`earlyphase sweep run --jobs=J` gives each of its J processes an equal share (at least 1), and sets
OMP_NUM_THREADS to match so the OpenMP pool never starts larger. Light: torch is imported only to apply it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

from .errors import UsageError

ENV = "EARLYPHASE_THREADS"


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """EARLYPHASE_THREADS if set, else the cores this process may use."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return available_cores()
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{ENV}={text}: use a whole number of threads >= 1, or unset it")
    return int(text)


def share(jobs: int) -> int:
    """Each of `jobs` processes' share of this process's threads (at least 1)."""
    return max(1, default_threads() // max(1, jobs))


def child_environment(threads: int) -> dict:
    """The environment for a child process that should use `threads` threads."""
    return {**os.environ, ENV: str(threads), "OMP_NUM_THREADS": str(threads)}


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (its entries, or 0 ... n-1 where unset);
    [] without CUDA. torch is imported only where the variable does not say."""
    text = os.environ.get("CUDA_VISIBLE_DEVICES")
    if text is not None:
        return [g.strip() for g in text.split(",") if g.strip() and not g.strip().startswith("-")]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def worker_environment(slot: int, threads: int, gpus: list[str]) -> dict:
    """The environment of worker `slot` of a pool: its share of the CPU threads and, on a box with GPUs, one GPU of
    its own (round-robin: slot i gets GPU i mod n), so J workers on J GPUs never share one."""
    env = child_environment(threads)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


def apply(threads: int | None) -> int:
    """Use `threads` (None: the default) for this process's ops from now on; returns the number."""
    import torch

    count = default_threads() if threads is None else threads
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


PARENT_ENV = "EARLYPHASE_PARENT_PID"  # set by `sweep run` for its children: they stop when it dies


def die_with_parent() -> None:
    """In a child started with PARENT_ENV (by `earlyphase sweep run`): SIGTERM when that parent dies, even by kill -9,
    so no child study trains on alone (Linux prctl PR_SET_PDEATHSIG; a no-op elsewhere). Set at the child's start,
    not in a preexec_fn (unsafe beside the sweep's threads); a parent already gone stops the child at once."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:
        os.kill(os.getpid(), signal.SIGTERM)
