"""The AutoAssign head (official ``AutoAssignHead``): FCOS's head with an implicit-objectness
branch in place of centerness.

Two towers of ``num_convs`` 3x3 convs (+ GN, ReLU), shared by all levels. The classification
tower ends in a K-way 3x3 conv; the box tower in a 4-way 3x3 conv (the l, t, r, b distances,
``relu(scale * x) * stride`` pixels with a learnable Scale per level) and a 1-way 3x3 conv, the
implicit objectness (ImpObj, Sec. 3.3 of the paper).
"""

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from torch import nn
from torch.nn import functional as F

from .vendored import Scale, add_group_norm

__all__ = ["AutoAssignHead"]


class AutoAssignHead(RetinaNetHead):
    @configurable
    def __init__(self, *, input_shape: list[ShapeSpec], num_classes, num_convs=4, norm="GN",
                 prior_prob=0.02, reg_bias_init=4.0):
        """
        Args:
            input_shape: the input features, one per level (same channels), with their strides.
            num_classes: K.
            num_convs: convs per tower.
            norm: normalisation after each tower conv ("GN", "" for none, ...).
            prior_prob: initial sigmoid of the classification logits.
            reg_bias_init: initial bias of the box conv (distances of reg_bias_init strides).
        """
        channels = {s.channels for s in input_shape}
        assert len(channels) == 1, f"all levels need the same channels, got {channels}"
        c = channels.pop()
        # RetinaNetHead builds the towers, cls_score and bbox_pred (one anchor) with FCOS's init:
        # N(0, 0.01), zero bias (tower convs keep their bias, as the official head), prior bias.
        super().__init__(input_shape=input_shape, num_classes=num_classes, num_anchors=1,
                         conv_dims=[c] * num_convs, norm="" if norm == "GN" else norm,
                         prior_prob=prior_prob)
        if norm == "GN":
            add_group_norm(self)
        self.obj_score = nn.Conv2d(c, 1, kernel_size=3, padding=1)
        nn.init.normal_(self.obj_score.weight, std=0.01)
        nn.init.zeros_(self.obj_score.bias)
        nn.init.constant_(self.bbox_pred.bias, reg_bias_init)
        self.scales = nn.ModuleList(Scale() for _ in input_shape)
        self.strides = [s.stride for s in input_shape]

    @classmethod
    def from_config(cls, cfg, input_shape: list[ShapeSpec]):
        c = cfg.MODEL.AUTOASSIGN
        return {
            "input_shape": input_shape,
            "num_classes": c.NUM_CLASSES,
            "num_convs": c.NUM_CONVS,
            "norm": c.NORM,
            "prior_prob": c.PRIOR_PROB,
            "reg_bias_init": c.REG_BIAS_INIT,
        }

    def forward(self, features):
        """
        Args:
            features: list of ``(N, C, H_l, W_l)``, one per level.

        Returns:
            logits: list of ``(N, K, H_l, W_l)`` class logits.
            reg: list of ``(N, 4, H_l, W_l)``: distances (pixels, >= 0) from each location to
                the left, top, right and bottom sides of its box.
            obj: list of ``(N, 1, H_l, W_l)`` implicit-objectness logits.
        """
        logits, reg, obj = [], [], []
        for x, scale, stride in zip(features, self.scales, self.strides):
            box_feature = self.bbox_subnet(x)
            logits.append(self.cls_score(self.cls_subnet(x)))
            reg.append(F.relu(scale(self.bbox_pred(box_feature))) * stride)
            obj.append(self.obj_score(box_feature))
        return logits, reg, obj
