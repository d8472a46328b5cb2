"""The pretext-task interface: everything the trainer needs to train a backbone with a task.

A task says what head it puts on the backbone's pooled features, how a batch (images on the device,
already normalised; true labels; example indices) becomes the model's inputs and the loss's targets,
and what its loss is. The trainer owns the rest (optimiser, schedule, masks, checkpoints), so a new
task is one small file. Randomness inside `batch` may use the global torch RNG: the trainer seeds it
from (run seed, step) before every step, which keeps runs reproducible and resumable.

Settings: a task declares `options = {name: default}`, or `{name: Option(default, "one-line help")}`;
the constructor takes them as keywords (strings such as "0.5" or "true" are converted to the default's
type, unknown names are refused) and sets each as an attribute, so `options = {"temperature": 0.5}` gives
`self.temperature`. This declaration is the only one: the application derives each option's command-line
flag (`--{task}_{option}`) and its help text from it, for earlyphase's own tasks and plugins alike. What a task
needs to know about the data and run arrives as `self.info` (a `TaskInfo`). Checks of option values and
precomputation go in `setup()`, which the constructor calls last. Errors are ValueErrors with a
one-line message; the application turns them into usage errors.

Training on part of the data: a task may train on a subset of the training split by overriding
`examples(scores)`, which returns the chosen example indices (a sorted 1-d LongTensor into the training
split) or None for all of them. It must be a pure function of `self.info` (its seed, `num_train`), the
options and `scores`, so the same run resumed after a kill trains on the same subset. A task that needs a
score per example first (EL2N, ...) says so in `scoring()` (a `ScoreRequest`); the application then
computes those scores once, stores them as a run of their own, and calls `choose(scores)`, which keeps
`examples(scores)` as `self.subset`, the indices the trainer reads (None before: every example). The trainer
keeps every epoch as long as the full split's (the same iterations, evaluations and checkpoints) and
fills it with seeded passes over the subset, each pass freshly augmented.

The loss: a task may override `loss` (SimCLR does). On CUDA the trainer captures the whole training step
as one CUDA graph only with the default loss (cross-entropy on class labels) and no step of the task's own
(below), so such a task trains with eager steps there: correct, but slower. CPU runs are the same either way.

Tasks with state (momentum teachers, queues, centres, prototypes: BYOL, MoCo, DINO). The engine calls, in order:
`build(model)` once before training (the network with `head()` as its `.fc`, on its device, already masked),
which returns modules of the task's own (a predictor, a momentum copy, a loss holding a queue) or None; then per
step `batch`, `forward(model, inputs)` (default: `model(inputs)`; it may run several views, the backbone's
features, its own modules), `loss(outputs, targets)`, the optimiser step and the mask, and `after_step(step,
steps)` (a momentum update). `self.step` (iterations done before the current one) and `self.steps` (the run's
last iteration: a pretraining's length) are set before `batch`, so a schedule can span the pretraining. Of the
built modules, parameters that require gradients are trained by the run's own optimiser beside the network;
the rest are the task's to update. Everything built (parameters, buffers, `get_extra_state`) is saved in every
checkpoint and restored on resume, so a run killed and rerun is bit-identical; the rewind point holds the
network only. Evaluation runs `forward` and `loss` without gradients, in eval mode, and the engine restores the
built modules afterwards, so evaluating never changes what training sees. The optimiser, learning rate and
schedule stay the run's: a pretext condition must differ from rewinding in the task alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from .options import Option, coerce_option, declared_options, parse_args, parse_bool, refuse  # noqa: F401  (the task interface)


@dataclass(frozen=True)
class TaskInfo:
    """The data and run facts a task may use (the pretraining job fills them in)."""

    seed: int = 0  # for the task's own fixed draws (e.g. random labels); derived from the run seed and task name
    num_classes: int = 10  # classes of the real task
    num_examples: int = 0  # size of the largest split: tables indexed by example index cover every split
    image_size: tuple = (32, 32)  # (height, width)
    mean: tuple = (0.5, 0.5, 0.5)  # the normalisation the batches arrive with (per channel)
    std: tuple = (0.5, 0.5, 0.5)
    # whether horizontal flips preserve the data's meaning (the dataset's standard augmentation flips)
    flip: bool = True
    num_train: int = 0  # size of the training split (what `examples` indexes)
    training_iterations: int = 0  # T: the supervised run's length in iterations (e.g. to scale a scoring budget)

    def normalisation(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as 1 x C x 1 x 1 tensors; make them once per device (each call is a host->device copy)."""
        to_tensor = lambda values: torch.tensor(values, device=device).view(1, -1, 1, 1)  # noqa: E731
        return to_tensor(self.mean), to_tensor(self.std)


@dataclass(frozen=True)
class ScoreRequest:
    """Per-example scores a task needs before it can choose its examples: `kind` (only "el2n" is built in:
    the L2 norm of softmax(output) - one-hot(label), Paul et al. 2021) averaged over `runs` supervised
    trainings of `steps` iterations each from independent initialisations."""

    kind: str
    runs: int
    steps: int


class PretextTask:
    name: str = ""
    description: str = ""
    uses_labels: bool = True  # whether the task reads the true labels
    standard_augmentation: bool = True  # batches arrive with the dataset's standard augmentation
    stochastic: bool = True  # `batch` draws random numbers (the trainer then seeds every step)
    options: ClassVar[dict] = {}  # declared settings {name: default or Option(default, help)}; they become attributes

    def __init__(self, info: TaskInfo | None = None, **options):
        self.info = info or TaskInfo()
        self.subset: torch.Tensor | None = None  # the examples trained on, set by choose(); None: all
        self.own_modules: nn.Module | None = None  # what build() returned, set by bind()
        self.step, self.steps = 0, 0  # set by the engine before every step (see the module docstring)
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            takes = ", ".join(self.options) or "no options"
            raise ValueError(f"{self.name or type(self).__name__} has no option {unknown[0]!r}; it takes: {takes}")
        for key, option in declared_options(type(self)).items():
            setattr(self, key, coerce_option(self.name, key, options.get(key, option.default), option.default))
        self.setup()

    def setup(self) -> None:
        """Check the option values (raise ValueError) and precompute what `batch` needs."""

    def settings(self) -> dict:
        """The task's option values, e.g. for a run's description."""
        return {key: getattr(self, key) for key in self.options}

    def variant(self) -> str:
        """A few words naming this task's setting in report labels, e.g. `easy 0.1` (reports show `subset(easy
        0.1) 6it`); "" (the default) labels the condition by the task's name and budget alone."""
        return ""

    def scoring(self) -> ScoreRequest | None:
        """The example scores `examples` needs, or None (the default: none)."""
        return None

    def examples(self, scores: torch.Tensor | None = None) -> torch.Tensor | None:
        """The training-split indices this task trains on (sorted), or None for every example (the default).
        scores: one float per training example, given when `scoring()` asked for them."""
        return None

    def choose(self, scores: torch.Tensor | None = None) -> torch.Tensor | None:
        """Fix the examples this run trains on (the application calls it once, before training)."""
        self.subset = self.examples(scores)
        return self.subset

    def head(self, num_features: int, num_classes: int) -> nn.Module | None:
        """The module that replaces the classifier during pretraining; None keeps (and trains) the 10-way classifier."""
        return None

    def build(self, model: nn.Module) -> nn.Module | None:
        """Modules of the task's own, made once before training from `model` (the network being trained, `head()`
        as its `.fc`, on its device): returned as one nn.Module (e.g. an nn.ModuleDict), or None (the default).
        Parameters that require gradients are trained by the run's optimiser; the others (a momentum copy made
        with lightly's `deactivate_requires_grad`) are updated by the task in `after_step`. Draws from the global
        torch RNG are seeded by the engine. All of it is checkpointed; none of it is in the rewind point."""
        return None

    def bind(self, model: nn.Module) -> nn.Module | None:
        """build(), kept as `self.own_modules` on the model's device (the engine calls it once per training)."""
        built = self.build(model)
        if built is not None:
            built.to(next(model.parameters()).device)
        self.own_modules = built
        return built

    def batch(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor):
        """(inputs, targets) for one batch. x: normalised float images, y: true labels, idx: example indices."""
        return x, y

    def forward(self, model: nn.Module, inputs):
        """What `loss` and `correct` read, from the batch's inputs: by default `model(inputs)`, the logits of
        `head()`. A task may run its own modules here, several views, or the backbone's pooled features
        (`model.forward_head(model.forward_features(x), pre_logits=True)`). Runs under autocast in training and
        in evaluation (no gradients, eval mode): change state in `after_step`, not here."""
        return model(inputs)

    def loss(self, outputs, targets) -> torch.Tensor:
        """The scalar training loss of `forward`'s outputs (a tensor, or whatever `forward` returned)."""
        return F.cross_entropy(outputs.float(), targets)

    def after_step(self, step: int, steps: int) -> None:
        """Called after every optimiser step (and the mask): `step` iterations are done, of `steps` (the run's last
        iteration; a pretraining's length, its k in pretraining iterations). Momentum updates go here."""

    def correct(self, outputs, targets) -> torch.Tensor | None:
        """Number of correct predictions (a 0-d tensor) out of len(targets), or None where accuracy has no meaning."""
        if not isinstance(targets, torch.Tensor) or targets.dtype != torch.long or outputs.dim() != 2:
            return None
        return (outputs.argmax(1) == targets).sum()


def has_own_forward(task: PretextTask | type[PretextTask]) -> bool:
    """Whether a task (or task class) overrides `forward` (the default is the model on the inputs)."""
    return (task if isinstance(task, type) else type(task)).forward is not PretextTask.forward


def has_own_step(task: PretextTask | type[PretextTask]) -> bool:
    """Whether a task (or task class) steps other than a plain classifier does (modules, forward or after_step of
    its own): it needs the single trainer (train() / the streams engine), not the vmap stack or a whole-step CUDA
    graph."""
    kind = task if isinstance(task, type) else type(task)
    return (getattr(task, "own_modules", None) is not None or kind.build is not PretextTask.build
            or has_own_forward(kind) or kind.after_step is not PretextTask.after_step)
