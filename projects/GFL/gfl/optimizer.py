"""The official optimizer's parameter groups (mmdetection 1.x ``build_optimizer`` with
``paramwise_options=dict(bias_lr_mult=2., bias_decay_mult=0.)``), from detectron2's SOLVER keys.

detectron2's ``get_default_optimizer_params`` gives every parameter named ``bias`` the bias
settings, the biases of normalisation layers included. mmdetection tests for a norm layer
first: a GroupNorm's weight and bias keep the base lr and take ``weight_decay x
norm_decay_mult`` (1 by default); only the other biases (convs) get the bias lr and decay.
"""

from torch import nn

__all__ = ["gfl_optimizer_params"]

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def gfl_optimizer_params(cfg, model):
    """One parameter group per trainable parameter: a norm layer's weight and bias get
    (``BASE_LR``, ``WEIGHT_DECAY_NORM``), any other ``bias`` (``BASE_LR x BIAS_LR_FACTOR``,
    ``WEIGHT_DECAY_BIAS``), everything else (``BASE_LR``, ``WEIGHT_DECAY``)."""
    s = cfg.SOLVER
    bias_decay = s.WEIGHT_DECAY if s.WEIGHT_DECAY_BIAS is None else s.WEIGHT_DECAY_BIAS
    groups, seen = [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            if isinstance(module, NORM_TYPES):
                lr, decay = s.BASE_LR, s.WEIGHT_DECAY_NORM
            elif name == "bias":
                lr, decay = s.BASE_LR * s.BIAS_LR_FACTOR, bias_decay
            else:
                lr, decay = s.BASE_LR, s.WEIGHT_DECAY
            groups.append({"params": [param], "lr": lr, "weight_decay": decay})
    return groups
