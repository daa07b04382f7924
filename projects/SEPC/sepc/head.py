"""The SEPC RetinaNet head (official ``SEPC`` neck + ``SepcRetinaHead`` with
``stacked_convs=0``): stacked PConv modules shared by both branches, then a branch-specific
final conv (``cconv`` for classification, ``lconv`` for boxes; integrated BN and ReLU), then
RetinaNet's output convs."""

import math

from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling.anchor_generator import build_anchor_generator
from torch import nn
from torch.nn import functional as F

from .pconv import PConv, SEPCConv, integrated_bn

__all__ = ["SEPCHead"]


class SEPCHead(nn.Module):
    @configurable
    def __init__(self, *, input_shape: list[ShapeSpec], num_classes, num_anchors, num_pconvs=4, ibn=False,
                 ibn_norm="BN", pconv_deform=False, lcconv_deform=False, lcconv_padding=1, prior_prob=0.01):
        """
        Args:
            input_shape: the pyramid levels (P3 first), all with the same channels.
            num_classes, num_anchors, prior_prob: as RetinaNet's head.
            Others: see ``add_sepc_config``.
        """
        super().__init__()
        channels = {s.channels for s in input_shape}
        assert len(channels) == 1, f"all levels need the same channels, got {channels}"
        c = channels.pop()
        self.pconvs = nn.ModuleList(PConv(c, ibn, ibn_norm, pconv_deform) for _ in range(num_pconvs))
        self.cconv = SEPCConv(c, c, padding=lcconv_padding, deform=lcconv_deform)
        self.lconv = SEPCConv(c, c, padding=lcconv_padding, deform=lcconv_deform)
        self.cbn = get_norm(ibn_norm, c) if ibn else None
        self.lbn = get_norm(ibn_norm, c) if ibn else None
        self.cls_score = nn.Conv2d(c, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(c, num_anchors * 4, 3, padding=1)
        for m in (self.cls_score, self.bbox_pred):  # mmdetection RetinaHead init
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, input_shape):
        c = cfg.MODEL.SEPC
        (num_anchors,) = set(build_anchor_generator(cfg, input_shape).num_cell_anchors)
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "num_anchors": num_anchors,
            "num_pconvs": c.NUM_PCONVS,
            "ibn": c.IBN,
            "ibn_norm": c.IBN_NORM,
            "pconv_deform": c.PCONV_DEFORM,
            "lcconv_deform": c.LCCONV_DEFORM,
            "lcconv_padding": c.LCCONV_PADDING,
            "prior_prob": cfg.MODEL.RETINANET.PRIOR_PROB,
        }

    def forward(self, features):
        """
        Returns:
            logits, deltas: lists over levels of ``(N, A*K, H, W)`` and ``(N, A*4, H, W)``
            (``H - 2``, ``W - 2`` with ``lcconv_padding`` 0).
        """
        if self.cconv.padding == 0 and min(min(x.shape[-2:]) for x in features) < 3:
            sizes = [tuple(x.shape[-2:]) for x in features]
            raise ValueError("MODEL.SEPC.LCCONV_PADDING 0 (unpadded final convs) needs every pyramid "
                             f"level to be at least 3 x 3, got {sizes}: use larger inputs (P7 has "
                             "stride 128) or LCCONV_PADDING 1")
        for pconv in self.pconvs:
            features = pconv(features)
        cls = [self.cconv(level, x) for level, x in enumerate(features)]
        loc = [self.lconv(level, x) for level, x in enumerate(features)]
        if self.cbn is not None:
            cls, loc = integrated_bn(cls, self.cbn), integrated_bn(loc, self.lbn)
        logits = [self.cls_score(F.relu(x)) for x in cls]
        deltas = [self.bbox_pred(F.relu(x)) for x in loc]
        return logits, deltas
