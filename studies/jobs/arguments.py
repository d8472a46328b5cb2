"""The jobs' command lines parsed with nothing heavy imported (no torch, no task): the CLI refuses a bad flag and
prints --help from these before it imports the command's module, and the modules parse with the same functions.
Each returns the command's config (its class is what --help lists)."""

from __future__ import annotations

from ..engine.errors import UsageError
from .config import ImpCommand, PretrainConfig, TrainConfig, class_to_parse
from .flags import parse_overrides

PRETEXT_USAGE = "usage: earlyphase pretext list"
# `earlyphase stability` is `earlyphase imp` with these defaults (the dense network at k, analysed).
STABILITY_DEFAULTS = {"levels": 0, "stability": "0"}


def pretext(argv: list[str]) -> None:
    if argv not in ([], ["list"]):
        raise UsageError(f"unexpected arguments {' '.join(argv)!r}; {PRETEXT_USAGE}")


def train(argv: list[str]) -> TrainConfig:
    return parse_overrides(TrainConfig, argv)


def imp(argv: list[str]) -> ImpCommand:
    return parse_overrides(ImpCommand, argv)


def stability(argv: list[str]) -> ImpCommand:
    return parse_overrides(ImpCommand, argv, defaults=STABILITY_DEFAULTS)


def pretrain(argv: list[str], with_tasks: bool = False) -> PretrainConfig:
    """with_tasks: the config class with every task's options (the job's), else only where `argv` gives one."""
    return parse_overrides(class_to_parse(PretrainConfig, argv, with_tasks), argv)
