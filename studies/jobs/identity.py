"""A condition's identity, read from a run's recorded config (config.json): what the report groups runs by, and
what every W&B run carries so that W&B can group and average runs without earlyphase's code.

A condition is what differs between IMP runs *besides* the seed: how the rewind point was made.
- no `rewind_from`, rewind step 0 -> `reset`; no `rewind_from` otherwise -> `rewind K` (standard rewinding
  to the dense run's step K, K as the run spelt it: `rewind 6it`, `rewind 2ep`);
- a `rewind_from` made by `earlyphase pretrain` -> the task and its budget, `rotation 400it` (`sparse` for
  masked pretraining; a task's variant in parentheses, `subset(easy 0.1) 6it`), with k = the step the rewind
  point stands for.
Everything else among the config's option fields (dataset, model, T, schedule, pruning, precision, ...) is
the condition's *setting*: conditions are only ever compared within one setting.

`public_config` is a recorded config as it may leave the machine: no local paths (the run's folder, the data
folder, a rewind point or mask file; their content is named by digest in the record already).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .config import ImpConfig, condition_fields, imp_run_name

# fields holding paths of the machine that ran the job (W&B gets digests and identities instead)
PATH_FIELDS = ("out", "data_dir", "rewind_from", "mask")
# per-run facts of a rewind point (they differ between seeds of one condition): not the condition's
_NOT_OPTIONS = ("seed", "mask_digest", "target", "distribution", "protocol", "step", "examples_digest", "scores_run")


@dataclass(frozen=True)
class Identity:
    label: str  # reset, rewind 6it, rotation 6it, rotation 6it sparse
    kind: str  # reset, rewind or pretext
    k: int | None  # the rewind step in iterations: every pruned level trains [k, T)
    budget: str  # the step string that names k: the rewind step, or the pretraining's length
    task: str | None = None  # the pretext task (None for reset and rewind)
    options: dict = field(default_factory=dict)  # the task's options (and `sparse`)
    setting: dict = field(default_factory=dict)  # the option fields but the rewind step
    details: dict = field(default_factory=dict)  # the setting plus the condition's own fields

    def fields(self) -> dict:
        """The identity as flat W&B config / summary entries."""
        return {"condition": self.label, "condition_kind": self.kind, "k": self.k, "budget": self.budget,
                "task": self.task, "task_options": self.options}


def rewind_step_of(config: dict, tickets=()) -> int | None:
    """The rewind step in iterations: recorded since protocol 2; for older standard rewinding, from its levels."""
    if config.get("rewind_step_it") is not None:
        return int(config["rewind_step_it"])
    starts = {t.get("start_step") for t in tickets if t.get("level", 0) >= 1 and t.get("kind") == "trunk"}
    if len(starts) == 1 and None not in starts:
        return int(starts.pop())
    text = str(config.get("rewind_step") or "")
    return int(text[:-2]) if text.endswith("it") and text[:-2].isdigit() else (0 if text in ("0ep", "0ep0it") else None)


def task_label(name: str, variant: str | None) -> str:
    """A pretext task as labels show it: its name, and its variant (`PretextTask.variant`) in parentheses."""
    return f"{name}({variant})" if variant else name


def identify(config: dict, tickets=()) -> Identity:
    """The condition of an IMP run, from its config.json alone (and, for runs older than protocol 2, its tickets)."""
    setting = {key: v for key, v in condition_fields(config).items() if key != "rewind_step"}
    k = rewind_step_of(config, tickets)
    if not config.get("rewind_from"):
        kind = "reset" if k == 0 else "rewind"
        budget = str(config.get("rewind_step") or f"{k}it")
        return Identity("reset" if kind == "reset" else f"rewind {budget}", kind, k, budget, setting=setting,
                        details={**setting, "rewind_step_it": k})
    point = config.get("rewind_point") or {}
    pretext = point.get("pretext") or {}
    name = pretext.get("name") or point.get("description") or "rewind point"
    own = {key: v for key, v in pretext.items() if key not in _NOT_OPTIONS}
    own["sparse"] = bool(pretext.get("mask_digest"))
    budget = str(pretext.get("pretrain_steps") or f"{k}it")
    options = dict(own.get("options") or {}, **({"sparse": True} if own["sparse"] else {}))
    label = f"{task_label(name, pretext.get('variant'))} {budget}{' sparse' if own['sparse'] else ''}"
    return Identity(label, "pretext", k, budget, name, options,
                    setting, {**setting, "rewind_step_it": k, "pretext": own})


def public_config(record: dict) -> dict:
    """A recorded config without the local paths (PATH_FIELDS)."""
    return {key: v for key, v in record.items() if key not in PATH_FIELDS}


def recorded_imp_run_name(record: dict) -> str:
    """The directory name an IMP run's config.json names (jobs.config's policy, as `earlyphase imp` applies it): a
    run directory whose config was edited after the run names another."""
    names = {f.name for f in dataclasses.fields(ImpConfig)}
    cfg = ImpConfig(**{key: v for key, v in record.items() if key in names})
    return imp_run_name(cfg, record.get("rewind_from_sha256"))
