"""Soft RoI Selection (paper Sec. 3.4): every RoI is pooled from all pyramid levels and the
pooled features are fused with learned, per-position level weights, instead of being taken
from the one level its size maps to.

Official: mmdet/models/roi_extractors/soft_roi_selection.py (``SoftRoIExtractor``) of
Gus-Guo/AugFPN.
"""

import torch
import torch.nn as nn
from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import convert_boxes_to_pooler_format


class SoftRoISelection(nn.Module):
    """A drop-in for detectron2's ``ROIPooler`` (same call, same output shape): RoIAlign of
    every box on every level -> concat (L x C channels) -> 1x1 conv (C) -> ReLU -> 3x3 conv
    (L maps) -> sigmoid -> sum over levels of weight_l x feature_l."""

    def __init__(self, channels, output_size, scales, sampling_ratio=2):
        super().__init__()
        self.output_size = output_size
        self.level_poolers = nn.ModuleList(
            ROIAlign(output_size, spatial_scale=s, sampling_ratio=sampling_ratio, aligned=True)
            for s in scales)
        n = len(scales)
        self.attention = nn.Sequential(nn.Conv2d(channels * n, channels, 1), nn.ReLU(),
                                       nn.Conv2d(channels, n, 3, padding=1))
        for m in self.attention.modules():
            if isinstance(m, nn.Conv2d):  # official init: Xavier uniform, bias 0
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def pool_all_levels(self, x, box_lists):
        rois = convert_boxes_to_pooler_format(box_lists)
        return [pooler(feature, rois) for pooler, feature in zip(self.level_poolers, x)]

    def level_weights(self, pooled):
        """(R, L, k, k) weights in (0, 1), one map per level."""
        return torch.sigmoid(self.attention(torch.cat(pooled, dim=1)))

    def forward(self, x, box_lists):
        if len(x) != len(self.level_poolers):
            raise ValueError(f"SoftRoISelection expects {len(self.level_poolers)} levels, got {len(x)}")
        pooled = self.pool_all_levels(x, box_lists)
        w = self.level_weights(pooled)
        return sum(w[:, i:i + 1] * p for i, p in enumerate(pooled))
