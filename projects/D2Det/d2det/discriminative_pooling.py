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

    1. plain RoIAlign to ``offset_pool_size`` x ``offset_pool_size`` on the RoI's FPN level;
    2. FCs (``num_offset_fcs``, the last zero-initialised) predict a (2, k, k) offset per RoI,
       upsampled (nearest) to (2, 2k, 2k);
    3. deformable RoI pooling to 2k x 2k on the RoI's level (offsets x ``trans_std`` x RoI
       size);
    4. adaptive weighted pooling to k x k.

    Each level has its own offset FCs and adaptive weighted pooling, as the official code
    builds one ``DeformRoIPoolingPack`` per level; ``shared=True`` uses one set for all.
    """

    def __init__(self, in_channels, output_size, scales, sampling_ratio=2, trans_std=0.1,
                 offset_pool_size=3, offset_fc_dim=1024, num_offset_fcs=3, gate=12.0,
                 canonical_box_size=224, canonical_level=4, shared=False):
        super().__init__()
        self.output_size = output_size
        self.scales = tuple(scales)
        self.sampling_ratio = sampling_ratio
        self.trans_std = trans_std
        self.shared = shared
        # Levels are assigned as detectron2's ROIPooler does (canonical 224 at P4), which is
        # the official SingleRoIExtractor's rule (56 at P2).
        self.offset_pooler = ROIPooler(offset_pool_size, scales, sampling_ratio, "ROIAlignV2",
                                       canonical_box_size, canonical_level)
        n = 1 if shared else len(self.scales)
        self.offset_fc = nn.ModuleList(
            _offset_fcs(in_channels * offset_pool_size ** 2, offset_fc_dim, num_offset_fcs, output_size)
            for _ in range(n))
        self.awp = nn.ModuleList(AdaptiveWeightedPooling(in_channels, gate) for _ in range(n))

    def forward(self, x, box_lists):
        k = self.output_size
        if sum(len(b) for b in box_lists) == 0:
            return x[0].new_zeros(0, x[0].shape[1], k, k)
        p = self.offset_pooler
        rois = convert_boxes_to_pooler_format(box_lists)
        levels = assign_boxes_to_levels(box_lists, p.min_level, p.max_level, p.canonical_box_size,
                                        p.canonical_level)
        coarse = p(x, box_lists).flatten(1)
        out = x[0].new_zeros(rois.shape[0], x[0].shape[1], k, k)
        unused = 0.0
        for level, (feature, scale) in enumerate(zip(x, self.scales)):
            j = 0 if self.shared else level
            offset_fc, awp = self.offset_fc[j], self.awp[j]
            (idx,) = torch.nonzero(levels == level, as_tuple=True)
            if not idx.numel():
                # Keeps a level's modules in the graph when it has no RoI, as several
                # processes (DDP) expect a gradient, here 0, for every parameter.
                unused = unused + sum(q.sum() for q in (*offset_fc.parameters(), *awp.parameters())) * 0.0
                continue
            offset = F.interpolate(offset_fc(coarse[idx]).view(-1, 2, k, k), scale_factor=2, mode="nearest")
            pooled = deform_roi_pool(feature, rois[idx], offset, 2 * k, scale, self.sampling_ratio,
                                     self.trans_std)
            out = out.index_put((idx,), awp(pooled))
        return out + unused


def _offset_fcs(in_dim, hidden_dim, num_fcs, output_size):
    """FCs with ReLU between them; the last predicts (2, k, k) offsets and starts at zero."""
    layers, dim = [], in_dim
    for i in range(num_fcs):
        last = i == num_fcs - 1
        layers.append(nn.Linear(dim, 2 * output_size ** 2 if last else hidden_dim))
        if not last:
            layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)
