import math

import pytest
import timm
import torch

from earlyphase.studies.engine import models  # registers the models with timm


def test_resnet20_has_the_papers_parameter_count():
    model = timm.create_model("cifar_resnet20")
    assert sum(p.numel() for p in model.parameters()) == 272_474
    weights = [p for n, p in model.named_parameters() if p.dim() > 1]
    assert sum(p.numel() for p in weights) == 270_896
    assert sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None) == 0


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet20")
    conv = model.blocks[4].conv2.weight  # 32 x 32 x 3 x 3: fan_in 288
    assert conv.std().item() == pytest.approx(math.sqrt(2 / 288), rel=0.05)
    assert conv.mean().abs().item() < 0.01
    gammas = torch.cat([m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    betas = torch.cat([m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert gammas.min() >= 0 and gammas.max() < 1 and gammas.std() > 0.2  # U[0, 1), not the default ones
    assert torch.all(betas == 0)


def test_other_depths_and_widths_and_input_sizes():
    model = timm.create_model("cifar_resnet56", width=8)
    assert len(model.blocks) == 27 and model.num_features == 32
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert models.create("cifar_resnet26", width=4)(torch.randn(2, 3, 8, 8)).shape == (2, 10)  # unregistered depth
    assert timm.create_model("cifar_resnet20")(torch.randn(1, 3, 11, 7)).shape == (1, 10)


@pytest.mark.parametrize("name", ["cifar_resnet18", "cifar_resnet2"])
def test_bad_depth_is_refused(name):
    with pytest.raises(ValueError, match="multiple of 6"):
        models.create(name)


def test_reset_classifier_swaps_the_head():
    model = models.create("cifar_resnet20", width=4)
    model.reset_classifier(4)
    assert model(torch.randn(3, 3, 8, 8)).shape == (3, 4)
