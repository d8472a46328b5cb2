"""The `earlyphase` commands: where each lives. The CLI dispatches through this table, and `sweep run` checks
a sweep's runs with each command's own `check(argv)`. A new command is a module with `main(argv) -> int` (and,
if it takes --field options, `parse(argv)`, `check(argv)` and its config class) plus one row here."""

# name -> (module with main(argv) -> int, config class for --help or None, one-line description)
COMMANDS = {
    "train": ("earlyphase.studies.jobs.train", "TrainConfig", "train a dense network"),
    "pretrain": (
        "earlyphase.studies.jobs.pretrain",
        "PretrainConfig",
        "pretrain with a pretext task; saves rewind_point.pt",
    ),
    "pretext": ("earlyphase.studies.jobs.pretext_list", None, "list: the pretext tasks found (built-in and plugins)"),
    "study": (
        "earlyphase.studies.campaigns.study",
        "StudyConfig",
        "the main job: pretrain -> IMP -> tickets -> report, per condition and seed",
    ),
    "sweep": (
        "earlyphase.studies.campaigns.sweep",
        None,
        "run FILE.yaml [--count=N] [--jobs=J]: a W&B sweep, locally, no server",
    ),
    "cross": (
        "earlyphase.studies.campaigns.cross",
        None,
        "RUNS [--levels=sparsest]: crossed tickets of every like-for-like pair in a runs folder (after a sweep)",
    ),
    "report": (
        "earlyphase.studies.reporting.report",
        None,
        "FOLDER ... [-o OUT_DIR] [--wandb=ENTITY/PROJECT[/SWEEP_ID]]: comparison report from run records",
    ),
    "imp": (
        "earlyphase.studies.jobs.imp",
        "ImpCommand",
        "iterative magnitude pruning with rewinding, controls, tickets.json",
    ),
    "stability": (
        "earlyphase.studies.jobs.stability",
        "ImpCommand",
        "instability of a rewind point to SGD noise: two "
        "copies from k, the linear path between them (imp's flags; --stability=0 by default)",
    ),
    "bench": (
        "earlyphase.studies.bench.bench",
        "BenchConfig",
        "time the trainer against a bare PyTorch loop; --gpu-suite",
    ),
}

# Commands whose flags parse by their config class alone (jobs.config, no torch): their --help and their flag
# errors come before the module (and torch, lightly, matplotlib) is imported.
PLAIN_FLAGS = {"train": "TrainConfig", "imp": "ImpCommand"}
