"""Rewinding: the start state of a ticket, and (optionally) the optimiser state at the rewind point.

What is rewound: the *whole* network state at the rewind point, i.e. every parameter (conv/linear
weights, biases, BatchNorm gamma and beta) and every buffer (BatchNorm running mean, running var and
num_batches_tracked). Only the mask is carried over from the end of training. Pruned weights are set
to exactly 0 (not multiplied, so no -0.0).

Optimiser: the reference code restarts SGD at the rewind step (no momentum) and continues the
learning-rate schedule from k; that is the default ("fresh"). "rewound" instead restores the momentum
buffers saved at step k, with the pruned entries zeroed so they cannot push a pruned weight. Momentum
travels by parameter name (`momentum_by_name`), so it survives a change of head (a pretext task's own
head replaced by a fresh classifier) and a change of device or optimiser flavour.
"""

from __future__ import annotations

import torch

from .masks import Mask

OPTIMIZER_MODES = ("fresh", "rewound")


def rewound_state(state: dict, mask: Mask) -> dict:
    """A copy of the state dict `state` with the weights pruned by `mask` set to exactly 0."""
    missing = [n for n in mask if n not in state]
    if missing:
        raise ValueError(f"rewind point lacks masked parameters {missing[:3]}")
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().clone()
        if name in mask:
            keep = mask[name].to(tensor.device)
            if keep.shape != tensor.shape:
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(keep.shape)}, the rewind point {tuple(tensor.shape)}"
                )
            tensor = torch.where(keep, tensor, torch.zeros_like(tensor))
        out[name] = tensor
    return out


def momentum_by_name(optimizer_state: dict, param_names: list[str], task_parameters: int = 0) -> dict:
    """{parameter name: momentum buffer} from an SGD state dict (which indexes parameters by position).

    param_names: the model's parameter names in the order the optimiser was built with
    (`model.named_parameters()`). task_parameters: how many parameters of a pretext task's own modules follow
    the model's in the optimiser (a predictor; they are not the model's and are left out). Parameters that have
    no momentum yet are left out."""
    indices = [i for group in optimizer_state["param_groups"] for i in group["params"]]
    if len(indices) != len(param_names) + task_parameters:
        raise ValueError(f"optimiser state has {len(indices)} parameters, the model {len(param_names)}"
                         + (f" and its pretext task {task_parameters}" if task_parameters else ""))
    out = {}
    for index, name in zip(indices, param_names):
        buffer = optimizer_state["state"].get(index, {}).get("momentum_buffer")
        if buffer is not None:
            out[name] = buffer.detach().clone()
    return out


def masked_momentum(momentum: dict, mask: Mask) -> dict:
    """A copy of {name: momentum buffer} with the entries of pruned weights zeroed, so no momentum pushes them
    (parameters without momentum yet, e.g. a fresh classifier, are simply absent)."""
    return rewound_state(momentum, {name: keep for name, keep in mask.items() if name in momentum})
