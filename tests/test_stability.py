"""Stability to SGD noise: two copies from a rewind point, the linear path between them, instability."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from earlyphase.studies import cli
from earlyphase.studies.engine import interpolation as stability
from earlyphase.studies.jobs import arguments
from earlyphase.studies.jobs import imp as imp_job
from earlyphase.studies.jobs.events import InPart
from earlyphase.studies.jobs.imp import ImpConfig

from conftest import final_weights, load, same_state

FIELDS = dict(width=4, training_steps="2ep", rewind_step="3it", prune_fraction=0.5, eval_every=2)


def result(folder, bn="interpolate", points=11):
    return json.loads((folder / "stability.json").read_text())[f"bn={bn},points={points}"]


def test_same_data_order_gives_zero_instability_and_endpoints_are_the_two_networks(out):
    # the second copy's data-order seed is the run's own (0): it retraces the first copy exactly
    run_dir, records = imp_job.run(ImpConfig(out=str(out), levels=1, stability="all", stability_data_seed=0, **FIELDS))
    for level in (0, 1):
        copy = run_dir / f"level_{level}" / "stability_seed0"
        a, b = load(run_dir / f"level_{level}" / "final.pt")["model"], load(copy / "final.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)  # level 0: the dense run passes through k in the same state
        r = result(copy)
        assert r["instability"] == 0.0 and r["train_instability"] == 0.0 and r["data_seeds"] == [0, 0]
        assert len(r["path"]) == 13 and [p["alpha"] for p in r["path"]] == [i / 12 for i in range(13)]
        acc = next(t["test_accuracy"] for t in records if t["level"] == level and t["kind"] == "trunk")
        assert r["path"][0]["test_error"] == 1.0 - acc and r["path"][-1]["test_error"] == 1.0 - acc


def test_two_data_orders_the_path_and_its_masks(out):
    seen = []  # what W&B would get: the copies' metrics and each analysis, tagged with level and kind
    run_dir, records = imp_job.run(ImpConfig(out=str(out), levels=1, stability="0,1", **FIELDS), sinks=[seen.append])
    parts = [e for e in seen if isinstance(e, InPart) and isinstance(e.event, dict)]
    results = [e.event for e in parts if "instability" in e.event]
    assert [(e.level, e.kind) for e in parts if "instability" in e.event] == [(0, "stability"), (1, "stability")]
    assert {(e.level, e.kind) for e in parts if "test_accuracy" in e.event} == {
        (0, "trunk"), (1, "trunk"), (0, "stability"), (1, "stability")}
    level = run_dir / "level_1"
    copy = level / "stability"
    a, b = load(level / "final.pt")["model"], load(copy / "final.pt")["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # another data order: another network
    r = result(copy)
    assert results[1]["instability"] == r["instability"]
    first = next(t for t in records if t["level"] == 1 and t["kind"] == "trunk")
    second = json.loads((copy / "summary.json").read_text())
    # the endpoints are exactly the two trained networks as the trainer evaluated them
    assert r["path"][0]["test_error"] == 1.0 - first["test_accuracy"]
    assert r["path"][-1]["test_error"] == 1.0 - second["test_accuracy"]
    errors = [p["test_error"] for p in r["path"]]
    assert (
        r["instability"] == pytest.approx(100 * (max(errors) - (errors[0] + errors[-1]) / 2)) and r["instability"] >= 0
    )
    assert r["density"] == 0.5 and r["start_step"] == 3 and r["bn"] == "interpolate"
    # both copies share the mask, so every point of the path keeps the pruned weights at exactly 0
    mask = load(level / "mask.pt")
    for alpha in (0.25, 0.5, 0.75):
        state = stability.interpolate(a, b, alpha)
        assert all(not state[n][~mask[n]].any() for n in mask)
    stability.check_mask_holds(stability.interpolate(a, b, 0.5), mask)
    broken = dict(b, **{"fc.weight": torch.ones_like(b["fc.weight"])})
    with pytest.raises(ValueError, match="fc.weight is non-zero where the mask prunes it"):
        stability.check_mask_holds(stability.interpolate(a, broken, 0.5), mask)
    # level 0's second copy started from the dense run's state at k, momentum included
    start = load(run_dir / "level_0" / "weights_3it.pt")
    assert json.loads((run_dir / "level_0" / "stability" / "summary.json").read_text())["start_step"] == 3
    assert start["optimizer"]["state"]


def test_recomputed_batchnorm_is_a_second_result_and_nothing_is_retrained(out, capsys):
    args = ["stability", f"--out={out}", "--width=4", "--training_steps=2ep", "--rewind_step=3it", "--eval_every=2"]
    assert cli.main(args) == 0
    run_dir = out / capsys.readouterr().out.strip().splitlines()[-1].split("/")[-1]
    copy = run_dir / "level_0" / "stability"
    before = (copy / "final.pt").stat().st_mtime_ns
    assert cli.main(args + ["--stability_bn=recompute", "--stability_points=3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["level", "density", "%", "instability"] and lines[1].split()[0] == "0"
    assert (copy / "final.pt").stat().st_mtime_ns == before  # the copies are shared: only the path is new
    results = json.loads((copy / "stability.json").read_text())
    assert set(results) == {"bn=interpolate,points=11", "bn=recompute,points=3"}
    recomputed = results["bn=recompute,points=3"]
    assert [p["alpha"] for p in recomputed["path"]] == [0, 0.25, 0.5, 0.75, 1]
    # recomputed statistics change the endpoints too (running averages over training are not the pass's)
    assert recomputed["path"][1]["test_loss"] != results["bn=interpolate,points=11"]["path"][3]["test_loss"]


def test_recompute_batchnorm_is_the_cumulative_average_over_the_subset():
    from earlyphase.studies.engine import models
    from earlyphase.studies.engine.data import load_digits

    data = load_digits()
    model = models.create("cifar_resnet20", width=4)
    normalise = data.normaliser()
    images = data.train_x[:100]
    stability.recompute_batchnorm(model, images, normalise, batch_size=100)
    with torch.no_grad():
        x = model.conv(normalise(images))  # the first BatchNorm's input
    assert torch.allclose(model.bn.running_mean, x.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(model.bn.running_var, x.var((0, 2, 3), unbiased=True), rtol=1e-5)
    assert model.bn.momentum == 0.1 and model.training  # settings restored


@pytest.mark.parametrize("args,message", [
    (["--stability=2"], "--stability=2: level 2 is not among levels 0..1"),
    (["--stability=first"], "--stability=first: give levels"),
    (["--stability=0", "--stability_points=0"], "--stability_points=0: evaluate at least 1 point"),
    (["--stability=0", "--stability_bn=average"], "--stability_bn=average: choose interpolate or recompute"),
])
def test_bad_stability_input_is_one_line_and_writes_nothing(out, capsys, args, message):
    assert cli.main(["imp", f"--out={out}", "--width=4", "--levels=1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()
    assert cli.main(["stability", f"--out={out}", "--stability="]) == 2
    assert "--stability is empty" in capsys.readouterr().err


def test_kill_9_during_the_second_copy_then_rerun_matches_uninterrupted(out):
    flags = ["--width=4", "--training_steps=3ep", "--rewind_step=3it", "--eval_every=2"]
    full_dir, _ = imp_job.run(arguments.stability(flags + [f"--out={out}/full"]).imp)  # the reference
    args = [sys.executable, "-m", "earlyphase.studies.cli", "stability", *flags, f"--out={out}/killed"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same kernels as the reference
    killed = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    copy = out / "killed" / full_dir.name / "level_0" / "stability"
    deadline = time.time() + 120
    while time.time() < deadline and not (copy / "checkpoint.pt").exists():
        time.sleep(0.005)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert (copy / "checkpoint.pt").exists() and not (copy / "summary.json").exists(), "killed too late"

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    assert rerun.stdout.strip().splitlines()[-1] == str(copy.parents[1])
    reference = full_dir / "level_0" / "stability"
    assert (copy / "stability.json").read_text() == (reference / "stability.json").read_text()
    assert same_state(final_weights(copy / "final.pt"), final_weights(reference / "final.pt"))
