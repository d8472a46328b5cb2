"""`earlyphase pretrain`: train the backbone with a pretext task and save a rewind point.

Protocol (as open_lth's `train_start_step`): pretraining for k steps *replaces* the first k iterations of
the supervised run. It trains [0, k) with the task, under the optimiser the supervised run would have used
for those iterations (momentum, weight decay, batch size, and the training schedule's learning rate at
each step: --lr with its warmup and any milestone before k); `--pretrain_lr` instead sets a constant
rate. Every IMP level from the rewind point then trains [k, T) with the schedule continuing from k,
exactly as rewinding to k does, so `supervised` for k steps followed by IMP *is* standard rewinding to k
(bit for bit on CPU; tests/test_protocol.py).

- The task is looked up by name among the `earlyphase.pretext` entry points (built-in or plugin).
- Its settings: every task's options (built-in or plugin) are fields named `{task}_{option}`, derived
  from the task's declaration (`--rotation_all_four`, `--simclr_temperature`, ...);
  `--pretext_args=key=value,key=value` sets them too (each option once). Both are checked against what the
  task declares.
- The network starts at the seed's initialisation (the dense run's init); a task with its own head
  replaces `.fc` with it (head seeded from (seed, "pretext_head", task)). Training goes through the one
  trainer (resumable, seeded, progress bar). Evaluation reports the task's own test loss and accuracy.
- k: `--pretrain_steps` counted in the supervised run's iterations (`40ep` = 40 epochs at --batch_size);
  pretraining itself runs `--pretrain_steps` at `--pretrain_batch_size` (the same number of iterations
  unless that batch size differs).
- Rewind point (`rewind_point.pt` in the run directory, the shared format): the pretrained backbone
  with a 10-way classifier, `step` = k, the momentum buffers of every parameter that carries over (by
  name), and `pretext` (task, options, budget). A task with its own head gets a fresh classifier, seeded
  from (seed, "classifier"), so the pretext head never leaks; the backbone keeps its momentum and the
  fresh classifier starts without any (decision: the optimiser continues as the dense run's does across
  step k; the pretext direction it carries decays within ~20 steps at momentum 0.9). A task that trains
  the real classifier (supervised, blur, random labels: head None) keeps it and its momentum, so
  `supervised` for k steps is exactly the dense run at k, optimiser included; `--fresh_classifier`
  replaces it there too.
- Sparse pretraining: `--mask=PATH` (a mask.pt of an IMP level, or a run directory holding one) trains
  only that subnetwork: the mask multiplies the backbone weights after every step; a pretext head is
  not masked. The rewind point keeps the whole mask, and its classifier (fresh or trained) is masked by
  the mask's fc entries.
- Data subsets: a task that restricts its examples (`PretextTask.examples`) gets its scores first where it asks
  (`scoring()`: jobs/scores.py trains them as a run of their own, shared and never recomputed), then
  `choose()`; the rewind point records how many examples, their digest, the scoring iterations and the task's
  variant, and the examples name the run by content.
- Run directory: `pretrain_{task}_{hash}`; the hash covers the non-default fields that matter for this
  task (other tasks' options and --training_steps are left out, the mask enters by content, not path)
  and the protocol version: directories made before pretraining counted as the first k steps (protocol
  1, when IMP restarted at step 0) are never reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from earlyphase.imp.rewinding import masked_momentum, momentum_by_name
from earlyphase.pretext import registry
from earlyphase.pretext.base import PretextTask, TaskInfo, coerce_option, declared_options, parse_args

from ..engine import checkpoints, schedule
from ..engine.augment import derive_seed
from ..engine.errors import UsageError
from ..engine.plan import TrainPlan, TrainResult
from ..engine.run_dir import load_bound, weights_file
from ..engine.schedule import Job, Training
from . import arguments, setup
from . import scores as scores_job
from .config import PretrainConfig, pretrain_with_task_options, run_dir, with_task_options
from .events import Identity
from .identity import public_config, task_label
from .stats import tracker_hooks
from .wandb_log import logged_run

# ------------------------------------------------------------------------------------------ options
BUILT_IN = "earlyphase"  # the distribution of earlyphase's own tasks
UNUSED_TRAINING_FIELDS = ("training_steps",)  # pretraining has its own length; it follows the schedule up to k
PROTOCOL = 2  # 2: pretraining is the first k steps of the run (IMP trains [k, T)); 1 (unnamed): IMP restarted at 0


def option_fields() -> set[str]:
    """Every task's `{task}_{option}` fields (derived from the installed tasks)."""
    return ({f.name for f in dataclasses.fields(with_task_options(PretrainConfig))}
            - {f.name for f in dataclasses.fields(PretrainConfig)})


def flag_for(task: str, key: str) -> str | None:
    """The config field that carries option `key` of `task`, or None (then only --pretext_args sets it)."""
    name = f"{task}_{key}"
    return name if name in option_fields() else None


def built_in(plugin: registry.Plugin) -> bool:
    return plugin.distribution.split()[0] == BUILT_IN


def task_options(cfg: PretrainConfig, task_cls: type[PretextTask]) -> dict:
    """The task's option values, from its `--{task}_{option}` flags and --pretext_args (each option set once),
    converted and checked."""
    try:
        given = parse_args(cfg.pretext_args)
    except ValueError as err:
        raise UsageError(f"--pretext_args: {err}") from None
    declared = declared_options(task_cls)
    values = {}
    for key, text in given.items():
        if key not in declared:
            takes = ", ".join(declared) or "no options"
            raise UsageError(f"--pretext_args: {cfg.pretext} has no option {key!r}; it takes: {takes}")
        flag = flag_for(cfg.pretext, key)
        if flag and getattr(cfg, flag) != declared[key].default:
            raise UsageError(f"{key} of {cfg.pretext} is set twice, by --{flag} and --pretext_args: set it once")
        try:
            values[key] = coerce_option(cfg.pretext, key, text, declared[key].default)
        except ValueError as err:
            raise UsageError(f"--pretext_args: {err}") from None
    for key, option in declared.items():
        flag = flag_for(cfg.pretext, key)
        if key not in values:
            values[key] = getattr(cfg, flag) if flag else option.default
    return values


def unused_fields(cfg: PretrainConfig, plugin: registry.Plugin) -> set[str]:
    """Fields that cannot change this pretraining: other tasks' options and the training's length; a plugin's
    own option fields too, since its options name the run as one --pretext_args entry (as they always did)."""
    own = {f"{cfg.pretext}_{key}" for key in plugin.task.options} if built_in(plugin) else set()
    return (option_fields() - own) | set(UNUSED_TRAINING_FIELDS)


# --------------------------------------------------------------------------------------------- mask
def load_mask(path: str, model: torch.nn.Module) -> dict:
    """{name: bool tensor} from a mask.pt (or a run directory holding one), checked against the model."""
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "mask.pt"
    if not file.is_file():
        raise UsageError(f"--mask={path}: no mask file there (expected a mask.pt or a run directory holding one)")
    mask = checkpoints.load(file, given="--mask")
    if isinstance(mask, dict) and isinstance(mask.get("mask"), dict):
        mask = mask["mask"]  # a rewind point or checkpoint that carries one
    params = dict(model.named_parameters())
    if not isinstance(mask, dict) or not mask or not all(isinstance(v, torch.Tensor) for v in mask.values()):
        raise UsageError(f"--mask={path}: not a mask ({{parameter name: bool tensor}})")
    for name, value in mask.items():
        if name not in params or params[name].shape != value.shape:
            raise UsageError(f"--mask={path}: entry {name!r} does not fit {cfg_arch(model)} "
                             f"(check --model and --width)")
    return {name: value.bool() for name, value in mask.items()}


def cfg_arch(model) -> str:
    return f"{type(model).__name__}(depth={getattr(model, 'depth', '?')}, width={getattr(model, 'width', '?')})"


def mask_digest(mask: dict | None) -> str:
    if not mask:
        return ""
    h = hashlib.sha256()
    for name in sorted(mask):
        h.update(name.encode() + str(tuple(mask[name].shape)).encode() + mask[name].cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- validate
def validate(cfg: PretrainConfig) -> tuple[PretrainConfig, registry.Plugin, dict]:
    cfg = setup.validate(pretrain_with_task_options(cfg))
    try:
        plugin = registry.load(cfg.pretext)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if setup.parse_step(cfg.pretrain_steps, 1, "pretrain_steps").it < 1:
        raise UsageError(f"--pretrain_steps={cfg.pretrain_steps}: pretrain for at least 1it (e.g. 500it)")
    if cfg.pretrain_lr is not None and not cfg.pretrain_lr > 0:
        raise UsageError("--pretrain_lr must be positive")
    if cfg.pretrain_batch_size is not None and cfg.pretrain_batch_size < 1:
        raise UsageError("--pretrain_batch_size must be a positive integer")
    options = task_options(cfg, plugin.task)
    # Canonical forms, so equivalent commands name the same run: earlyphase's own tasks by their option
    # fields, plugins by one pretext_args entry of their non-default options (how each was always named).
    defaults = {k: o.default for k, o in declared_options(plugin.task).items()}
    if built_in(plugin):
        flags = {flag_for(cfg.pretext, k): v for k, v in options.items() if flag_for(cfg.pretext, k)}
        cfg = dataclasses.replace(cfg, pretext_args="", **flags)
    else:
        changed = {k: v for k, v in options.items() if v != defaults[k]}
        cfg = dataclasses.replace(cfg, pretext_args=",".join(f"{k}={v}" for k, v in sorted(changed.items())))
    cfg = dataclasses.replace(
        cfg, pretrain_batch_size=None if cfg.pretrain_batch_size == cfg.batch_size else cfg.pretrain_batch_size)
    return cfg, plugin, options


def pretrain_dir(cfg: PretrainConfig, plugin: registry.Plugin, digest: str, examples: str = "") -> Path:
    """runs/pretrain_{task}_{hash}: the mask and a task's chosen examples by content, the protocol in the hash
    (runs/ config.py's policy); a run on every example names no examples, so existing names stay."""
    return run_dir("pretrain", cfg, digests={"mask": digest}, unused=unused_fields(cfg, plugin),
                   extra={"protocol": PROTOCOL, **({"examples": examples} if examples else {})}, label=cfg.pretext)


def examples_digest(subset: torch.Tensor | None) -> str:
    return "" if subset is None else hashlib.sha256(subset.cpu().long().numpy().tobytes()).hexdigest()[:16]


def choose_examples(cfg: PretrainConfig, task: PretextTask, data, device) -> Job:
    """The examples the task trains on (its scores first, as their own run, where it asks for them); returns
    (subset or None, what the rewind point records of it)."""
    request = task.scoring()
    scores, facts = None, {}
    if request is not None:
        out, scores = yield from scores_job.work(cfg, data, device, request)
        facts = {"scores_run": out.name, "score_kind": request.kind, "scoring_iterations": request.runs * request.steps}
    try:
        subset = task.choose(scores)
    except ValueError as err:
        raise UsageError(f"--pretext={cfg.pretext}: {err}") from None
    if subset is not None:
        facts |= {"examples": len(subset), "examples_digest": examples_digest(subset)}
    return subset, facts


def make_task(cfg: PretrainConfig, plugin: registry.Plugin, options: dict, data) -> PretextTask:
    """The task instance for this dataset; a value its own setup() refuses is a one-line error."""
    try:
        return plugin.task(task_info(cfg, data), **options)
    except ValueError as err:
        raise UsageError(f"--pretext={cfg.pretext}: {err}") from None


def task_info(cfg: PretrainConfig, data) -> TaskInfo:
    return TaskInfo(seed=derive_seed(cfg.seed, "pretext", cfg.pretext), num_classes=data.num_classes,
                    num_examples=max(len(data.train_y), len(data.test_y)), image_size=tuple(data.train_x.shape[-2:]),
                    mean=tuple(data.mean), std=tuple(data.std), flip=data.flip, num_train=len(data.train_y),
                    training_iterations=setup.training_steps(cfg, data)[1].it)


# -------------------------------------------------------------------------------------------- run
def rewind_point(cfg: PretrainConfig, model, momentum: dict, task_head: bool, mask: dict | None, data,
                 step: int, pretext: dict, description: str) -> dict:
    """The pretrained network with a 10-way classifier (fresh where the task had its own head), the step k it
    stands for, and the momentum of every parameter that carries over (the module docstring says which).

    Built on the CPU, so the fresh classifier's draws are the same whichever device trained."""
    model = model.cpu()
    fresh = task_head or cfg.fresh_classifier
    if fresh:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "classifier"))
            model.reset_classifier(data.num_classes)
        momentum = {n: m for n, m in momentum.items() if not n.startswith("fc.")}
    state = checkpoints.state_dict_cpu(model)
    for name in ("fc.weight", "fc.bias"):
        if mask and name in mask:
            state[name] = state[name] * mask[name]
    momentum = masked_momentum({n: m.cpu() for n, m in momentum.items()}, mask or {})
    return {"model": state, "mask": mask, "description": description, "step": step, "momentum": momentum,
            "pretext": pretext, "arch": {"model": cfg.model, "width": cfg.width, "num_classes": data.num_classes}}


def pretrain_plan(cfg: PretrainConfig, data, device: torch.device, progress: str) -> tuple[TrainPlan, int]:
    """(the pretraining's plan, k): [0, pretrain_steps) at the pretraining batch size, under the training
    schedule (or a constant --pretrain_lr); k is --pretrain_steps in the supervised run's iterations."""
    per_epoch = data.iterations_per_epoch(cfg.batch_size)
    batch = cfg.pretrain_batch_size or cfg.batch_size
    end = setup.parse_step(cfg.pretrain_steps, data.iterations_per_epoch(batch), "pretrain_steps").it
    rates = setup.schedule(cfg, per_epoch)
    if cfg.pretrain_lr is not None:
        rates = dataclasses.replace(rates, lr=cfg.pretrain_lr, milestones=())
    plan = setup.plan_for(cfg, device, schedule=rates, batch_size=batch, start=0, end=end, save_at=(end,),
                          progress=progress)
    return plan, setup.parse_step(cfg.pretrain_steps, per_epoch, "pretrain_steps").it


def run(cfg: PretrainConfig, sinks=()) -> tuple[Path, TrainResult]:
    return schedule.run(work(cfg, sinks))


def work(cfg: PretrainConfig, sinks=()) -> Job:
    """Pretraining as a scheduler job (one training); returns (run dir, result)."""
    cfg, plugin, options = validate(cfg)
    device = setup.resolve_device(cfg.device)
    data = setup.load_data(cfg, device)
    task = make_task(cfg, plugin, options, data)
    subset, subset_facts = yield from choose_examples(cfg, task, data, device)
    if task.variant():  # only tasks that have one: other rewind points keep their bytes, so their IMP run names
        subset_facts["variant"] = task.variant()
    model = setup.make_model(cfg, data, device)
    mask = load_mask(cfg.mask, model) if cfg.mask else None
    out = pretrain_dir(cfg, plugin, mask_digest(mask), examples_digest(subset))
    plan, k = pretrain_plan(cfg, data, device, progress=f"pretrain {cfg.pretext} {out.name}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "pretext_head", cfg.pretext))
        head = task.head(model.num_features, data.num_classes)
    if head is not None:
        model.fc = head.to(device)
    # A pretext head is not part of the subnetwork: only the backbone (and a kept classifier) is masked.
    train_mask = {k: v for k, v in mask.items() if head is None or not k.startswith("fc.")} if mask else None
    pretext = {"name": cfg.pretext, "options": task.settings(), "pretrain_steps": cfg.pretrain_steps, "step": k,
               "pretrain_iterations": plan.end, "target": plugin.target, "distribution": plugin.distribution,
               "mask_digest": mask_digest(mask), "seed": cfg.seed, "protocol": PROTOCOL, **subset_facts}

    out.mkdir(parents=True, exist_ok=True)
    record = {**setup.config_record("pretrain", cfg), "pretext_options": options, "pretext_target": plugin.target,
              "pretext_distribution": plugin.distribution, "mask_digest": mask_digest(mask), "rewind_step_it": k,
              "protocol": PROTOCOL, **subset_facts}
    checkpoints.write_json_atomic(out / "config.json", record)
    label = f"{task_label(cfg.pretext, task.variant())} {cfg.pretrain_steps}{' sparse' if mask else ''}"
    for sink in sinks:  # what W&B runs carry (jobs.identity's fields for the pretext condition)
        sink(Identity({**public_config(record), "condition": label, "condition_kind": "pretext",
                           "task": cfg.pretext, "task_options": task.settings(), "budget": cfg.pretrain_steps, "k": k,
                           "seed": cfg.seed, "run": out.name}))
    hooks = tracker_hooks(cfg, model, plan, data, out, task=task, mask=train_mask, sinks=sinks)
    (result,) = yield [Training(model, data, plan, out, task=task, mask=train_mask, sinks=sinks, step_hooks=hooks)]

    path = out / "rewind_point.pt"
    if not path.exists():  # built from the weights saved at the end, so a run killed after training still gets one
        saved = load_bound(weights_file(out, plan.end), map_location=device)
        model.load_state_dict(saved["model"])
        momentum = momentum_by_name(saved["optimizer"], [n for n, _ in model.named_parameters()],
                                    saved.get("task_parameters", 0))
        settings = ", ".join(f"{k}={v}" for k, v in task.settings().items())
        description = (f"{cfg.pretext}({settings}) pretraining for {cfg.pretrain_steps} from seed {cfg.seed}"
                       + (f", sparse (mask {mask_digest(mask)})" if mask else ""))
        point = rewind_point(cfg, model, momentum, head is not None, mask, data, k, pretext, description)
        checkpoints.save_atomic(point, path)
    result.extras["rewind_point"] = path
    return out, result


def check_config(cfg: PretrainConfig) -> None:
    """Everything work(cfg) would refuse before it trains (the task's own setup() included), refused now;
    nothing is written or trained."""
    cfg, plugin, options = validate(cfg)
    data = setup.load_data(cfg, setup.resolve_device(cfg.device))
    make_task(cfg, plugin, options, data)
    pretrain_plan(cfg, data, torch.device("cpu"), "")


def check(argv: list[str]) -> None:
    """Everything `main(argv)` would refuse, refused now; nothing is written or trained."""
    check_config(arguments.pretrain(argv, with_tasks=True))


def main(argv: list[str]) -> int:
    cfg = arguments.pretrain(argv, with_tasks=True)
    out, result = logged_run(run, cfg, f"pretrain {cfg.pretext} seed {cfg.seed}", "pretrain")
    acc, loss = result.summary["test_accuracy"], result.summary["test_loss"]
    state = "already finished" if result.skipped else "done"
    shown = "n/a" if acc is None else f"{acc:.4f}"
    print(f"pretrain {cfg.pretext} {state}: pretext test accuracy {shown}, test loss {loss:.4f}; "
          f"rewind point {result.extras['rewind_point'].name}")
    print(out)
    return 0
