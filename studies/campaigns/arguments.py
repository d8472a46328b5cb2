"""The campaigns' command lines parsed with nothing heavy imported (no torch, no task): the CLI refuses a bad flag and
prints --help from these before it imports the command's module, and the modules parse with the same functions."""

from __future__ import annotations

from pathlib import Path

from ..engine.errors import UsageError
from ..jobs.config import StudyConfig, class_to_parse
from ..jobs.flags import parse_overrides, with_values

PRESETS = {
    # 3 seeds (the fewest that allow a paired interval) x 6 IMP runs of 4 trainings, + 3 controls per seed and the
    # crossed tickets of every pair at the sparsest level; one k for every condition, 6 of T = 115 iterations (5.2%;
    # the paper: 500 of 62,560, 0.8%). T is 5 epochs since 2026-12-06 (6 before; dense 96.11 +- 0.83% against 96.22
    # +- 1.40% over seeds 0-4) and the stability analysis is asked for (--stability=0, one more training per unit),
    # so that the main job runs in under 3 minutes on 2 cores (README, "Speed"); the quick sweeps pin T = 6 epochs,
    # the T of their results in the README. A checkpoint every 3 epochs (a platform field: same run names, same
    # numbers) saves writes; a kill loses at most 3 epochs of a ~1 s training.
    "quick": dict(dataset="digits", seeds="0,1,2", width=12, batch_size=64, training_steps="5ep",
                  milestone_steps="3ep,4ep", eval_every=6, levels=3, prune_fraction=0.75, rewind_step="6it",
                  pretrain_steps="6it", controls="random_reinit", control_conditions="rewind", stability="",
                  checkpoint_every=3),
    "paper": dict(dataset="cifar10", seeds="0,1,2", levels=8, prune_fraction=0.2, rewind_step="500it",
                  pretrain_steps="500it", pretrain_budgets="rotation=40ep,simclr=40ep,random_labels=500it,blur=500it",
                  controls="random_reinit,random_prune_layerwise", control_conditions="rewind", eval_every=4),
}
CROSS_USAGE = "usage: earlyphase cross RUNS [--levels=sparsest|none|L,...]"


def study(argv: list[str], with_tasks: bool = False) -> StudyConfig:
    """The study's config: its --preset's values under the flags given. with_tasks: the class with every task's
    options (the job's), else only where `argv` gives one."""
    preset = "quick"
    for arg in argv:
        if arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    if preset not in PRESETS:
        raise UsageError(f"--preset={preset}: choose one of {', '.join(PRESETS)}")
    cls = class_to_parse(StudyConfig, argv, with_tasks)
    return parse_overrides(cls, argv, base=with_values(cls(), {"preset": preset, **PRESETS[preset]}))


def cross(argv: list[str]) -> tuple[Path, str]:
    """(the runs folder, the --levels text)."""
    levels = next((a.split("=", 1)[1] for a in argv if a.startswith("--levels=")), "sparsest").strip()
    folders = [a for a in argv if not a.startswith("--")]
    unknown = [a for a in argv if a.startswith("--") and not a.startswith("--levels=")]
    if len(folders) != 1 or unknown or not Path(folders[0]).expanduser().is_dir():
        raise UsageError(f"{' '.join(unknown) + ': unknown; ' if unknown else ''}{CROSS_USAGE}")
    return Path(folders[0]).expanduser(), levels
