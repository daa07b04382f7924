"""Mechanisms shared by several packages of this repo (detectron2 fixes made after v0.6, and
layers several papers use), copied here so that this package stands alone. Every copy is kept
identical by the repo's ``tests/test_vendored.py``: change them all together."""

import torch
import torch.distributed as dist
from detectron2.layers import get_norm
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.modeling.meta_arch import fcos
from detectron2.structures import Boxes
from torch import nn

__all__ = [
    "normalizer_over_processes", "Scale", "LastLevelP6P7NoReLU", "resnet_fpn_p6p7", "add_group_norm",
    "fcos_label_anchors",
]


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


def add_group_norm(head):
    """Puts GroupNorm(32, C) after every conv of a head's ``cls_subnet`` and ``bbox_subnet``.
    detectron2 v0.6's ``RetinaNetHead`` (and so ``FCOSHead``) probes its norm's type with
    ``get_norm(norm, 1)``, and GroupNorm(32, 1) raises (fixed upstream in 330dd329, after
    v0.6): a "GN" head is built with ``norm=""`` and given its norms by this function, which
    gives the modules, parameter names and random initialisation (norms draw no random
    numbers) of the head detectron2 builds with ``norm="GN"``."""
    for name in ("cls_subnet", "bbox_subnet"):
        layers = []
        for layer in getattr(head, name):
            layers.append(layer)
            if isinstance(layer, nn.Conv2d):
                layers.append(get_norm("GN", layer.out_channels))
        setattr(head, name, nn.Sequential(*layers))
    return head



# detectron2 labels the anchors of an image without objects itself from ef2c3abb on (after
# v0.6; it also returns the matched boxes as tensors from then on).
_FCOS_LABELS_EMPTY_IMAGES = hasattr(fcos.FCOS, "_match_anchors")


@torch.no_grad()
def fcos_label_anchors(model, anchors, gt_instances):
    """detectron2's ``FCOS.label_anchors``, also for images without objects (every anchor is
    background), as upstream ef2c3abb: v0.6 takes a max over an empty GT axis and raises."""
    if _FCOS_LABELS_EMPTY_IMAGES:
        return fcos.FCOS.label_anchors(model, anchors, gt_instances)
    num = sum(len(a) for a in anchors)
    device = anchors[0].tensor.device
    labels, boxes = [], []
    for gt in gt_instances:
        if len(gt) > 0:
            (label,), (box,) = fcos.FCOS.label_anchors(model, anchors, [gt])
        else:
            label = torch.full((num,), model.num_classes, dtype=torch.long, device=device)
            box = Boxes(torch.zeros(num, 4, device=device))
        labels.append(label)
        boxes.append(box)
    return labels, boxes
