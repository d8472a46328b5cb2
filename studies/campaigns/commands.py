"""The `earlyphase` commands: where each lives. The CLI dispatches through this table, and `sweep run` checks
a sweep's runs with each command's own `check(argv)`. A new command is a module with `main(argv) -> int` (and
`check(argv)` where a sweep may run it), a function parsing its arguments with nothing heavy imported, and one
row here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # holds main(argv) -> int, and check(argv) for the commands a sweep may run
    description: str
    # "module:function" parsing the arguments, importing no torch, task or matplotlib: the CLI's flag errors and
    # --help come from it first. A function returning a dataclass config: --help lists its fields.
    arguments: str = ""
    usage: str = ""  # "module:NAME" of the usage line of a command whose arguments are not a config's fields

    def parse(self, argv: list[str]):
        return _named(self.arguments)(argv)

    def usage_line(self) -> str:
        return _named(self.usage) if self.usage else ""

    def presets(self) -> dict:
        """The command's presets ({name: {field: value}}), where its arguments module has them (study's)."""
        import importlib

        return getattr(importlib.import_module(self.arguments.partition(":")[0]), "PRESETS", {})


def _named(reference: str):
    """The object a "module:name" reference names (importing the module)."""
    import importlib

    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


JOBS, CAMPAIGNS = "earlyphase.studies.jobs", "earlyphase.studies.campaigns"
COMMANDS = {
    "train": Command(f"{JOBS}.train", "train a dense network", f"{JOBS}.arguments:train"),
    "pretrain": Command(f"{JOBS}.pretrain", "pretrain with a pretext task; saves rewind_point.pt",
                        f"{JOBS}.arguments:pretrain"),
    "pretext": Command(f"{JOBS}.pretext_list", "list: the pretext tasks found (built-in and plugins)",
                       f"{JOBS}.arguments:pretext",
                       usage=f"{JOBS}.arguments:PRETEXT_USAGE"),
    "study": Command(f"{CAMPAIGNS}.study", "the main job: pretrain -> IMP -> tickets -> report, per condition and seed",
                     f"{CAMPAIGNS}.arguments:study"),
    "sweep": Command(f"{CAMPAIGNS}.sweep", "run FILE.yaml [--count=N] [--jobs=J]: a W&B sweep, locally, no server",
                     usage=f"{CAMPAIGNS}.sweep:USAGE"),
    "cross": Command(f"{CAMPAIGNS}.cross", "RUNS [--levels=sparsest]: crossed tickets of every like-for-like pair in a "
                     "runs folder (after a sweep)", f"{CAMPAIGNS}.arguments:cross",
                     usage=f"{CAMPAIGNS}.arguments:CROSS_USAGE"),
    "report": Command("earlyphase.studies.reporting.report", "FOLDER ... [-o OUT_DIR] "
                      "[--wandb=ENTITY/PROJECT[/SWEEP_ID]]: comparison report from run records",
                      "earlyphase.studies.reporting.arguments:report",
                      usage="earlyphase.studies.reporting.arguments:USAGE"),
    "imp": Command(f"{JOBS}.imp", "iterative magnitude pruning with rewinding, controls, tickets.json",
                   f"{JOBS}.arguments:imp"),
    "stability": Command(f"{JOBS}.stability", "instability of a rewind point to SGD noise: two copies from k, the "
                         "linear path between them (imp's flags; --stability=0 by default)",
                         f"{JOBS}.arguments:stability"),
    "bench": Command("earlyphase.studies.bench.bench", "time the trainer against a bare PyTorch loop; --gpu-suite",
                     "earlyphase.studies.bench.arguments:bench"),
}
