"""`dino` (Caron et al. 2021): a student matches a momentum teacher's centred, sharpened output on the other view.

Student: backbone + lightly's `DINOProjectionHead` (hidden width twice the backbone's features, bottleneck as
wide as the features, `out_dim` prototypes, weight-normalised last layer); teacher: a momentum copy
(pretext/momentum.py). Loss: lightly's `DINOLoss` over the two views' cross terms, with the teacher's centre
(a buffer, moving average `center_momentum`) checkpointed with the run. The teacher temperature warms up
linearly from `warmup_teacher_temp` to `teacher_temp` over the first `warmup` share of the pretraining (DINO
counts it in epochs; here it spans the run's own steps, as the momentum does). Two global views and no local
crops: a few-pixel crop of an 8x8 or 32x32 image carries too little (pretext/views.py). Accuracy: positive
retrieval among the student's outputs.
"""

import warnings

from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from torch import nn

from .base import Option, refuse
from .momentum import MOMENTUM, MomentumTask, check_momentum


class DINO(MomentumTask):
    name = "dino"
    description = "DINO on lightly: momentum teacher, centring and sharpening, two global views"
    # its options, attributes once set (PretextTask.__init__)
    out_dim: int
    teacher_temp: float
    warmup_teacher_temp: float
    warmup: float
    student_temp: float
    center_momentum: float
    options = {"momentum": MOMENTUM,
               "out_dim": Option(1024, "prototypes (the head's output size)"),
               "teacher_temp": Option(0.07, "teacher temperature after the warm-up"),
               "warmup_teacher_temp": Option(0.04, "teacher temperature at the first step"),
               "warmup": Option(0.3, "share of the pretraining over which the teacher temperature warms up"),
               "student_temp": Option(0.1, "student temperature"),
               "center_momentum": Option(0.9, "momentum of the teacher's centre"),
               "min_scale": Option(0.2, "smallest area share kept by the random resized crop")}

    def setup(self) -> None:
        check_momentum(self.name, self.momentum)
        refuse(self.name, [(self.out_dim < 1, f"out_dim={self.out_dim}: must be 1 or more, e.g. 1024"),
                           (min(self.teacher_temp, self.warmup_teacher_temp, self.student_temp) <= 0,
                            "temperatures must be > 0, e.g. teacher_temp=0.07"),
                           (not 0 <= self.warmup <= 1, f"warmup={self.warmup}: must be in [0, 1], e.g. 0.3"),
                           (not 0 <= self.center_momentum < 1,
                            f"center_momentum={self.center_momentum}: must be in [0, 1), e.g. 0.9")])
        self.make_views()

    def head(self, num_features, num_classes):
        # lightly normalises the last layer with torch's old weight_norm (deprecated: its warning is lightly's to
        # fix), whose modules cannot be deep-copied into a teacher; the same normalisation as a parametrisation can
        # (the norm g stays fixed at 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            head = DINOProjectionHead(num_features, 2 * num_features, num_features, self.out_dim)
            last = nn.utils.parametrizations.weight_norm(nn.utils.remove_weight_norm(head.last_layer))
        last.parametrizations.weight.original0.requires_grad_(False)
        head.last_layer = last
        return head

    def extra_modules(self, model):
        return {"criterion": DINOLoss(self.out_dim, self.warmup_teacher_temp, self.teacher_temp,
                                      student_temp=self.student_temp, center_momentum=self.center_momentum)}

    def teacher_temperature(self) -> float:
        """Linear from warmup_teacher_temp at step 0 to teacher_temp at `warmup` of the run's steps, then flat."""
        span = self.warmup * self.steps
        if span <= 0 or self.step >= span:
            return self.teacher_temp
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * self.step / span

    def forward(self, model, inputs):
        return self.teacher(inputs).detach(), model(inputs)

    def loss(self, outputs, targets):
        teacher, student = (z.float().chunk(2) for z in outputs)
        # updates the centre as it runs (lightly's DINOLoss); the engine restores it after an evaluation
        return self.own_modules["criterion"](list(teacher), list(student), teacher_temp=self.teacher_temperature())

    def embeddings(self, outputs):
        return outputs[1]
