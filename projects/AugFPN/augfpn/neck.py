"""Residual Feature Augmentation (paper Sec. 3.3) in an FPN that also hands its raw lateral
maps to Consistent Supervision (Sec. 3.2).

Official: mmdet/models/necks/high_fpn.py (``HighFPN``) of Gus-Guo/AugFPN.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool


def ratio_invariant_pool_size(height, width, ratio):
    """Output size of ratio-invariant adaptive pooling: ``(max(1, int(h r)), max(1, int(w r)))``,
    so every context map keeps the input's aspect ratio."""
    return max(1, int(height * ratio)), max(1, int(width * ratio))


class ResidualFeatureAugmentation(nn.Module):
    """C5 -> for each ratio r: adaptive average pooling to ``ratio_invariant_pool_size`` ->
    1x1 conv to ``out_channels`` -> bilinear upsampling (align_corners=True) back to C5's size;
    then Adaptive Spatial Fusion: concat -> 1x1 conv -> ReLU -> 3x3 conv (one map per ratio) ->
    sigmoid -> per-pixel weighted sum of the context maps. The result is added to M5."""

    def __init__(self, in_channels, out_channels, ratios=(0.1, 0.2, 0.3)):
        super().__init__()
        self.ratios = tuple(ratios)
        self.reduce = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1) for _ in self.ratios)
        n = len(self.ratios)
        self.fusion = nn.Sequential(nn.Conv2d(out_channels * n, out_channels, 1), nn.ReLU(),
                                    nn.Conv2d(out_channels, n, 3, padding=1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # official init: Xavier uniform, bias 0
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def context_maps(self, c5):
        h, w = c5.shape[-2:]
        return [F.interpolate(conv(F.adaptive_avg_pool2d(c5, ratio_invariant_pool_size(h, w, r))),
                              size=(h, w), mode="bilinear", align_corners=True)
                for conv, r in zip(self.reduce, self.ratios)]

    def fusion_weights(self, maps):
        """(N, len(ratios), H, W) weights in (0, 1) (sigmoid, not softmax: they need not sum
        to 1)."""
        return torch.sigmoid(self.fusion(torch.cat(maps, dim=1)))

    def forward(self, c5):
        maps = self.context_maps(c5)
        w = self.fusion_weights(maps)
        return sum(w[:, i:i + 1] * m for i, m in enumerate(maps))


class AugFPN(FPN):
    """detectron2's FPN plus Residual Feature Augmentation on the top lateral. In training,
    with ``return_laterals``, the output also holds the raw lateral maps (1x1 convs of C2-C5,
    before the top-down pass and before RFA) as ``"lateral2"``-``"lateral5"``, the inputs of
    Consistent Supervision; they are not in ``output_shape()`` (nothing else consumes them)."""

    def __init__(self, bottom_up, in_features, out_channels, norm="", top_block=None, rfa_ratios=None,
                 return_laterals=False):
        super().__init__(bottom_up, in_features, out_channels, norm, top_block)
        top_channels = bottom_up.output_shape()[in_features[-1]].channels
        self.rfa = ResidualFeatureAugmentation(top_channels, out_channels, rfa_ratios) if rfa_ratios else None
        self.return_laterals = return_laterals

    def forward(self, x):
        c = self.bottom_up(x)
        names = list(self._out_feature_strides)[: len(self.in_features)]  # p2 ... p5
        laterals = [conv(c[f]) for conv, f in zip(self.lateral_convs[::-1], self.in_features)]
        merged = list(laterals)
        if self.rfa is not None:
            merged[-1] = merged[-1] + self.rfa(c[self.in_features[-1]])
        for i in range(len(merged) - 1, 0, -1):
            merged[i - 1] = merged[i - 1] + F.interpolate(merged[i], scale_factor=2.0, mode="nearest")
        out = {n: conv(m) for n, conv, m in zip(names, self.output_convs[::-1], merged)}
        if self.top_block is not None:
            src = self.top_block.in_feature
            out.update(zip(list(self._out_feature_strides)[len(names):],
                           self.top_block(c[src] if src in c else out[src])))
        if self.training and self.return_laterals:
            out.update({n.replace("p", "lateral"): lat for n, lat in zip(names, laterals)})
        return out


@BACKBONE_REGISTRY.register()
def build_augfpn_resnet_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + AugFPN (P2-P6, P6 by max-pooling P5 as detectron2's Faster R-CNN FPN)."""
    c = cfg.MODEL.AUGFPN
    if cfg.MODEL.FPN.FUSE_TYPE != "sum":
        raise ValueError("AugFPN fuses the top-down pathway by sum (MODEL.FPN.FUSE_TYPE 'sum')")
    return AugFPN(
        bottom_up=build_resnet_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        rfa_ratios=c.RFA_RATIOS if c.RESIDUAL_FEATURE_AUGMENTATION else None,
        return_laterals=c.CONSISTENT_SUPERVISION,
    )
