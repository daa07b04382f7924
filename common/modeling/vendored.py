"""Mechanisms shared by several packages of this repo (detectron2 fixes made after v0.6, and
layers several papers use), copied here so that this package stands alone. Every copy is kept
identical by the repo's ``tests/test_vendored.py``: change them all together."""

import torch
from detectron2.layers import get_norm
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.modeling.meta_arch import fcos
from detectron2.structures import Boxes
from torch import nn

__all__ = [
    "LastLevelP6P7NoReLU", "resnet_fpn_p6p7", "add_group_norm", "retinanet_from_config",
    "fcos_label_anchors",
]


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


def retinanet_from_config(from_config, cfg):
    """``from_config(cfg)`` for a detectron2 ``RetinaNet`` (pass ``super().from_config``), whose
    head may use "GN": built without norm, then given its GroupNorms (see add_group_norm)."""
    if cfg.MODEL.RETINANET.NORM != "GN":
        return from_config(cfg)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RETINANET.NORM = ""
    ret = from_config(cfg)
    add_group_norm(ret["head"])
    return ret



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
