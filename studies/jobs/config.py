"""Every command's config, the flags that set them, and the one naming policy (open_lth style).

Configs are dataclasses whose fields are the command-line flags `--field_name=value`, exactly what `wandb
agent` passes with `${args}`; a study's config is composed of an IMP config, a pretraining config and the
scheduler's settings, and one flag sets a field wherever it appears. Each field's metadata says what it
names (`field_kind`):
- `option` (the default): names a run and its condition (lr, prune_fraction, pretext, ...);
- `replicate`: names a run, not a condition (seed, data_seed): runs differing only there are replicates;
- `content`: a path named by the content it points at (rewind_from, mask), given by the job as a digest;
  a condition is named by what that content says (the report reads it from the run's records);
- `parts`: names nothing, chooses which parts of a run train (levels, controls, perturbations, stability analyses):
  asking for more later reuses the run directory, each part named by its folder;
- `platform`: names nothing (paths, device, threads, logging, scheduling).
A field left at its *effective default* (the class default, or the dataset's for fields that default to
None) does not enter a run's hash either, so adding a field never renames existing runs and `--lr=0.1` on
CIFAR-10 names the same run as leaving it out. `run_name` and `condition_fields` are that policy; every
job and the report use them.

Pretext options are declared once, in each task (`options`): `with_task_options` adds them to PretrainConfig
and StudyConfig as `--{task}_{option}` fields, from the installed tasks (plugins included) and their help texts.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from ..engine import dataset_registry, model_registry
from ..engine.errors import UsageError
from .flags import UNNAMED, component, content, field_kind, field_types, leaves, option, parts, platform, replicate

# Per-dataset training defaults (engine/dataset_registry.py), like open_lth's per-model defaults; a model family
# may override some (engine/model_registry.py). None in a config means "take these".
DATASET_DEFAULTS = {d.name: dict(d.defaults) for d in dataset_registry.DATASETS}


def defaults_for(cfg) -> dict:
    """The values a config's None fields take: its dataset's defaults, then its model family's."""
    return {**DATASET_DEFAULTS.get(getattr(cfg, "dataset", ""), {}),
            **model_registry.defaults(getattr(cfg, "model", ""))}


@dataclass
class TrainConfig:
    """Dense training of a model (a CIFAR ResNet or VGG, or a timm model) (`earlyphase train`)."""

    dataset: str = option("digits", "digits (embedded, no network), cifar10, cifar100 or svhn")
    model: str = option("cifar_resnet20", model_registry.NAMES_HELP)
    width: typing.Optional[int] = option(None, "ResNet: channels of the first stage (default 16, the paper's); VGG: "
                                               "the plan scaled to W/64 (default 64)")
    seed: int = replicate(0, "drives initialisation, data order and augmentation")
    data_seed: typing.Optional[int] = replicate(
        None, "seed of the data order and augmentation alone (SGD noise); None: --seed"
    )
    batch_size: typing.Optional[int] = option(None)
    lr: typing.Optional[float] = option(None)
    momentum: typing.Optional[float] = option(None)
    weight_decay: typing.Optional[float] = option(None)
    training_steps: typing.Optional[str] = option(None, "step string, e.g. 160ep")
    milestone_steps: typing.Optional[str] = option(None, "comma-separated step strings where lr *= gamma; empty: "
                                                         "none (a constant rate)", empty=True)
    gamma: typing.Optional[float] = option(None)
    warmup_steps: str = option("0it", "linear warmup length")
    augment: bool = option(True, "the dataset's standard augmentation")
    precision: str = option("auto", "auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16")
    eval_every: typing.Optional[int] = platform(None, "evaluate every N epochs (and at the end)")
    checkpoint_every: int = platform(1, "write a resumable checkpoint every N epochs")
    device: str = platform("auto", "auto, cpu, cuda or cuda:N")
    threads: typing.Optional[int] = platform(
        None, "CPU threads for this process's ops; default: the cores it may use (sched_getaffinity), or its share "
              "under `sweep run --jobs` (EARLYPHASE_THREADS); with several processes by hand, give each cores/processes"
    )
    data_dir: str = platform("~/.cache/earlyphase/data", "where cifar10, cifar100 and svhn live")
    download: bool = platform(False, "download the dataset (cifar10, cifar100, svhn) if missing")
    out: str = platform("runs", "parent folder of the run directories")
    wandb: typing.Optional[str] = platform(
        None, "disabled, offline or online (default: WANDB_MODE, else online with an API key, else disabled)"
    )
    wandb_project: str = platform("earlyphase", "W&B project")
    wandb_entity: str = platform("", "W&B entity (team or user)")
    wandb_group: str = platform("", "W&B group (a study's default: its directory name)")
    compile: str = platform(
        "auto",
        "CUDA only, results unchanged up to rounding: how the training step runs (auto = "
        "cudagraph, the whole step as one CUDA graph; cudagraph-inductor = the same with the model compiled "
        "by inductor; none = eager; or a torch.compile mode: default, reduce-overhead, max-autotune)",
    )
    track_steps: str = platform("", "early-phase statistics over the first N steps of each training, e.g. 4000it "
                                    "(stats.jsonl; results unchanged); empty = off")

    def data_order_seed(self) -> int:
        """The seed of the data order and augmentation: --data_seed, else --seed."""
        return self.seed if self.data_seed is None else self.data_seed

    def resolved(self):
        """A copy with the dataset's and the model's defaults filled in."""
        if self.dataset not in DATASET_DEFAULTS:
            raise UsageError(f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASET_DEFAULTS)}")
        fill = {k: v for k, v in defaults_for(self).items() if getattr(self, k, 0) is None}
        return dataclasses.replace(self, **fill)


@dataclass
class SchedulerConfig:
    """How a job's trainings share a device (`--concurrent`): it never changes what any training computes."""

    concurrent: int = platform(1, "K trainings at once on one device (a level's trunk and controls, a study's units), "
                                  "by --concurrent_engine")
    concurrent_engine: str = platform("streams", "how --concurrent runs K trainings: streams (a step each in turn, "
                                                 "on K CUDA streams; bit-identical to one by one) or vmap (torch.func "
                                                 "stack of same-shaped trainings; equal up to rounding)")


@dataclass
class ImpConfig(TrainConfig):
    """IMP with rewinding (`earlyphase imp`)."""

    levels: int = parts(8, "pruning levels after the dense level 0 (out of the hash: raise it later to add levels)")
    prune_fraction: float = option(0.2, "fraction of the surviving weights pruned per level, in (0, 1)")
    prune_ignore: typing.Optional[str] = option(
        None, "comma-separated parameters never pruned, e.g. fc.weight (default: the model's: fc.weight for "
              "cifar_vgg, none for cifar_resnet); empty = prune every conv/linear weight", empty=True
    )
    rewind_step: typing.Optional[str] = option(
        None, "step of the dense run the survivors are reset to (0it = original init); cifar, svhn 500it, digits 24it"
    )
    rewind_from: typing.Optional[str] = content(
        None, "rewind point from a file or a run dir holding rewind_point.pt (replaces level 0's start)"
    )
    rewind_optimizer: str = option(
        "fresh", "optimiser at the rewind: fresh (reference) or rewound (momentum from step k, masked)"
    )
    controls: str = parts(
        "", "comma-separated controls per level: random_reinit,random_prune_global,random_prune_layerwise"
    )
    perturb: str = parts(
        "",
        "comma-separated perturbations of the rewind point per level (or all): sign_rewind_mag_init,"
        "sign_init_mag_rewind,random_mag,permute,permute_keep_sign,noise",
    )
    perturb_noise: float = parts(1.0, "noise std per layer, in units of the layer's surviving-weight std "
                                      "(names the part: perturb_noise or perturb_noise{SCALE})")
    stability: str = parts(
        "",
        "levels whose start state gets an instability analysis (two copies trained with other "
        "data orders, the linear path between them): 0 = the dense network at the rewind point, "
        "L = level L's ticket; comma-separated, all, or empty = none",
    )
    stability_points: int = parts(11, "points evaluated inside the linear path (the two endpoints are added)")
    stability_bn: str = parts("interpolate", "BatchNorm statistics on the path: interpolate (with the weights) or "
                                            "recompute (a pass over training data at each point)")
    stability_data_seed: typing.Optional[int] = parts(None, "data-order seed of the second copy (the first is the "
                                                            "level itself); None: derived from the run's")
    wandb_weights: bool = platform(False, "also put each part's final.pt into the run's W&B records artifact "
                                          "(default: records only; the weights stay local)")


@dataclass
class PretrainConfig(TrainConfig):
    """Pretraining with a pretext task (`earlyphase pretrain`): a rewind point for imp.

    The installed tasks' options are flags too, `--{task}_{option}` (--simclr_temperature, --subset_fraction):
    each task declares its own (plugins included), so `with_task_options` adds them, in that one place, to this
    class and to StudyConfig's pretraining. `earlyphase pretext` lists them with their defaults. In Python:
    `with_task_options(PretrainConfig)(pretext="simclr", simclr_temperature=0.2)`."""

    has_task_options: typing.ClassVar[bool] = False
    pretext: str = option("rotation", "the task: `earlyphase pretext list` shows the installed ones")
    pretrain_steps: str = option(
        "500it", "length of pretraining, a step string: the k supervised iterations it replaces"
    )
    pretrain_lr: typing.Optional[float] = option(None, "a constant learning rate for pretraining; None: the training "
                                                       "schedule's rate at each of the first k steps")
    pretrain_batch_size: typing.Optional[int] = option(None, "None: --batch_size")
    pretext_args: str = option("", "the task's options as key=value,key=value (or as --{task}_{option} flags)")
    mask: str = content("", "mask.pt of an IMP level (or its run directory): pretrain that subnetwork")
    fresh_classifier: bool = option(False, "also replace a trained 10-way classifier with a fresh one")


@dataclass
class ImpCommand:
    """`earlyphase imp` (and `earlyphase stability`): IMP's config and how its trainings share the device."""

    imp: ImpConfig = component(ImpConfig)
    scheduler: SchedulerConfig = component(SchedulerConfig)


# A study's default conditions: the paper's Section 5 comparison (what `all` meant before the data-subset tasks;
# so studies named before keep their names). subset and supervised_noaug have sweeps of their own (data_diet).
MAIN_CONDITIONS = "reset,rewind,blur,random_labels,rotation,simclr"


@dataclass
class StudyConfig:
    """A comparison of rewind points (`earlyphase study`): an IMP config, a pretraining config and the scheduler's
    settings, composed (one flag sets a field in each that has it), plus the study's own fields."""

    has_task_options: typing.ClassVar[bool] = False
    imp: ImpConfig = component(ImpConfig)
    pretrain: PretrainConfig = component(PretrainConfig)
    scheduler: SchedulerConfig = component(SchedulerConfig)
    preset: str = platform("quick", "quick (digits, CPU, minutes) or paper (CIFAR-10, GPU); sets defaults")
    conditions: str = option(MAIN_CONDITIONS, "comma-separated: reset, rewind and pretext names, each NAME or "
                                              "NAME=STEPS (its own k: rewind=12it, rotation=2ep; it wins over "
                                              "--pretrain_budgets), a task's options in brackets: "
                                              "subset[select=easy;fraction=0.1]=6it; all = every task installed")
    references: bool = option(True, "each pretext budget K also runs rewinding to K, its like-for-like reference "
                                    "(false: only the conditions named; the sweeps list references as runs of "
                                    "their own)")
    seeds: str = option("0,1", "comma-separated seeds; each condition runs once per seed; auto: 3 seeds, then "
                               "--seeds_batch more to each comparison still undetermined, up to --seeds_max")
    seeds_batch: int = option(2, "with --seeds=auto: seeds added to an undetermined comparison at a time")
    seeds_max: int = option(9, "with --seeds=auto: the most seeds a comparison gets")
    jobs: int = platform(0, "worker processes for the study's units, the CPU threads shared out among them "
                            "(0: one per CPU core on the CPU, 1 on a GPU, under a sweep's --jobs or with "
                            "--threads or --concurrent)")
    worker: str = platform("", "set by --jobs for its worker processes: I/J runs the I-th of J shares of the units")
    cross_levels: str = option("sparsest", "levels whose tickets are crossed with their reference's (mask from "
                                           "one, weights from the other): sparsest, none or numbers 1,3")
    pretrain_budgets: str = option("", "per-task pretraining lengths overriding --pretrain_steps: "
                                       "rotation=2ep,...")
    control_conditions: str = option("rewind", "conditions that also run --controls (all = every one)")


def _task_option_fields() -> list[tuple]:
    """`{task}_{option}` fields for every option of every installed task (earlyphase's and plugins'), typed,
    defaulted and explained as the task declares them. A task that fails to load contributes none."""
    taken = {f.name for f in fields(PretrainConfig)}
    out = []
    from earlyphase.pretext import registry  # finding the tasks imports them (torch): only when asked
    from earlyphase.pretext.base import declared_options

    for plugin in registry.discover():
        if plugin.task is None:
            continue
        for key, declared in declared_options(plugin.task).items():
            name = f"{plugin.name}_{key}"
            if name.isidentifier() and name not in taken:
                taken.add(name)
                help = declared.help or f"an option of {plugin.name} ({plugin.distribution})"
                out.append((name, type(declared.default), option(declared.default, help)))
    return out


@functools.cache
def with_task_options(cls: type) -> type:
    """PretrainConfig or StudyConfig with every installed task's options as fields (`--{task}_{option}`), typed,
    defaulted and explained as the tasks declare them: what the pretrain and study commands parse. The declared
    classes alone serve where no task option is given (the CLI's help and flag errors: no task, no torch)."""
    if getattr(cls, "has_task_options", True):  # made here already, or a config that takes no task options
        return cls
    if issubclass(cls, PretrainConfig):
        made = dataclasses.make_dataclass("PretrainConfig", _task_option_fields(), bases=(cls,))
    else:
        pretrain = with_task_options(PretrainConfig)
        made = dataclasses.make_dataclass("StudyConfig", [("pretrain", pretrain, component(pretrain))], bases=(cls,))
    made.__doc__, made.__module__, made.has_task_options = cls.__doc__, __name__, True
    return made


def pretrain_with_task_options(cfg: PretrainConfig) -> PretrainConfig:
    """`cfg` as an instance of the class with the task options (each at its default where `cfg` has none)."""
    cls = with_task_options(type(cfg))
    return cfg if cls is type(cfg) else cls(**{f.name: getattr(cfg, f.name) for f in fields(cfg)})


def class_to_parse(cls: type, argv: list[str], with_tasks: bool = False) -> type:
    """The class a command line is parsed into: with every task's option (`with_task_options`) for the job
    (`with_tasks`) or where `argv` gives a flag that is not one of `cls`'s and starts as a task's option does
    (`--rotation_...`); else `cls` as declared, so no task (no torch) is imported. Task names come from metadata."""
    if with_tasks:
        return with_task_options(cls)
    from earlyphase.pretext import registry

    known = {f.name for _, f in leaves(cls())}
    keys = [a[2:].partition("=")[0].replace("-", "_") for a in argv if a.startswith("--")]
    tasks = registry.names()
    named = any(k not in known and any(k.startswith(f"{t}_") for t in tasks) for k in keys)
    return with_task_options(cls) if named else cls


# ---------------------------------------------------------------------------------------------- naming
def effective_default(cfg, f: dataclasses.Field):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if default is None and hasattr(cfg, "dataset"):
        return defaults_for(cfg).get(f.name)
    return default


def run_fields(cfg, *, digests: dict | None = None, unused=()) -> dict:
    """The fields that name a run: every option and replicate field away from its effective default, and each
    content field as its digest (`digests`, from the job; absent or empty: not named); `unused`: fields that
    cannot change this run (the job knows which), left out."""
    digests, out = digests or {}, {}
    for owner, f in leaves(cfg):
        kind, value = field_kind(f), getattr(owner, f.name)
        if f.name in unused or kind in UNNAMED:
            continue
        if kind == "content":
            value = digests.get(f.name)
            if value:
                out[f.name] = value
        elif value is not None and value != effective_default(owner, f):
            out[f.name] = value
    return out


def run_name(kind: str, cfg, *, digests: dict | None = None, unused=(), extra: dict | None = None,
             label: str = "") -> str:
    """KIND[_LABEL]_HASH over run_fields; `extra` entries (a protocol version) enter the hash too, so runs of an
    earlier protocol are never reused."""
    named = {"kind": kind, **run_fields(cfg, digests=digests, unused=unused), **(extra or {})}
    digest = hashlib.sha256(json.dumps(named, sort_keys=True, default=str).encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
    return f"{kind}_{safe}_{digest}" if label else f"{kind}_{digest}"


def imp_run_name(cfg: ImpConfig, rewind_from_sha256: str | None) -> str:
    """An IMP run's directory name: a rewind point from a file counts by its content (sha256), which makes
    --rewind_step irrelevant, so neither the file's path nor an ignored rewind_step renames the run. The one rule:
    `earlyphase imp` names its run with it, and a run's config.json is checked against it."""
    sha = rewind_from_sha256 or ""
    return run_name("imp", cfg, digests={"rewind_from": f"sha256:{sha}" if sha else ""},
                    unused={"rewind_step"} if sha else ())


def run_dir(kind: str, cfg, **naming) -> Path:
    out = next(owner.out for owner, f in leaves(cfg) if f.name == "out")
    return Path(out).expanduser() / run_name(kind, cfg, **naming)


def _all_config_fields() -> dict[str, str]:
    """The kinds of the fields a run records (IMP, pretraining and scheduler fields; the tasks' own options are
    options too, and a rewind point records them apart), known without finding the installed tasks."""
    return {f.name: field_kind(f) for cls in (ImpConfig, PretrainConfig, SchedulerConfig) for _, f in leaves(cls())}


def condition_fields(record: dict) -> dict:
    """The entries of a recorded config (config.json) that name a condition: option fields only. Replicate,
    content and platform fields and the record's own bookkeeping entries (no config field) are left out."""
    kinds = _all_config_fields()
    return {k: v for k, v in record.items() if kinds.get(k) == "option"}


def describe_options(cls, cfg=None) -> str:
    """One line per flag: --name=type  [value]  help. The value is `cfg`'s (the config the command's other
    arguments make, dataset defaults filled in) or, without one, the class default."""
    shown_cfg = cfg if cfg is not None else cls()
    hints = field_types(shown_cfg)
    lines = []
    for owner, f in leaves(shown_cfg):
        value = getattr(owner, f.name)
        by_dataset = cfg is None and any(f.name in preset for preset in DATASET_DEFAULTS.values())
        by_model = cfg is None and any(f.name in family.defaults for family in model_registry.FAMILIES)
        shown = repr(value) if value is not None else (
            "dataset default" if by_dataset else "model default" if by_model else "none")
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        hint = getattr(hint, "__name__", str(hint))
        lines.append(f"  --{f.name}={hint}  [{shown}]  {f.metadata.get('help', '')}".rstrip())
    return "\n".join(lines)


def resolved(cfg):
    """A copy with dataset-dependent defaults filled in, through components."""
    if hasattr(cfg, "resolved"):
        return cfg.resolved()
    return dataclasses.replace(cfg, **{f.name: resolved(getattr(cfg, f.name)) for f in fields(cfg)
                                       if field_kind(f) == "component"})
