"""A whole training step - forward, loss, backward, SGD, mask, loss sum - replayed as one CUDA graph.

At batch 128 a ResNet-20 step is a few hundred tiny kernels, and eager PyTorch spends more time in
Python launching them than the GPU spends running them. `torch.compile(mode="reduce-overhead")` graphs
only the model; the optimiser, mask and bookkeeping still launch one by one. Here the whole step is
captured once (`torch.cuda.graph`) and each later step is: copy the batch into the static inputs,
replay. Same maths as the eager step, by construction:
- the learning rate lives in a device tensor read by the fused SGD kernel (changed only at milestones);
- momentum buffers are created as zeros before capture: SGD's first step sets buf = grad, and
  0.9 * 0 + grad is the same number, so starting with zeros changes nothing;
- the capture is preceded by warm-up steps on a side stream (lazy cuDNN/cuBLAS/autograd set-up must not
  happen inside a capture); every tensor they change is restored afterwards, so they leave no trace.
Off CUDA the same object runs the same body eagerly (what the tests compare against the plain loop).
Callers keep batches of other sizes (an epoch's last, smaller batch) on their eager path.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


class GraphedStep:
    """`step(inputs, targets, lr)` for a fixed input shape; returns the step's loss (a device tensor).

    body(x, y) must run one whole step on the static tensors x, y and return the loss. The warm-up
    restores the optimiser's parameters and momentum buffers and `other_state`: every other tensor a
    step changes in place (BatchNorm buffers, accumulators)."""

    def __init__(self, body: Callable, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor,
                 lr: float, other_state: Sequence[torch.Tensor] = (), warmup: int = 3):
        self.body, self.optimizer, self.other_state, self.warmup = body, optimizer, list(other_state), warmup
        self.device = inputs.device
        self.capture = self.device.type == "cuda"
        fmt = torch.channels_last if inputs.dim() == 4 and self.capture else torch.contiguous_format
        self.x = torch.empty_like(inputs, memory_format=fmt)
        self.y = torch.empty_like(targets)
        # The captured fused-SGD kernel reads lr from this device tensor, so a new lr needs no new graph.
        self.lr: torch.Tensor | None = torch.tensor(float(lr), device=self.device) if self.capture else None
        self.lr_value: float | None = None
        self.set_lr(lr)
        for group in optimizer.param_groups:
            if group["momentum"]:
                for p in group["params"]:
                    if optimizer.state[p].get("momentum_buffer") is None:
                        optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None

    def _state(self) -> list[torch.Tensor]:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        momentum = [s["momentum_buffer"] for s in self.optimizer.state.values() if s.get("momentum_buffer") is not None]
        return params + momentum + self.other_state

    def _capture(self) -> None:
        state = self._state()
        saved = [t.detach().clone() for t in state]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.body(self.x, self.y)
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.no_grad():
            for t, s in zip(state, saved):
                t.copy_(s)
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = graph = torch.cuda.CUDAGraph()
        self._groups_lr(self.lr)
        try:
            with torch.cuda.graph(graph):
                self.loss = self.body(self.x, self.y)
        finally:
            self._groups_lr(self.lr_value)  # a plain number again for state_dict() and eager steps

    def _groups_lr(self, lr) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def set_lr(self, lr: float) -> None:
        self._groups_lr(lr)  # what eager steps and checkpoints read
        if self.lr is not None and lr != self.lr_value:  # captured: the graph reads lr from this tensor
            self.lr.fill_(lr)
        self.lr_value = lr

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        self.x.copy_(inputs)
        self.y.copy_(targets)
        self.set_lr(lr)
        if not self.capture:
            return self.body(self.x, self.y)
        if self.graph is None:
            self._capture()
        assert self.graph is not None and self.loss is not None  # _capture made them
        self.graph.replay()
        return self.loss
