"""Dataclass configs, `--field=value` parsing and hash-named run directories (open_lth style).

Every config is a flat dataclass, so each field is settable as `--field_name=value`, which is exactly
what `wandb agent` passes with `${args}`. Fields marked `platform` (paths, device, logging) do not
change what is computed and stay out of the run name. A field left at its *effective default* (the
class default, or the dataset's preset for fields that default to None) does not enter the hash
either, so adding a field with a default never renames existing runs, and `--lr=0.1` on CIFAR-10
names the same run as leaving it out.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..engine.errors import UsageError


def platform(default, help: str = ""):
    return field(default=default, metadata={"platform": True, "help": help})


def option(default, help: str = ""):
    return field(default=default, metadata={"help": help})


# Per-dataset training defaults, like open_lth's per-model defaults. None in a config means "take these".
DATASET_DEFAULTS = {
    "cifar10": dict(
        batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
        training_steps="160ep", milestone_steps="80ep,120ep", gamma=0.1, eval_every=4,  # eval costs ~7% per epoch
        rewind_step="500it",
    ),
    # Sized for 2 CPU cores: one dense ResNet-20 training in a few seconds, the schedule's shape kept.
    "digits": dict(
        batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-4,
        training_steps="12ep", milestone_steps="6ep,9ep", gamma=0.1, eval_every=2, rewind_step="24it",
    ),
}


@dataclass
class TrainConfig:
    """Dense training of a CIFAR ResNet (`earlyphase train`)."""

    dataset: str = option("digits", "digits (embedded, no network) or cifar10")
    model: str = option("cifar_resnet20", "a registered timm name: cifar_resnet{D}, (D-2) % 6 == 0")
    width: int = option(16, "channels of the first stage (the paper: 16)")
    seed: int = option(0, "drives initialisation, data order and augmentation")
    data_seed: typing.Optional[int] = option(None, "seed of the data order and augmentation alone (SGD noise); None: --seed")
    batch_size: typing.Optional[int] = option(None)
    lr: typing.Optional[float] = option(None)
    momentum: typing.Optional[float] = option(None)
    weight_decay: typing.Optional[float] = option(None)
    training_steps: typing.Optional[str] = option(None, "step string, e.g. 160ep")
    milestone_steps: typing.Optional[str] = option(None, "comma-separated step strings where lr *= gamma")
    gamma: typing.Optional[float] = option(None)
    warmup_steps: str = option("0it", "linear warmup length")
    augment: bool = option(True, "the dataset's standard augmentation")
    precision: str = option("auto", "auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16")
    eval_every: typing.Optional[int] = platform(None, "evaluate every N epochs (and at the end)")
    checkpoint_every: int = platform(1, "write a resumable checkpoint every N epochs")
    device: str = platform("auto", "auto, cpu, cuda or cuda:N")
    data_dir: str = platform("~/.cache/earlyphase/data", "where cifar10 lives")
    download: bool = platform(False, "download cifar10 if missing")
    out: str = platform("runs", "parent folder of the run directories")
    wandb: typing.Optional[str] = platform(None, "disabled, offline or online (default: WANDB_MODE, else online with an API key, else disabled)")
    wandb_project: str = platform("earlyphase", "W&B project")
    wandb_entity: str = platform("", "W&B entity (team or user)")
    wandb_group: str = platform("", "W&B group (a study's default: its directory name)")
    compile: str = platform("auto", "CUDA only, results unchanged up to rounding: how the training step runs (auto = "
                                    "cudagraph, the whole step as one CUDA graph; cudagraph-inductor = the same with the model compiled "
                                    "by inductor; none = eager; or a torch.compile mode: default, reduce-overhead, max-autotune)")
    track_steps: str = platform("", "early-phase statistics over the first N steps of each training, e.g. 4000it "
                                    "(stats.jsonl; results unchanged); empty = off")

    def resolved(self):
        """A copy with dataset-dependent defaults filled in."""
        if self.dataset not in DATASET_DEFAULTS:
            raise UsageError(f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASET_DEFAULTS)}")
        preset = DATASET_DEFAULTS[self.dataset]
        fill = {k: v for k, v in preset.items() if getattr(self, k, 0) is None}
        return dataclasses.replace(self, **fill)


def is_platform(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("platform"))


def effective_default(cfg, f: dataclasses.Field):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if default is None and hasattr(cfg, "dataset"):
        return DATASET_DEFAULTS.get(cfg.dataset, {}).get(f.name)
    return default


def hashed_fields(cfg) -> dict:
    """The fields that name a run: non-platform fields away from their effective default."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if not is_platform(f) and value is not None and value != effective_default(cfg, f):
            out[f.name] = value
    return out


def run_name(kind: str, cfg, protocol: int | None = None) -> str:
    """KIND_HASH over the hashed fields; `protocol` (when given) enters the hash, so runs computed under an
    earlier protocol of that kind are never reused."""
    named = {"kind": kind, **hashed_fields(cfg), **({"protocol": protocol} if protocol is not None else {})}
    blob = json.dumps(named, sort_keys=True, default=str)
    return f"{kind}_{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def run_dir(kind: str, cfg) -> Path:
    return Path(cfg.out).expanduser() / run_name(kind, cfg)


# ---------------------------------------------------------------------------------------------- parsing
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _convert(name: str, text: str, hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        hint = args[0]
    try:
        if hint is bool:
            low = text.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError
            return low in _TRUE
        if hint is int:
            return int(text)
        if hint is float:
            value = float(text)
            if not math.isfinite(value):
                raise UsageError(f"--{name}={text}: expected a finite number")
            return value
        return str(text)
    except ValueError:
        raise UsageError(f"--{name}={text}: expected {hint.__name__}") from None


def parse_overrides(cls, argv: list[str], base=None):
    """Parse `--key=value` / `--key value` / `--flag` arguments into an instance of `cls`.

    Unknown keys are refused with the closest valid key suggested. A value never starts with `--`: in
    `--out --training_steps=3it` the second flag is not --out's value (`--out` is refused as missing one).
    A key given twice is refused: which one was meant is not ours to guess (last-wins hid typos in sweeps).
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    values = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise UsageError(f"unexpected argument {arg!r}: options are written --name=value")
        key, eq, text = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in hints:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean --{close[0]}?" if close else "; run with --help to list the options"
            raise UsageError(f"unknown option --{key}{hint}")
        if not eq:
            if hints[key] is bool and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
                text = "true"
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                i += 1
                text = argv[i]
            else:
                raise UsageError(f"--{key} needs a value: --{key}=VALUE")
        if key in values:
            raise UsageError(f"--{key} is given twice: give each option once")
        values[key] = _convert(key, text, hints[key])
        i += 1
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def describe_options(cls, cfg=None) -> str:
    """One line per field: --name=type  [value]  help. The value is `cfg`'s (the config the command's other
    arguments make, dataset defaults filled in) or, without one, the class default."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in fields(cls):
        if cfg is not None:
            value = getattr(cfg, f.name)
        else:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        by_dataset = cfg is None and any(f.name in preset for preset in DATASET_DEFAULTS.values())
        shown = repr(value) if value is not None else ("dataset default" if by_dataset else "none")
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        hint = getattr(hint, "__name__", str(hint))
        lines.append(f"  --{f.name}={hint}  [{shown}]  {f.metadata.get('help', '')}".rstrip())
    return "\n".join(lines)


def to_json(cfg) -> dict:
    return dataclasses.asdict(cfg)

