"""Mechanisms shared by several packages of this repo (detectron2 fixes made after v0.6, and
layers several papers use), copied here so that this package stands alone. Every copy is kept
identical by the repo's ``tests/test_vendored.py``: change them all together."""

import torch
import torch.distributed as dist
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn

__all__ = ["normalizer_over_processes", "Scale", "LastLevelP6P7NoReLU", "resnet_fpn_p6p7"]


def normalizer_over_processes(x, min_total):
    """A loss normaliser for several processes: the batch total of ``x`` (summed over the
    processes), at least ``min_total``, divided by the number of processes. A loss divided by
    it, whose gradients DDP averages over the processes, equals the loss of one process on the
    whole batch, however the batch is split. (The official codes average ``x`` over the
    processes and then clamp the mean, which differs only when the total is below the number
    of processes x ``min_total``.) A constant: no gradient flows through it."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    x = x.detach().clone()
    if world > 1:
        dist.all_reduce(x)
    return x.clamp(min=min_total) / world


class Scale(nn.Module):
    """A learnable scalar multiplier, one per level (FCOS; ATSS, GFL and AutoAssign)."""

    def __init__(self, init=1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x):
        return x * self.scale


class LastLevelP6P7NoReLU(LastLevelP6P7):
    """detectron2's ``LastLevelP6P7`` (P6 = 3x3/2 conv of its input, P7 = 3x3/2 conv of P6)
    without the ReLU before P7, as mmdetection's FPN with ``relu_before_extra_convs=False``."""

    def forward(self, x):
        p6 = self.p6(x)
        return [p6, self.p7(p6)]


def resnet_fpn_p6p7(cfg, input_shape, in_feature="p5", relu_before_p7=True):
    """ResNet-FPN whose P6/P7 are 3x3/2 convs of ``in_feature`` ("p5" as FCOS, "res5" as
    RetinaNet), with or without a ReLU before P7."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out = cfg.MODEL.FPN.OUT_CHANNELS
    top = LastLevelP6P7 if relu_before_p7 else LastLevelP6P7NoReLU
    in_channels = out if in_feature.startswith("p") else bottom_up.output_shape()[in_feature].channels
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top(in_channels, out, in_feature=in_feature),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
