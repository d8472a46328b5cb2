"""The earlyphase application: data, model, trainer, jobs, CLI, W&B logging and reports.

Importing it registers the CIFAR ResNets with timm.
"""

from .engine import models  # noqa: F401  (registers cifar_resnet{D} with timm)
