"""The CUDA-graph step (compile=cudagraph) runs the same maths as the eager step.

Off CUDA, GraphedStep runs its body eagerly on the static buffers, with the zero momentum buffers and
the lr handling of the graphed path, so this checks everything but the capture itself (which
`earlyphase bench --gpu-suite` checks on a GPU)."""

import torch

from earlyphase.pretext.supervised import Supervised
from earlyphase.studies.engine import trainer
from earlyphase.studies.engine.graphed import GraphedStep
from earlyphase.studies.jobs import setup
from earlyphase.studies.jobs.config import TrainConfig

CPU = torch.device("cpu")


class CountingStep(GraphedStep):
    calls = 0

    def __call__(self, *args):
        CountingStep.calls += 1
        return super().__call__(*args)


def run(tmp_path, name, monkeypatch=None, mask=False):
    cfg = setup.validate(
        TrainConfig(width=4, training_steps="50it", milestone_steps="30it", eval_every=1, batch_size=64)
    )
    data = setup.load_data(cfg, CPU)
    model = setup.make_model(cfg, data, CPU)
    plan = setup.make_plan(cfg, data, CPU)
    m = None
    if mask:
        gen = torch.Generator().manual_seed(3)
        m = {n: (torch.rand(p.shape, generator=gen) < 0.5).float() for n, p in model.named_parameters() if p.dim() > 1}
    result = trainer.train(model, data, plan, tmp_path / name, mask=m, task=Supervised())
    return model.state_dict(), result


def test_graphed_step_equals_the_eager_step_bit_for_bit(tmp_path, monkeypatch):
    CountingStep.calls = 0
    ref, ref_result = run(tmp_path, "eager", mask=True)
    monkeypatch.setattr(trainer, "compile_mode", lambda plan, device: "cudagraph")
    monkeypatch.setattr(trainer, "GraphedStep", CountingStep)
    got, got_result = run(tmp_path, "graphed", mask=True)
    # 50 steps of 23 per epoch: 2 tail batches (22-sample) stay eager, the other 48 go through the step
    assert CountingStep.calls == 48
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert got_result.summary == ref_result.summary  # test metrics and the train-loss accumulator too
    ref_metrics = (tmp_path / "eager" / "metrics.jsonl").read_text()
    assert (tmp_path / "graphed" / "metrics.jsonl").read_text() == ref_metrics


def test_non_default_losses_stay_eager(tmp_path, monkeypatch):
    class OwnLoss(Supervised):
        def loss(self, outputs, targets):
            return torch.nn.functional.cross_entropy(outputs.float(), targets)

    monkeypatch.setattr(trainer, "compile_mode", lambda plan, device: "cudagraph")
    CountingStep.calls = 0
    monkeypatch.setattr(trainer, "GraphedStep", CountingStep)
    cfg = setup.validate(TrainConfig(width=4, training_steps="5it"))
    data = setup.load_data(cfg, CPU)
    trainer.train(
        setup.make_model(cfg, data, CPU), data, setup.make_plan(cfg, data, CPU), tmp_path / "r", task=OwnLoss()
    )
    assert CountingStep.calls == 0


def test_graphed_stacked_step_equals_the_eager_stacked_step(tmp_path, monkeypatch):
    from earlyphase.studies.engine import stacked

    cfg = setup.validate(TrainConfig(width=4, training_steps="30it", milestone_steps="25it", eval_every=1))
    data = setup.load_data(cfg, CPU)

    def runs(root):
        return [stacked.StackedRun(setup.make_model(cfg, data, CPU, seed=s), setup.make_plan(cfg, data, CPU, seed=s),
                                   root / f"r{s}") for s in (0, 1)]

    ref = stacked.train_stacked(runs(tmp_path / "eager"), data)
    monkeypatch.setattr(stacked, "compile_mode", lambda plan, device: "cudagraph")
    CountingStep.calls = 0
    monkeypatch.setattr(stacked, "GraphedStep", CountingStep)
    got = stacked.train_stacked(runs(tmp_path / "graphed"), data)
    assert CountingStep.calls == 29  # 30 steps of 23 per epoch (digits at batch 64): one 22-sample tail batch
    for a, b in zip(ref, got):
        wa = torch.load(a.run_dir / "final.pt", weights_only=True)["model"]
        wb = torch.load(b.run_dir / "final.pt", weights_only=True)["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert a.summary == b.summary
