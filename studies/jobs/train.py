"""`earlyphase train`: dense training of a model (a CIFAR ResNet by default); prints the run directory last."""

from __future__ import annotations

from ..engine.checkpoints import write_json_atomic
from ..engine.trainer import train
from . import arguments, setup
from .config import TrainConfig, run_dir
from .events import Identity
from .identity import public_config
from .stats import tracker_hooks
from .wandb_log import logged_run


def run(cfg: TrainConfig, sinks=()) -> "tuple":
    cfg = setup.validate(cfg)
    device = setup.resolve_device(cfg.device)
    data = setup.load_data(cfg, device)
    out = run_dir("train", cfg)
    plan = setup.make_plan(cfg, data, device, progress=f"train {out.name}")
    out.mkdir(parents=True, exist_ok=True)
    record = setup.config_record("train", cfg)
    write_json_atomic(out / "config.json", record)
    for sink in sinks:  # what its W&B run carries: the resolved config without paths
        sink(Identity({**public_config(record), "run": out.name}))
    model = setup.make_model(cfg, data, device)
    hooks = tracker_hooks(cfg, model, plan, data, out, sinks=sinks)
    return out, train(model, data, plan, out, sinks=sinks, step_hooks=hooks)


def check(argv: list[str]) -> None:
    """Everything `main(argv)` would refuse, refused now; nothing is written or trained."""
    cfg = setup.validate(arguments.train(argv))
    setup.training_steps(cfg, setup.load_data(cfg, setup.resolve_device(cfg.device)))


def main(argv: list[str]) -> int:
    cfg = arguments.train(argv)
    out, result = logged_run(run, cfg, f"train seed {cfg.seed}", "train")
    acc = result.summary["test_accuracy"]
    state = ("finished by another process" if result.by_other_process else
             "already finished" if result.skipped else "done")
    print(f"train {state}: test accuracy {acc:.4f}")
    print(out)
    return 0
