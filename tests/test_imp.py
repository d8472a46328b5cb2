"""IMP with rewinding: the library (masks, pruning, rewinding, controls) and the in-process job."""

import json
import shutil

import pytest
import torch
from torch import nn

from earlyphase.imp import controls, masks, pruning, rewinding
from earlyphase.studies.engine import models
from earlyphase.studies.engine.trainer import train
from earlyphase.studies.jobs import imp as imp_job
from earlyphase.studies.jobs import setup
from earlyphase.studies.jobs.events import InPart, Tickets

from conftest import load

CONTROLS = "random_reinit,random_prune_global,random_prune_layerwise"
FIELDS = dict(width=4, training_steps="1ep", rewind_step="5it", prune_fraction=0.5, eval_every=1)


def tiny(out, **kw):
    return imp_job.ImpConfig(out=str(out), **{**FIELDS, **kw})


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory):
    """One tiny IMP run, 2 levels at 50% with all three controls, shared by the checks below."""
    out = tmp_path_factory.mktemp("imp") / "runs"
    run_dir, records = imp_job.run(tiny(out, levels=2, controls=CONTROLS))
    return run_dir, records


# ---------------------------------------------------------------------------------------------- library
def test_prunable_set_is_every_conv_and_linear_weight():
    model = models.create("cifar_resnet20")
    names = masks.prunable_names(model)
    assert names[0] == "conv.weight" and names[-1] == "fc.weight"
    assert "blocks.3.shortcut.0.weight" in names and not any("bn" in n or "bias" in n for n in names)
    assert sum(p.numel() for n, p in model.named_parameters() if n in names) == 270_896  # the paper's count
    assert masks.prunable_names(model, ["fc", "conv.weight"]) == names[1:-1]
    with pytest.raises(ValueError, match="not a prunable weight"):
        masks.prunable_names(model, ["bn.weight"])


def test_global_ranking_prunes_the_smallest_magnitudes_across_layers():
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Flatten(), nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.5, -0.05]).view(2, 1, 1, 1))
        model[2].weight.copy_(torch.tensor([[0.01, -0.9], [0.02, 0.3], [-0.03, 0.04]]))
    names = masks.prunable_names(model)
    assert names == ["0.weight", "2.weight"]
    mask = pruning.global_magnitude_prune(dict(model.named_parameters()), masks.dense_mask(model, names), 0.5)
    # the 4 smallest |w| of 8: 0.01, 0.02, -0.03, 0.04 all sit in the linear layer; the conv keeps both
    assert mask["0.weight"].flatten().tolist() == [True, True]
    assert mask["2.weight"].tolist() == [[False, True], [False, True], [False, False]]
    # next level: 2 of the 4 survivors go (-0.05 and 0.3), whatever the pruned weights hold
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    weights["2.weight"][0, 0] = 100.0  # a pruned weight's value must not matter
    second = pruning.global_magnitude_prune(weights, mask, 0.5)
    assert second["0.weight"].flatten().tolist() == [True, False]
    assert second["2.weight"].tolist() == [[False, True], [False, False], [False, False]]
    assert masks.is_nested(second, mask) and not masks.is_nested(mask, second)


def test_density_is_fraction_to_the_level_and_masks_nest():
    model = models.create("cifar_resnet20")
    names = masks.prunable_names(model)
    mask = masks.dense_mask(model, names)
    total, gen = masks.size(mask), torch.Generator().manual_seed(0)
    for level in range(1, 9):
        weights = {n: torch.randn(mask[n].shape, generator=gen) for n in names}  # "trained" weights
        new = pruning.global_magnitude_prune(weights, mask, 0.2)
        assert masks.is_nested(new, mask)
        assert abs(masks.kept(new) - total * 0.8 ** level) <= level  # one weight of rounding per level
        assert masks.kept(new) == masks.kept(mask) - pruning.weights_to_prune(masks.kept(mask), 0.2)
        mask = new
    assert masks.density(mask) == pytest.approx(0.168, abs=1e-3)
    with pytest.raises(ValueError):
        pruning.global_magnitude_prune(weights, mask, 1.0)


def test_random_masks_match_trunk_density_and_are_seeded():
    model = models.create("cifar_resnet20", width=4)
    names = masks.prunable_names(model)
    weights = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for n, p in model.named_parameters()}
    trunk = pruning.global_magnitude_prune(weights, masks.dense_mask(model, names), 0.7)
    draw = lambda kind, seed: controls.control_mask(kind, trunk, torch.Generator().manual_seed(seed))  # noqa: E731
    glob, layer = draw("random_prune_global", 0), draw("random_prune_layerwise", 0)
    assert masks.kept(glob) == masks.kept(layer) == masks.kept(trunk)
    assert all(int(layer[n].sum()) == int(trunk[n].sum()) for n in names)
    assert any(int(glob[n].sum()) != int(trunk[n].sum()) for n in names)  # global: layer counts free
    for m in (glob, layer):
        assert list(m) == list(trunk) and any(not torch.equal(m[n], trunk[n]) for n in names)
    assert all(torch.equal(glob[n], draw("random_prune_global", 0)[n]) for n in names)
    assert any(not torch.equal(glob[n], draw("random_prune_global", 1)[n]) for n in names)
    assert all(torch.equal(draw("random_reinit", 0)[n], trunk[n]) for n in names)
    assert controls.parse_controls(["random_prune_layerwise", "random_reinit", "random_reinit"]) == (
        "random_reinit", "random_prune_layerwise")
    with pytest.raises(ValueError, match="unknown control"):
        controls.parse_controls(["random_prune"])


def test_rewound_state_and_masked_momentum():
    model = models.create("cifar_resnet20", width=4)
    names = masks.prunable_names(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    state = model.state_dict()
    mask = {n: torch.rand(state[n].shape, generator=torch.Generator().manual_seed(2)) > 0.5 for n in names}
    rewound = rewinding.rewound_state(state, mask)
    for key, value in state.items():
        if key in mask:
            assert torch.equal(rewound[key][mask[key]], value[mask[key]])
            assert (rewound[key][~mask[key]] == 0).all() and not torch.signbit(rewound[key][~mask[key]]).any()
        else:
            assert torch.equal(rewound[key], value), key  # BN params and buffers unchanged
    params = [n for n, _ in model.named_parameters()]
    momentum = rewinding.momentum_by_name(opt.state_dict(), params)
    assert list(momentum) == params and torch.equal(momentum["fc.bias"], opt.state[model.fc.bias]["momentum_buffer"])
    masked = rewinding.masked_momentum(momentum, mask)
    for name in params:
        before, after = momentum[name], masked[name]
        if name in mask:
            assert (after[~mask[name]] == 0).all() and torch.equal(after[mask[name]], before[mask[name]])
        else:
            assert torch.equal(after, before)


def test_pruned_weights_stay_zero_through_training_with_momentum_and_decay(out):
    """Even with momentum buffers that would push them, and weight decay, every step leaves them at 0."""
    cfg = setup.validate(imp_job.ImpConfig(width=4, training_steps="1ep", weight_decay=1e-2))
    data = setup.load_data(cfg, torch.device("cpu"))
    model = setup.make_model(cfg, data, torch.device("cpu"))
    names = masks.prunable_names(model)
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(3)) > 0.5
            for n, p in model.named_parameters() if n in names}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    state = opt.state_dict()
    state["state"] = {i: {"momentum_buffer": torch.ones_like(p)} for i, p in enumerate(model.parameters())}
    params = dict(model.named_parameters())
    checked = []

    def pruned_are_zero(step, model, loss):
        checked.append(all(bool((params[n][~m] == 0).all()) for n, m in mask.items()))

    plan = setup.make_plan(cfg, data, torch.device("cpu"))
    train(model, data, plan, out / "t", mask=mask, optimizer_state=state, step_hooks=[pruned_are_zero])
    assert len(checked) == 23 and all(checked)
    final = load(out / "t" / "final.pt")["model"]
    assert all(final[n][m].abs().min() > 0 for n, m in mask.items())  # survivors trained


# ---------------------------------------------------------------------------------------------- the job
def test_layout_records_and_densities(imp_run):
    run_dir, records = imp_run
    assert run_dir.name.startswith("imp_")
    assert json.loads((run_dir / "tickets.json").read_text()) == records
    assert [(r["level"], r["kind"]) for r in records] == [(0, "trunk")] + [
        (level, kind) for level in (1, 2) for kind in ["trunk", *CONTROLS.split(",")]]
    for r in records:
        part = run_dir / r["run_dir"]
        for name in ("mask.pt", "density.json", "final.pt", "summary.json", "metrics.jsonl"):
            assert (part / name).exists(), (part, name)
        assert 0 <= r["test_accuracy"] <= 1 and r["train_loss"] > 0 and r["seed"] == 0 and r["rewind"]
        assert r["end_step"] == 23 and r["start_step"] == (0 if r["level"] == 0 else 5)
        density = json.loads((part / "density.json").read_text())
        assert r["density"] == density["density"] == density["kept"] / density["prunable"]
        assert abs(density["kept"] - density["prunable"] * 0.5 ** r["level"]) <= r["level"]
    assert records[1]["rewind"] == "dense run at step 5it, level_0/weights_5it.pt"
    assert records[2]["rewind"].startswith("fresh initialisation (seed ")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["kind"] == "imp" and config["prune_fraction"] == 0.5


def test_masks_are_nested_global_magnitude_of_previous_final_weights(imp_run):
    run_dir, _ = imp_run
    level = [load(run_dir / f"level_{L}" / "mask.pt") for L in range(3)]
    assert all(bool(m.all()) for m in level[0].values())
    for L in (1, 2):
        assert masks.is_nested(level[L], level[L - 1])
        expected = pruning.global_magnitude_prune(
            load(run_dir / f"level_{L - 1}" / "final.pt")["model"], level[L - 1], 0.5
        )
        assert all(torch.equal(expected[n], level[L][n]) for n in expected)


def test_levels_start_bit_for_bit_at_the_rewind_point(imp_run):
    """Survivors equal the rewind point, pruned weights are 0, BN parameters and buffers are rewound too."""
    run_dir, _ = imp_run
    rewind = load(run_dir / "level_0" / "weights_5it.pt")["model"]
    assert int(rewind["bn.num_batches_tracked"]) == 5
    parts = [run_dir / "level_1", run_dir / "level_2", run_dir / "level_2" / "random_prune_global",
             run_dir / "level_2" / "random_prune_layerwise"]
    for part in parts:
        start, mask = load(part / "weights_5it.pt")["model"], load(part / "mask.pt")
        assert start.keys() == rewind.keys()
        for key, value in rewind.items():
            if key in mask:
                assert torch.equal(start[key][mask[key]], value[mask[key]]) and (start[key][~mask[key]] == 0).all()
            else:
                assert torch.equal(start[key], value), (part, key)
        final = load(part / "final.pt")["model"]
        assert all((final[n][~m] == 0).all() for n, m in mask.items())  # still pruned at the end


def test_controls_have_trunk_density_and_differ(imp_run):
    run_dir, _ = imp_run
    rewind = load(run_dir / "level_0" / "weights_5it.pt")["model"]
    for L in (1, 2):
        trunk = load(run_dir / f"level_{L}" / "mask.pt")
        get = lambda kind: load(run_dir / f"level_{L}" / kind / "mask.pt")  # noqa: E731
        assert all(torch.equal(get("random_reinit")[n], trunk[n]) for n in trunk)
        assert masks.kept(get("random_prune_global")) == masks.kept(trunk)
        assert any(not torch.equal(get("random_prune_global")[n], trunk[n]) for n in trunk)
        layerwise = get("random_prune_layerwise")
        assert all(int(layerwise[n].sum()) == int(trunk[n].sum()) for n in trunk)
        assert any(not torch.equal(layerwise[n], trunk[n]) for n in trunk)
        reinit = load(run_dir / f"level_{L}" / "random_reinit" / "weights_5it.pt")["model"]
        assert all((reinit[n][~trunk[n]] == 0).all() for n in trunk)
        assert not torch.equal(reinit["conv.weight"][trunk["conv.weight"]], rewind["conv.weight"][trunk["conv.weight"]])
        assert int(reinit["bn.num_batches_tracked"]) == 0  # a fresh network, BN included


def test_raising_levels_reuses_the_run_and_resume_after_a_kill_between_levels(imp_run, tmp_path):
    run_dir, records = imp_run
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    before = (copy / "level_1" / "final.pt").stat().st_mtime_ns
    # as if killed after level_1's final.pt but before its summary, and before level 2's mask
    (copy / "level_1" / "summary.json").unlink()
    shutil.rmtree(copy / "level_2")
    (copy / "tickets.json").unlink()
    again_dir, again = imp_job.run(tiny(tmp_path / "runs", levels=3))  # controls not asked: only trunk parts run
    assert again_dir == copy
    assert (copy / "level_1" / "final.pt").stat().st_mtime_ns != before  # level 1 was retrained ...
    # ... to the same records; level 1's controls are kept on disk, level 2 is redone without controls
    assert again[:6] == records[:6] and len(again) == 7
    assert (again[-1]["level"], again[-1]["kind"]) == (3, "trunk")
    assert abs(again[-1]["density"] - 0.125) < 0.01


def test_run_name_ignores_levels_and_controls_only(tmp_path):
    name = lambda **kw: imp_job.prepare(tiny(tmp_path, **kw)).out.name  # noqa: E731
    base = name(levels=2)
    assert name(levels=5, controls="random_reinit") == base
    assert name(prune_fraction=0.2) != base and name(rewind_step="0it") != base
    assert name(rewind_optimizer="rewound") != base and name(prune_ignore="fc") != base
    assert name(prune_ignore="fc,conv") == name(prune_ignore="conv.weight,fc.weight")
    assert not tmp_path.joinpath("imp").exists() and not any(tmp_path.iterdir())


def test_reset_to_init_and_rewound_optimizer(out):
    run_dir, records = imp_job.run(tiny(out, levels=1, rewind_step="0it"))
    assert [r["start_step"] for r in records] == [0, 0] and "reset to initialisation" in records[1]["rewind"]
    init, start = load(run_dir / "level_0" / "weights_0it.pt")["model"], load(run_dir / "level_1" / "weights_0it.pt")
    mask = load(run_dir / "level_1" / "mask.pt")
    assert all(torch.equal(start["model"][n][mask[n]], init[n][mask[n]]) for n in mask)

    run_dir, _ = imp_job.run(tiny(out, levels=1, rewind_optimizer="rewound"))
    point, start = load(run_dir / "level_0" / "weights_5it.pt"), load(run_dir / "level_1" / "weights_5it.pt")
    mask = load(run_dir / "level_1" / "mask.pt")
    names = [n for n, _ in models.create("cifar_resnet20", width=4).named_parameters()]
    for i, name in enumerate(names):
        saved, used = (
            point["optimizer"]["state"][i]["momentum_buffer"],
            start["optimizer"]["state"][i]["momentum_buffer"],
        )
        if name in mask:
            assert torch.equal(used[mask[name]], saved[mask[name]]) and (used[~mask[name]] == 0).all()
        else:
            assert torch.equal(used, saved)


def test_rewind_from_a_sparse_pretrained_state(out, tmp_path):
    cfg = setup.validate(tiny(out))
    data = setup.load_data(cfg, torch.device("cpu"))
    model = setup.make_model(cfg, data, torch.device("cpu"), seed=123)
    gen = torch.Generator().manual_seed(4)
    sparse = {"blocks.0.conv1.weight": torch.rand(model.blocks[0].conv1.weight.shape, generator=gen) > 0.5}
    with torch.no_grad():
        model.blocks[0].conv1.weight.mul_(sparse["blocks.0.conv1.weight"])
        model.bn.running_mean.add_(0.25)
    pretext = tmp_path / "pretext_run"
    pretext.mkdir()
    torch.save({"model": model.state_dict(), "mask": sparse, "description": "rotation 3ep", "step": 3,
                "arch": {"model": "cifar_resnet20", "width": 4, "num_classes": 10}}, pretext / "rewind_point.pt")

    run_dir, records = imp_job.run(tiny(out, levels=1, rewind_from=str(pretext), rewind_step="7it"))
    # the file stands for step 3: every level, level 0 included, trains [3, T) (no momentum in the file: fresh SGD)
    assert [r["start_step"] for r in records] == [3, 3] and all(r["end_step"] == 23 for r in records)
    assert all(str(pretext / "rewind_point.pt") in r["rewind"] and "rotation 3ep" in r["rewind"] for r in records)
    level0 = load(run_dir / "level_0" / "mask.pt")
    assert torch.equal(level0["blocks.0.conv1.weight"], sparse["blocks.0.conv1.weight"])
    assert records[0]["density"] < 1
    level1 = load(run_dir / "level_1" / "mask.pt")
    assert masks.is_nested(level1, level0)
    for part, mask in (("level_0", level0), ("level_1", level1)):
        start = load(run_dir / part / "weights_3it.pt")["model"]
        for key, value in model.state_dict().items():
            keep = mask.get(key, torch.ones_like(value, dtype=torch.bool))
            assert torch.equal(start[key][keep], value[keep]) and (start[key][~keep] == 0).all(), (part, key)
    # named by content: the same file elsewhere, with another (ignored) rewind_step, is the same run
    shutil.copy(pretext / "rewind_point.pt", tmp_path / "copy.pt")
    assert imp_job.prepare(tiny(out, rewind_from=str(tmp_path / "copy.pt"))).out == run_dir


def test_sinks_see_tagged_metrics_and_the_tickets(out):
    seen = []
    _, records = imp_job.run(tiny(out, levels=1), sinks=[seen.append])
    metrics = [e for e in seen if isinstance(e, InPart) and isinstance(e.event, dict)]
    assert {(e.level, e.kind) for e in metrics if "step" in e.event} == {(0, "trunk"), (1, "trunk")}
    assert seen[-1] == Tickets(records)
