"""--concurrent: jobs as generators, stacking of same-shaped trainings across levels, units and sweep runs."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from earlyphase.studies import cli
from earlyphase.studies.engine import schedule

from conftest import final_weights

FLAGS = ["--width=4", "--training_steps=2ep", "--milestone_steps=1ep", "--eval_every=2", "--levels=2",
        "--rewind_step=3it", "--pretrain_steps=3it", "--batch_size=128", "--stability="]


@pytest.fixture
def stacks(monkeypatch):
    """Records the run directories of every stack the scheduler trains (and still trains it)."""
    seen = []
    real = schedule.train_stacked

    def recording(runs, data):
        seen.append([Path(r.run_dir) for r in runs])
        return real(runs, data)

    monkeypatch.setattr(schedule, "train_stacked", recording)
    return seen


def rel(paths, root):
    return sorted(p.relative_to(root).as_posix() for p in paths)


def test_chunks_are_balanced():
    assert [len(c) for c in schedule.chunks(list(range(9)), 8)] == [5, 4]
    assert [len(c) for c in schedule.chunks(list(range(16)), 8)] == [8, 8]
    assert schedule.chunks([1, 2, 3], 8) == [[1, 2, 3]]
    assert schedule.chunks([1, 2, 3], 1) == [[1], [2], [3]]


def test_gather_runs_jobs_in_lockstep_and_chain_one_after_another():
    def job(name, rounds):
        got = []
        for r in range(rounds):
            got.append((yield [f"{name}{r}a", f"{name}{r}b"]))
        return name, got

    def drive(j):
        log = []
        try:
            asked = next(j)
            while True:
                log.append(asked)
                asked = j.send([x.upper() for x in asked])
        except StopIteration as stop:
            return log, stop.value

    log, values = drive(schedule.gather([job("x", 2), job("y", 1)]))
    assert log == [["x0a", "x0b", "y0a", "y0b"], ["x1a", "x1b"]]
    assert values == [("x", [["X0A", "X0B"], ["X1A", "X1B"]]), ("y", [["Y0A", "Y0B"]])]
    log, values = drive(schedule.chain([job("x", 2), job("y", 1)]))
    assert log == [["x0a", "x0b"], ["x1a", "x1b"], ["y0a", "y0b"]]
    assert values[1] == ("y", [["Y0A", "Y0B"]])


def test_imp_concurrent_stacks_a_levels_parts_and_matches_sequential(tmp_path, capsys, stacks):
    args = ["imp", "--width=4", "--training_steps=1it", "--milestone_steps=", "--batch_size=64", "--levels=1",
            "--rewind_step=0it", "--controls=random_reinit,random_prune_global", "--eval_every=1"]
    assert cli.main([*args, f"--out={tmp_path}/seq"]) == 0
    assert stacks == []  # --concurrent=1 (the default) never stacks
    assert cli.main([*args, f"--out={tmp_path}/con", "--concurrent=3", "--concurrent_engine=vmap"]) == 0
    con = Path(capsys.readouterr().out.strip().splitlines()[-1])
    # level 0 trains alone; level 1's trunk and both controls form one stack
    assert [rel(s, con) for s in stacks] == [["level_1", "level_1/random_prune_global", "level_1/random_reinit"]]
    seq = tmp_path / "seq" / con.name  # same run directory name: --concurrent is not part of the hash
    for part in ("level_0", "level_1", "level_1/random_reinit", "level_1/random_prune_global"):
        a, b = final_weights(seq / part), final_weights(con / part)
        assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) < 2e-5  # float32: 1 step
        names = lambda d: sorted(p.name for p in d.iterdir() if p.is_file())  # noqa: E731
        assert names(seq / part) == names(con / part)
    tickets = json.loads((con / "tickets.json").read_text())
    assert [(t["level"], t["kind"]) for t in tickets] == [(0, "trunk"), (1, "trunk"), (1, "random_reinit"),
                                                          (1, "random_prune_global")]


def test_study_concurrent_stacks_trainings_of_different_units(tmp_path, capsys, stacks):
    out = tmp_path / "runs"
    assert cli.main(["study", f"--out={out}", "--conditions=reset,rewind,random_labels", "--seeds=0",
                     "--concurrent=8", "--concurrent_engine=vmap", "--cross_levels=none", *FLAGS]) == 0
    study_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    units = {u["condition"]: out / u["imp_dir"] for u in json.loads((study_dir / "study.json").read_text())["units"]}
    groups = [sorted((next(c for c, d in units.items() if d in p.parents), p.name if p.parent in units.values()
                      else f"{p.parent.name}/{p.name}") for p in s) for s in stacks]
    # random_labels pretrained for k = 3 steps: its levels train [3, T), as rewinding's pruned levels do: they stack
    assert [("random_labels", "level_0"), ("rewind", "level_1"), ("rewind", "level_1/random_reinit")] in groups
    assert [("random_labels", "level_1"), ("rewind", "level_2"), ("rewind", "level_2/random_reinit")] in groups
    assert [("reset", "level_0"), ("rewind", "level_0")] in groups  # level 0 of both baselines
    assert (study_dir / "report" / "report.md").exists()
    assert all(len(json.loads((d / "tickets.json").read_text())) >= 3 for d in units.values())


def test_sweep_run_concurrent_stacks_across_studies(tmp_path, capsys, stacks):
    sweep = {"method": "grid", "parameters": {"seeds": {"values": [0, 1]}},
             "command": ["${env}", "earlyphase", "study", "--conditions=reset", *FLAGS[:4], *FLAGS[5:], "--levels=1",
                         "--concurrent_engine=vmap", "${args}"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep))
    out = tmp_path / "runs"
    assert cli.main(["sweep", "run", str(path), f"--out={out}", "--concurrent=4"]) == 0
    ledger_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    ledger = json.loads((ledger_dir / "ledger.json").read_text())
    assert sorted(ledger) == ["--seeds=0", "--seeds=1"] and all(v["returncode"] == 0 for v in ledger.values())
    assert len(list(out.glob("study_*/report/report.md"))) == 2
    seeds = lambda s: sorted(json.loads((p.parent / "config.json").read_text())["seed"] for p in s)  # noqa: E731
    assert [len(s) for s in stacks] == [2, 2] and all(seeds(s) == [0, 1] for s in stacks)
    assert cli.main(["sweep", "run", str(path), f"--out={out}", "--concurrent=4"]) == 0
    assert capsys.readouterr().err.count("finished earlier, skipped") == 2


def test_concurrent_refusals(tmp_path, capsys):
    sweep = {"method": "grid", "parameters": {"seed": {"values": [0]}},
             "command": ["${env}", "earlyphase", "train", "${args}"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert cli.main(["sweep", "run", str(path), f"--out={tmp_path}/r", "--concurrent=2"]) == 2
    assert "--concurrent runs sweeps of `earlyphase study`" in capsys.readouterr().err
    assert cli.main(["sweep", "run", str(path), f"--out={tmp_path}/r", "--concurrent=2", "--jobs=2"]) == 2
    assert "choose one" in capsys.readouterr().err
    assert cli.main(["imp", f"--out={tmp_path}/r", "--concurrent=0"]) == 2
    assert "--concurrent=0" in capsys.readouterr().err
    assert cli.main(["study", f"--out={tmp_path}/r", "--concurrent=2", "--concurrent_engine=threads"]) == 2
    assert "choose streams, vmap" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.pt"))


def test_streams_engine_interleaves_steps_and_is_bit_identical(tmp_path, capsys, stacks):
    args = ["imp", "--width=4", "--training_steps=30it", "--milestone_steps=20it", "--batch_size=64", "--levels=1",
            "--rewind_step=5it", "--controls=random_reinit", "--eval_every=1"]
    assert cli.main([*args, f"--out={tmp_path}/seq"]) == 0
    assert cli.main([*args, f"--out={tmp_path}/con", "--concurrent=2", "--concurrent_engine=streams"]) == 0
    con = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert stacks == []  # the streams engine never stacks
    for part in ("level_0", "level_1", "level_1/random_reinit"):
        a, b = final_weights(tmp_path / "seq" / con.name / part), final_weights(con / part)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert (tmp_path / "seq" / con.name / part / "metrics.jsonl").read_text() == (
            con / part / "metrics.jsonl"
        ).read_text()
    # the two parts of level 1 really alternate: their evaluations (one per 23-step epoch) interleave
    from earlyphase.studies.jobs import setup
    from earlyphase.studies.jobs.config import TrainConfig

    cfg = setup.validate(TrainConfig(width=4, training_steps="50it", eval_every=1))
    data = setup.load_data(cfg, torch.device("cpu"))
    log = []
    trainings = [schedule.Training(setup.make_model(cfg, data, torch.device("cpu"), seed=s), data,
                                   setup.make_plan(cfg, data, torch.device("cpu"), seed=s), tmp_path / f"i{s}",
                                   sinks=[lambda r, s=s: log.append((r["step"], s))]) for s in (0, 1)]
    schedule.train_interleaved(trainings)
    assert log == [(23, 0), (23, 1), (46, 0), (46, 1), (50, 0), (50, 1)]
