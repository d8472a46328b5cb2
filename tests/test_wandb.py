import socket

import pytest

from earlyphase.studies.jobs import wandb_log
from earlyphase.studies.jobs.events import InPart, Tickets
from earlyphase.studies.jobs.wandb_log import WandbLogger


def test_default_mode_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_log.default_mode() == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_log.default_mode() == "disabled"  # no key anywhere
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_log.default_mode() == "online"
    with pytest.raises(ValueError, match="disabled, offline or online"):
        WandbLogger("sometimes")


def test_disabled_mode_makes_no_traffic_and_no_files(monkeypatch, tmp_path):
    calls = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: calls.append(a) or real_connect(self, *a))
    monkeypatch.chdir(tmp_path)
    logger = WandbLogger("disabled", directory=tmp_path)
    with logger.unit("u", "train", {"lr": 0.1}) as sink:
        sink({"step": 1, "test_accuracy": 0.5})
    with logger.router("imp", {}) as route:
        route(InPart(0, "trunk", None, {"step": 1, "test_accuracy": 0.5}))
        route(Tickets([{"level": 0, "kind": "trunk", "density": 1.0, "test_accuracy": 0.5}]))
    logger.close()
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_offline_mode_writes_an_offline_run(tmp_path):
    logger = WandbLogger("offline", directory=tmp_path)
    with logger.router("imp seed 0", {"seed": 0}) as route:
        route(InPart(0, "trunk", None, {"step": 5, "test_accuracy": 0.5}))
        route(InPart(1, "trunk", None, {"step": 5, "test_accuracy": 0.6}))
        route(Tickets([{"level": 0, "kind": "trunk", "density": 1.0, "test_accuracy": 0.5}]))
    logger.close()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one W&B run per IMP level
    assert all(any(r.glob("*.wandb")) for r in runs)


def test_unreachable_server_falls_back_to_offline_with_one_warning(monkeypatch, tmp_path, capsys):
    import wandb

    real_init = wandb.init

    def init(mode, **kwargs):
        if mode == "online":
            raise wandb.errors.CommError("dial tcp: connection refused\nsecond line")
        return real_init(mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    logger = WandbLogger("online", directory=tmp_path)
    for name in ("a", "b"):
        with logger.unit(name, "train", {}) as sink:
            sink({"step": 1, "test_accuracy": 0.5})
    logger.close()
    err = capsys.readouterr().err
    assert err.count("W&B unreachable") == 1 and "second line" not in err
    assert logger.mode == "offline" and len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2


def test_imp_command_logs_one_offline_run_per_level(tmp_path, capsys):
    from earlyphase.studies import cli

    out = tmp_path / "runs"
    args = ["imp", f"--out={out}", "--width=2", "--training_steps=3it", "--batch_size=32", "--levels=1",
            "--rewind_step=0it", "--wandb=offline"]
    assert cli.main(args) == 0
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # level 0 and level 1
    assert cli.main(["imp", f"--out={out}", "--wandb=sometimes"]) == 2
    assert "--wandb=sometimes" in capsys.readouterr().err


def test_router_keeps_a_levels_parts_open_together_and_closes_them_two_levels_later():
    """--concurrent interleaves a level's trunk and controls (and the stability copy of the level before):
    their records alternate, one run each."""
    events = []

    class Run:
        def __init__(self, name):
            self.name, self.summary = name, {}

        def log(self, values):
            events.append(("log", self.name, values.get("test_accuracy")))

        def finish(self):
            events.append(("finish", self.name))

    class Logger(WandbLogger):
        def _init(self, name=None, **kwargs):
            events.append(("init", name))
            return Run(name)

    router = Logger(mode="offline").router("imp", {})
    for level, kind, acc in [(1, "trunk", 0.1), (1, "random_reinit", 0.2), (1, "trunk", 0.3),
                             (1, "random_reinit", 0.4), (2, "trunk", 0.5), (1, "stability", 0.6), (3, "trunk", 0.7)]:
        router(InPart(level, kind, None, {"test_accuracy": acc}))
    router.close()
    assert events == [("init", "imp: level 1"), ("log", "imp: level 1", 0.1),
                      ("init", "imp: level 1 random_reinit"), ("log", "imp: level 1 random_reinit", 0.2),
                      ("log", "imp: level 1", 0.3), ("log", "imp: level 1 random_reinit", 0.4),
                      ("init", "imp: level 2"), ("log", "imp: level 2", 0.5),
                      ("init", "imp: level 1 stability"), ("log", "imp: level 1 stability", 0.6),
                      ("finish", "imp: level 1"), ("finish", "imp: level 1 random_reinit"),
                      ("finish", "imp: level 1 stability"),
                      ("init", "imp: level 3"), ("log", "imp: level 3", 0.7),
                      ("finish", "imp: level 2"), ("finish", "imp: level 3")]
