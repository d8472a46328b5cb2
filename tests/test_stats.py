"""Early-phase statistics (hand-computed values, gradients at hook time, resume) and perturbed tickets end to end."""

import json
import math

import pytest
import torch
from torch import nn

from earlyphase.imp import perturb as P
from earlyphase.pretext.supervised import Supervised
from earlyphase.studies import cli
from earlyphase.studies.engine.batches import EpochBatches
from earlyphase.studies.engine.trainer import train
from earlyphase.studies.jobs import setup, stats
from earlyphase.studies.jobs.config import TrainConfig

INIT = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])
MASK = torch.tensor([[True, True, False], [True, False, True]])


def set_step(model, weight, grad):
    with torch.no_grad():
        model.weight.copy_(weight)
    model.weight.grad = grad.clone()


def test_hand_computed_statistics_for_two_steps(tmp_path):
    model = nn.Linear(3, 2, bias=False)
    rewind = {"weight": torch.tensor([[1.0, 2.0, 0.0], [-4.0, 0.0, -6.0]])}
    logged, evals = [], []
    tracker = stats.StatsTracker(tmp_path, start=0, window=3, end=10, per_epoch=2, names=["weight"],
                                 references={"init": {"weight": INIT}, "rewind": rewind}, mask={"weight": MASK},
                                 evaluate=lambda m: evals.append(1) or {"test_accuracy": 0.5 * len(evals)},
                                 sinks=[logged.append])
    set_step(model, torch.tensor([[2.0, -2.0, 0.0], [4.0, 0.0, -6.0]]), torch.ones(2, 3))
    tracker(1, model, torch.tensor(0.5))
    assert not (tmp_path / stats.STATS_FILE).read_text()  # nothing synced before the epoch ends
    set_step(
        model, torch.tensor([[-1.0, -2.0, 0.0], [4.0, 0.0, 6.0]]), torch.tensor([[3.0, 0.0, 9.0], [4.0, 9.0, 0.0]])
    )
    tracker(2, model, torch.tensor(0.25))  # step 2 ends an epoch: both points are written
    first, second = stats.read_stats(tmp_path)
    # masked init [[1,-2,0],[-4,0,-6]]; masked gradients count the 4 survivors only
    assert first["step"] == 1 and first["train_loss"] == 0.5
    assert first["grad_norm"] == pytest.approx(2.0)
    assert first["weight_norm"] == pytest.approx(math.sqrt(4 + 4 + 16 + 36))
    assert first["dist_init"] == pytest.approx(math.sqrt(1 + 64))
    assert first["sign_diff_init"] == 0.25  # -4 -> 4
    assert first["dist_rewind"] == pytest.approx(math.sqrt(1 + 16 + 64))
    assert first["sign_diff_rewind"] == 0.5  # 2 -> -2, -4 -> 4
    assert second["grad_norm"] == pytest.approx(5.0)  # survivors' gradients 3, 0, 4, 0
    assert second["dist_init"] == pytest.approx(math.sqrt(4 + 64 + 144))
    assert second["sign_diff_init"] == 0.75
    assert second["layers"]["weight"]["sign_diff_init"] == 0.75
    assert (first["test_accuracy"], second["test_accuracy"]) == (0.5, 1.0)
    assert [r["step"] for r in logged] == [1, 2] and logged[1]["stats/sign_diff_init"] == 0.75
    assert "layers" not in logged[0] and logged[0]["stats/train_loss"] == 0.5
    meta = json.loads((tmp_path / stats.META_FILE).read_text())
    assert meta["layers"] == {"weight": 4} and set(meta["references"]) == {"init", "rewind"}
    set_step(model, INIT * MASK, torch.zeros(2, 3))
    tracker(3, model, torch.tensor(0.125))  # the window's end: written, then the hook does nothing
    tracker(4, model, torch.tensor(0.0))
    records = stats.read_stats(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3] and records[-1]["dist_init"] == 0.0


def test_tracked_steps_thin_out_geometrically():
    offsets = stats.tracked_offsets(4000)
    assert offsets[:100] == list(range(1, 101)) and offsets[-1] == 4000
    per_decade = sum(1000 < o <= 10000 for o in stats.tracked_offsets(10000))
    assert per_decade == 50 and len(offsets) == 100 + 80 + 1
    assert stats.eval_offsets(100) == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 79, 100]
    assert set(stats.eval_offsets(4000)) <= set(offsets)


FIELDS = dict(width=4, training_steps="2ep", milestone_steps="1ep", eval_every=1, weight_decay=0.1)


def _setup(out, **kw):
    cfg = setup.validate(TrainConfig(out=str(out), **{**FIELDS, **kw}))
    device = torch.device("cpu")
    data = setup.load_data(cfg, device)
    return cfg, setup.make_model(cfg, data, device), data, setup.make_plan(cfg, data, device)


def test_gradient_at_hook_time_is_the_steps_loss_gradient(out):
    cfg, model, data, plan = _setup(out, training_steps="1it")
    x, y, _ = EpochBatches(data, plan, Supervised()).batch(0)
    reference = setup.make_model(cfg, data, torch.device("cpu"))
    nn.functional.cross_entropy(reference(x), y).backward()
    seen = {}
    train(model, data, plan, out / "g", step_hooks=[lambda step, m, loss: seen.update(
        {n: p.grad.clone() for n, p in m.named_parameters()})])
    for name, p in reference.named_parameters():  # no weight decay (0.1 here) or momentum in .grad
        assert torch.allclose(seen[name], p.grad, atol=1e-6, rtol=1e-5), name


def test_resume_neither_duplicates_nor_loses_points_and_results_are_unchanged(out):
    cfg, model, data, plan = _setup(out, track_steps="2ep")
    train(model, data, plan, out / "full", step_hooks=stats.tracker_hooks(cfg, model, plan, data, out / "full"))

    class Crash(Exception):
        pass

    cfg, model, data, plan = _setup(out, track_steps="2ep")
    [tracker] = stats.tracker_hooks(cfg, model, plan, data, out / "cut")

    def crash(step, model, loss):
        if step == 30:  # checkpoint at 23; points up to 30 are on disk, as after a kill right after a flush
            tracker.flush()
            raise Crash

    with pytest.raises(Crash):
        train(model, data, plan, out / "cut", step_hooks=[tracker, crash])
    assert max(r["step"] for r in stats.read_stats(out / "cut")) == 30
    cfg, model, data, plan = _setup(out, track_steps="2ep")
    result = train(model, data, plan, out / "cut", step_hooks=stats.tracker_hooks(cfg, model, plan, data, out / "cut"))
    assert result.resumed_from == 23
    assert (out / "cut" / "stats.jsonl").read_text() == (out / "full" / "stats.jsonl").read_text()
    assert [r["step"] for r in stats.read_stats(out / "full")] == list(range(1, 47))

    cfg, model, data, plan = _setup(out)
    assert stats.tracker_hooks(cfg, model, plan, data, out / "off") == []
    train(model, data, plan, out / "off")
    tracked, untracked = (torch.load(out / d / "final.pt", weights_only=True)["model"] for d in ("full", "off"))
    assert all(torch.equal(tracked[k], untracked[k]) for k in tracked)
    assert (out / "full" / "metrics.jsonl").read_text() == (out / "off" / "metrics.jsonl").read_text()


IMP = ["imp", "--width=4", "--training_steps=2ep", "--rewind_step=5it", "--prune_fraction=0.5", "--levels=1"]


def test_perturbed_tickets_end_to_end_in_tickets_and_report(out, tmp_path, capsys):
    args = IMP + [f"--out={out}", "--perturb=permute_keep_sign,noise", "--perturb_noise=0.5", "--track_steps=6it"]
    assert cli.main(args) == 0
    run = out / capsys.readouterr().out.strip().splitlines()[-1].split("/")[-1]
    tickets = json.loads((run / "tickets.json").read_text())
    assert [(t["level"], t["kind"]) for t in tickets] == [(0, "trunk"), (1, "trunk"), (1, "perturb_permute_keep_sign"),
                                                          (1, "perturb_noise0.5")]
    assert (
        tickets[2]["density"] == tickets[1]["density"] == 0.5 and "perturbed: permute_keep_sign" in tickets[2]["rewind"]
    )
    # the perturbed start: the rewind point's survivors, magnitudes shuffled within each layer, signs kept
    level = run / "level_1"
    mask = torch.load(level / "mask.pt", weights_only=True)
    rewound = torch.load(level / "weights_5it.pt", weights_only=True)["model"]
    start = torch.load(level / "perturb_permute_keep_sign" / "weights_5it.pt", weights_only=True)["model"]
    assert torch.equal(
        torch.load(level / "perturb_permute_keep_sign" / "mask.pt", weights_only=True)["fc.weight"], mask["fc.weight"]
    )
    for name, keep in mask.items():
        assert torch.equal(start[name][~keep], torch.zeros(int((~keep).sum())))
        assert torch.equal(torch.sign(start[name][keep]), torch.sign(rewound[name][keep]))
        assert torch.equal(start[name][keep].abs().sort().values, rewound[name][keep].abs().sort().values)
    expected = P.perturb("permute_keep_sign", rewound, mask, torch.Generator().manual_seed(tickets[2]["control_seed"]))
    assert all(torch.equal(expected[n], start[n]) for n in mask)  # seeded: the run repeats the library call exactly
    for part in (run / "level_0", level, level / "perturb_noise0.5"):
        steps = [r["step"] for r in stats.read_stats(part)]
        assert steps == ([1, 2, 3, 4, 5, 6] if part.name == "level_0" else [6, 7, 8, 9, 10, 11])
    assert "dist_rewind" not in stats.read_stats(run / "level_0")[0] and "dist_rewind" in stats.read_stats(level)[0]

    assert cli.main(args) == 0  # rerun: everything finished, nothing retrained
    assert capsys.readouterr().err.count("already finished") == 4
    rep = tmp_path / "rep"
    assert cli.main(["report", str(out), "-o", str(rep)]) == 0
    md = (rep / "report.md").read_text()
    noise = next(t for t in tickets if t["kind"] == "perturb_noise0.5")
    # one seed: the value without a spread, and the ticket's advantage over the perturbed ticket without an interval
    row = (f"| rewind 5it | perturb_noise0.5 | {100 * noise['test_accuracy']:.2f} "
           f"({100 * (tickets[1]['test_accuracy'] - noise['test_accuracy']):+.2f}) |")
    assert row in md
    for figure in ("perturbations.png", "early_phase_stats.png", "early_phase_stats_tickets.png"):
        assert f"![{figure}]({figure})" in md and (rep / figure).stat().st_size > 10_000
    assert json.loads((rep / "report.json").read_text())["incomplete"] == []
    (run / "tickets.json").write_text(json.dumps(tickets[:3]))  # as if the noise part had not finished
    assert cli.main(["report", str(out), "-o", str(rep)]) == 0
    assert "1 controls not finished" in json.loads((rep / "report.json").read_text())["incomplete"][0]["why"]


@pytest.mark.parametrize("extra,message", [
    (["--perturb=flip"], "--perturb: unknown perturbation 'flip': choose from sign_rewind_mag_init"),
    (["--perturb_noise=-1"], "--perturb_noise=-1.0: must be a finite number >= 0"),
    (["--track_steps=soon"], "--track_steps: bad step 'soon'"),
    (["--track_steps=0it"], "--track_steps=0it: track at least 1it"),
])
def test_bad_names_exit_2_with_one_line_and_write_nothing(out, capsys, extra, message):
    assert cli.main(IMP + [f"--out={out}"] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_train_and_pretrain_commands_track_their_own_start(out, capsys):
    assert cli.main(["train", "--width=4", "--training_steps=8it", "--track_steps=5it", f"--out={out}"]) == 0
    run = out / capsys.readouterr().out.strip().splitlines()[-1].split("/")[-1]
    records = stats.read_stats(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5] and "dist_rewind" not in records[0]
    assert len(records[0]["layers"]) == 22 and records[0]["test_accuracy"] is not None
    assert cli.main(["pretrain", "--pretext=rotation", "--width=4", "--pretrain_steps=4it", "--track_steps=9it",
                     f"--out={out}"]) == 0
    pre = out / capsys.readouterr().out.strip().splitlines()[-1].split("/")[-1]
    records = stats.read_stats(pre)
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # the window ends with the training
    assert any(name.startswith("fc") for name in records[0]["layers"])  # the pretext head is tracked too
    assert 0 <= records[-1]["test_accuracy"] <= 1  # the pretext's own accuracy (rotations)
