"""Discriminative RoI pooling (paper Sec. 3.2), the classification branch's RoI feature
extractor: light-weight offset prediction, deformable RoI pooling, adaptive weighted pooling.

Official: mmdet/ops/dcn/deform_pool.py (``DeformRoIPoolingPack``, ``AWPool``) of
JialeCao001/D2Det.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format

from .layers import deform_roi_pool


class AdaptiveWeightedPooling(nn.Module):
    """Pools a (R, C, 2k, 2k) RoI feature to (R, C, k, k) with learned spatial weights:

        w   = exp(gate * sigmoid(IN(conv3x3(x))))
        out = avgpool3x3s2p1(x * w) / avgpool3x3s2p1(w)

    i.e. every output cell is the w-weighted mean of its 3 x 3 input window. The conv starts at
    zero, so w is constant and the pooling starts as a plain 3 x 3 average.
    """

    def __init__(self, channels, gate=12.0):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.InstanceNorm2d(channels, affine=True)
        self.gate = gate
        nn.init.zeros_(self.conv.weight)

    def weights(self, x):
        return torch.exp(self.gate * torch.sigmoid(self.norm(self.conv(x))))

    def forward(self, x):
        w = self.weights(x)
        return F.avg_pool2d(x * w, 3, 2, 1) / F.avg_pool2d(w, 3, 2, 1)


class DiscriminativeRoIPooler(nn.Module):
    """A drop-in for detectron2's ``ROIPooler`` (same call) that returns (R, C, k, k):

    1. plain RoIAlign to ``offset_pool_size`` x ``offset_pool_size``;
    2. FCs (``num_offset_fcs``, the last zero-initialised) predict a (2, k, k) offset per RoI,
       upsampled (nearest) to (2, 2k, 2k);
    3. deformable RoI pooling to 2k x 2k on the RoI's FPN level (offsets x ``trans_std`` x RoI
       size);
    4. adaptive weighted pooling to k x k.
    """

    def __init__(self, in_channels, output_size, scales, sampling_ratio=2, trans_std=0.1,
                 offset_pool_size=3, offset_fc_dim=1024, num_offset_fcs=3, gate=12.0,
                 canonical_box_size=224, canonical_level=4):
        super().__init__()
        self.output_size = output_size
        self.scales = tuple(scales)
        self.sampling_ratio = sampling_ratio
        self.trans_std = trans_std
        # Levels are assigned as detectron2's ROIPooler does (canonical 224 at P4), which is
        # the official SingleRoIExtractor's rule (56 at P2).
        self.offset_pooler = ROIPooler(offset_pool_size, scales, sampling_ratio, "ROIAlignV2",
                                       canonical_box_size, canonical_level)
        layers, dim = [], in_channels * offset_pool_size ** 2
        for i in range(num_offset_fcs):
            last = i == num_offset_fcs - 1
            layers.append(nn.Linear(dim, 2 * output_size ** 2 if last else offset_fc_dim))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            dim = offset_fc_dim
        self.offset_fc = nn.Sequential(*layers)
        nn.init.zeros_(self.offset_fc[-1].weight)
        nn.init.zeros_(self.offset_fc[-1].bias)
        self.awp = AdaptiveWeightedPooling(in_channels, gate)

    def offsets(self, x, box_lists):
        """The normalised (dx, dy) offset of each 2k x 2k bin: (R, 2, 2k, 2k)."""
        coarse = self.offset_pooler(x, box_lists)
        k = self.output_size
        offset = self.offset_fc(coarse.flatten(1)).view(-1, 2, k, k)
        return F.interpolate(offset, scale_factor=2, mode="nearest")

    def deform_pool(self, x, box_lists, offset):
        """Deformable RoI pooling of every box on its level: (R, C, 2k, 2k)."""
        p = self.offset_pooler
        rois = convert_boxes_to_pooler_format(box_lists)
        levels = assign_boxes_to_levels(box_lists, p.min_level, p.max_level, p.canonical_box_size,
                                        p.canonical_level)
        size = 2 * self.output_size
        out = x[0].new_zeros(rois.shape[0], x[0].shape[1], size, size)
        for level, (feature, scale) in enumerate(zip(x, self.scales)):
            (idx,) = torch.nonzero(levels == level, as_tuple=True)
            if idx.numel():
                pooled = deform_roi_pool(feature, rois[idx], offset[idx], size, scale,
                                         self.sampling_ratio, self.trans_std)
                out = out.index_put((idx,), pooled)
        return out

    def forward(self, x, box_lists):
        if sum(len(b) for b in box_lists) == 0:
            k = self.output_size
            return x[0].new_zeros(0, x[0].shape[1], k, k)
        return self.awp(self.deform_pool(x, box_lists, self.offsets(x, box_lists)))
