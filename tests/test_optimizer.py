"""The shared Trainer's optimizer: SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model" clips the norm of
all gradients together (mmdetection's ``grad_clip``), not each parameter's."""

import pytest
import torch
from detectron2.config import get_cfg

from common.engine import Trainer, add_common_config


class TwoParameters(torch.nn.Module):
    """loss() = 3 a0 + 0 a1 + 4 b: gradients (3, 0) and (4), global L2 norm 5."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(2))
        self.b = torch.nn.Parameter(torch.zeros(1))

    def loss(self):
        return 3 * self.a[0] + 0 * self.a[1] + 4 * self.b[0]


def _step(optimizer_name, clip_type, clip_value):
    cfg = get_cfg()
    add_common_config(cfg)
    cfg.SOLVER.OPTIMIZER = optimizer_name
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM = 1.0, 0.0
    cfg.SOLVER.WEIGHT_DECAY = cfg.SOLVER.WEIGHT_DECAY_NORM = cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = clip_value
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    model = TwoParameters()
    optimizer = Trainer.build_optimizer(cfg, model)
    model.loss().backward()
    optimizer.step()
    return model


@pytest.mark.parametrize("optimizer_name", ["SGD", "ADAMW"])
def test_full_model_clipping_scales_all_gradients_by_one_factor(optimizer_name):
    model = _step(optimizer_name, "full_model", 1.0)
    # Global norm 5 > 1: both gradients scaled by 1/5 (the direction is kept).
    torch.testing.assert_close(model.a.grad, torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(model.b.grad, torch.tensor([0.8]))
    if optimizer_name == "SGD":  # lr 1, no momentum: the step is the clipped gradient
        torch.testing.assert_close(model.a.detach(), torch.tensor([-0.6, 0.0]))
        torch.testing.assert_close(model.b.detach(), torch.tensor([-0.8]))


def test_full_model_clipping_leaves_gradients_below_the_threshold_alone():
    model = _step("SGD", "full_model", 5.5)
    torch.testing.assert_close(model.a.grad, torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(model.b.grad, torch.tensor([4.0]))
    torch.testing.assert_close(model.a.detach(), torch.tensor([-3.0, 0.0]))


def test_detectron2_norm_clipping_is_per_parameter():
    """The contrast: "norm" clips each parameter to norm 1 on its own, changing the direction."""
    model = _step("SGD", "norm", 1.0)
    torch.testing.assert_close(model.a.grad, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(model.b.grad, torch.tensor([1.0]))
