"""The GFL head (Sec. 3; official ``GFLHead``): the ATSS head without its centerness branch.

Two towers of ``num_convs`` 3x3 convs (+ GN, ReLU), shared by all levels. The classification
tower ends in a 3x3 conv to K joint class-quality logits (trained with QFL); the regression tower
in a 3x3 conv to 4 * (n+1) logits, the general distribution of each box side (trained with DFL
and GIoU), multiplied by a learnable scalar per level.
"""

import math

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from torch import nn

from .vendored import Scale

__all__ = ["GFLHead"]


class GFLHead(nn.Module):
    @configurable
    def __init__(self, *, input_shape, num_classes, reg_max=16, num_convs=4, norm="GN",
                 prior_prob=0.01):
        """
        Args:
            input_shape (list[ShapeSpec]): the input features, one per level (same channels).
            num_classes: K.
            reg_max: n; each side has n+1 bins.
            num_convs: convs per tower.
            norm: normalisation after each tower conv ("GN", "BN", "" for none).
            prior_prob: initial sigmoid of the classification logits.
        """
        super().__init__()
        channels = {s.channels for s in input_shape}
        assert len(channels) == 1, f"all levels need the same channels, got {channels}"
        c = channels.pop()

        def tower():
            layers = []
            for _ in range(num_convs):
                # No conv bias before a norm layer, as mmcv's ConvModule (bias="auto").
                layers.append(nn.Conv2d(c, c, 3, padding=1, bias=not norm))
                if norm:
                    layers.append(get_norm(norm, c))
                layers.append(nn.ReLU())
            return nn.Sequential(*layers)

        self.cls_subnet = tower()
        self.reg_subnet = tower()
        self.cls_score = nn.Conv2d(c, num_classes, 3, padding=1)
        self.reg_pred = nn.Conv2d(c, 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in input_shape)

        # Official init: every conv N(0, 0.01), zero bias; the class bias gives prior_prob.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, input_shape: list[ShapeSpec]):
        c = cfg.MODEL.GFL
        return {
            "input_shape": input_shape,
            "num_classes": c.NUM_CLASSES,
            "reg_max": c.REG_MAX,
            "num_convs": c.NUM_CONVS,
            "norm": c.NORM,
            "prior_prob": c.PRIOR_PROB,
        }

    def forward(self, features):
        """
        Args:
            features: list of ``(N, C, H_l, W_l)``, one per level.

        Returns:
            logits: list of ``(N, K, H_l, W_l)``.
            reg: list of ``(N, 4 * (n+1), H_l, W_l)``: for each side (l, t, r, b in that order),
                n+1 logits of its distance distribution.
        """
        logits, reg = [], []
        for x, scale in zip(features, self.scales):
            logits.append(self.cls_score(self.cls_subnet(x)))
            reg.append(scale(self.reg_pred(self.reg_subnet(x))))
        return logits, reg
