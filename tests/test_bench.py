"""`earlyphase bench` and the GPU suite: output, options, decisions; the trainer's fast-path helpers.
Correctness only: no assertion depends on how fast anything ran."""

import json

import pytest
import torch

from earlyphase.studies.bench import gpu_suite
from earlyphase.studies.bench.timing import CIFAR_TRAIN, GRID_EPOCHS, synthetic_cifar
from earlyphase.studies.cli import main
from earlyphase.studies.engine import models
from earlyphase.studies.engine.plan import Schedule, TrainPlan
from earlyphase.studies.engine.run_dir import cpu_state
from earlyphase.studies.engine.trainer import CUDA_COMPILE_AUTO, compile_mode, make_optimizer

CPU = torch.device("cpu")


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_json_has_both_figures_ratio_and_grid_projection(capsys):
    argv = ["bench", "--device=cpu", "--repeats=1", "--width=4", "--steps_per_epoch=1", "--stacked=2", "--json"]
    assert main(argv) == 0
    r = last_json(capsys)
    assert r["device"].startswith("cpu") and r["precision"] == "fp32" and r["compile"] == "none"
    assert r["steps_per_repeat"] == 4 and r["batch_size"] == 128  # one evaluation cadence (cifar10: every 4 epochs)
    for key in ("bare_images_per_s", "trainer_images_per_s", "stacked_images_per_s", "ratio_cpu_time"):
        assert r[key] > 0
    assert r["ratio"] == pytest.approx(r["trainer_images_per_s"] / r["bare_images_per_s"])
    assert r["grid_epochs"] == GRID_EPOCHS == 25920
    assert r["grid_hours"] == pytest.approx(GRID_EPOCHS * CIFAR_TRAIN / r["trainer_images_per_s"] / 3600)
    assert r["stacked_grid_hours"] == pytest.approx(GRID_EPOCHS * CIFAR_TRAIN / r["stacked_images_per_s"] / 3600)
    assert r["trainer_s_per_cifar_epoch"] == pytest.approx(CIFAR_TRAIN / r["trainer_images_per_s"])


def test_bench_digits_times_the_main_jobs_training_in_one_and_two_processes(capsys):
    argv = ["bench", "--device=cpu", "--repeats=1", "--width=4", "--steps_per_epoch=1", "--digits",
            "--digits_epochs=1", "--json"]
    assert main(argv) == 0
    r = last_json(capsys)
    assert r["digits_steps"] == 23 and r["digits_epochs"] == 1  # 1437 digits at batch 64: 23 steps an epoch
    for key in ("one_process_2_threads_steps_per_s", "one_process_1_thread_steps_per_s",
                "two_processes_1_thread_steps_per_s_aggregate", "two_processes_vs_sequential"):
        assert r[key] > 0
    assert main(["bench", "--device=cpu", "--digits", "--digits_epochs=0"]) == 2


def test_bench_table_names_the_figures(capsys):
    assert main(["bench", "--device=cpu", "--repeats=1", "--width=4", "--steps_per_epoch=1"]) == 0
    text = capsys.readouterr().out
    for word in ("bare loop", "trainer", "ratio", "s per CIFAR-10 epoch", "25920 ResNet-20 epochs"):
        assert word in text


@pytest.mark.parametrize("args, message", [(["--compile=fast"], "--compile=fast"), (["--repeats=0"], "--repeats"),
                                           (["--precision=fp16"], "--precision"), (["--stacked=-1"], "--stacked")])
def test_bench_refuses_bad_options_in_one_line(capsys, args, message):
    assert main(["bench", "--device=cpu", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA answer")
def test_gpu_suite_without_cuda_says_so_and_exits_2(capsys):
    assert main(["bench", "--gpu-suite"]) == 2
    assert "no CUDA" in capsys.readouterr().err


def test_gpu_suite_dry_run_on_cpu_checks_and_reports(capsys):
    # toy sizes and no time budget: the checks always run; every timed variant is skipped and reported as such
    assert main(["bench", "--gpu-suite", "--device=cpu", "--width=4", "--steps_per_epoch=1", "--budget_s=1"]) == 0
    report = last_json(capsys)
    device_check, stacked_check = report["checks"]["cuda_vs_cpu"], report["checks"]["stacked_vs_train"]
    assert device_check["augmentation_equal_fraction"] == 1.0 and device_check["ok"]
    assert device_check["rel_error_fp32"] == device_check["rel_error_fp64"] == 0.0  # CPU against itself
    assert stacked_check["ok"] and stacked_check["rel_error_fp64"] < 1e-10 and stacked_check["rel_error_fp32"] < 1e-4
    assert all(v == "skipped: time budget spent" for v in report["errors"].values())
    assert set(report["variants"]) | set(report["errors"]) == {name for name, _ in gpu_suite.variants(False)}
    assert report["conclusion_lines"][-1].startswith("problems:")


def test_suite_conclusions_pick_the_fastest_correct_compile_mode():
    single = lambda ips, mode: {"trainer_images_per_s": ips, "trainer_s_per_cifar_epoch": CIFAR_TRAIN / ips,  # noqa: E731
                                "grid_hours": 1.0, "compile": mode}
    report = {
        "errors": {},
        "checks": {"compile_reduce-overhead": {"ok": True}, "compile_default": {"ok": False}},
        "variants": {
            "eager bf16": single(40_000, "none"),
            "reduce-overhead bf16": single(180_000, "reduce-overhead"),
            "default-compile bf16": single(300_000, "default"),
            "eager fp32": single(900_000, "none"),
            "stacked K=8 bf16": {"stacked_images_per_s": 6e5},
        },
    }
    out = gpu_suite.conclusions(report)
    assert out["best_single"]["variant"] == "reduce-overhead bf16"  # default failed its check; fp32 is not the default
    assert out["best_single"]["s_per_cifar_epoch"] == pytest.approx(50_000 / 180_000)
    lines = "\n".join(out["conclusion_lines"])
    assert "target <= 0.3: met" in lines and "target >= 500000: met" in lines
    assert ("'reduce-overhead'" in lines) and "compile_default" in lines
    assert out["best_stacked"]["grid_hours"] == pytest.approx(GRID_EPOCHS * CIFAR_TRAIN / 6e5 / 3600)


def test_trainer_fast_path_helpers_leave_cpu_results_alone():
    data = synthetic_cifar(16, CPU)
    x = data.train_x[:8]
    expected = (x.double() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(data.std).view(1, -1, 1, 1)
    # the in-place ops compute (x/255-mean)/std
    assert torch.allclose(data.normaliser()(x).double(), expected, atol=1e-5)
    plan = TrainPlan(seed=0, batch_size=8, schedule=Schedule(0.1), start=0, end=1)
    model = models.create("cifar_resnet8", width=4)
    group = make_optimizer(model, plan).param_groups[0]
    assert group["foreach"] and not group.get("fused")
    assert compile_mode(TrainPlan(**{**plan.__dict__, "compile": "reduce-overhead"}), CPU) == "none"
    assert compile_mode(plan, torch.device("cuda")) == CUDA_COMPILE_AUTO == "cudagraph"
    with pytest.raises(ValueError, match="compile"):
        compile_mode(TrainPlan(**{**plan.__dict__, "compile": "fast"}), CPU)
    model.to(memory_format=torch.channels_last)
    assert all(v.is_contiguous() for v in cpu_state(model).values())
