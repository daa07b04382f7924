"""The conv head of Double-Head R-CNN (paper Sec. 4.1, Fig. 4 (a)): the regression-focused
branch, on 7 x 7 RoI features.

Official: maskrcnn_benchmark/modeling/roi_heads/box_head/roi_box_feature_extractors.py
(``FPNUpChannels``, ``FPN2MLPFeatureExtractorNeighbor``) and attention.py
(``NONLocalBlock2D_Group``, ``FPNFFConv``) of wuyuebupt/doubleheadsrcnn. Every conv keeps
PyTorch's default init, as there; only the non-local block's output conv starts at zero.
"""

import torch
from detectron2.layers import ShapeSpec, get_norm
from torch import nn
from torch.nn import functional as F


def _conv_norm(in_channels, out_channels, kernel_size, norm):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        get_norm(norm, out_channels))


class UpChannelBlock(nn.Module):
    """Residual block from ``in_channels`` to ``out_channels``:
    relu(norm(conv1x1(relu(norm(conv3x3(x))))) + norm(conv1x1(x)))."""

    def __init__(self, in_channels, out_channels, norm="BN"):
        super().__init__()
        self.conv1 = _conv_norm(in_channels, in_channels, 3, norm)
        self.conv2 = _conv_norm(in_channels, out_channels, 1, norm)
        self.shortcut = _conv_norm(in_channels, out_channels, 1, norm)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck C -> C/4 (1x1) -> C/4 (3x3) -> C (1x1), identity shortcut."""

    def __init__(self, channels, norm="BN"):
        super().__init__()
        mid = channels // 4
        self.conv1 = _conv_norm(channels, mid, 1, norm)
        self.conv2 = _conv_norm(mid, mid, 3, norm)
        self.conv3 = _conv_norm(mid, channels, 1, norm)

    def forward(self, x):
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(self.conv3(y) + x)


class GroupNonLocal2d(nn.Module):
    """Non-local block with the embedded channels split into ``groups`` (the official default:
    dot product divided by the number of positions N, no softmax, no subsampling):

        y_i = 1/N sum_j (theta_i . phi_j) g_j   within each group of inter_channels / groups,
        z = relu(x + norm(W y)),

    theta, phi, g, W 1x1 convs with bias; W starts at zero, so the block starts as relu(x)."""

    def __init__(self, channels, inter_channels=512, groups=4, norm="BN"):
        super().__init__()
        if inter_channels % groups:
            raise ValueError(f"inter_channels {inter_channels} is not divisible by groups {groups}")
        self.groups, self.group_channels = groups, inter_channels // groups
        self.theta = nn.Conv2d(channels, inter_channels, 1)
        self.phi = nn.Conv2d(channels, inter_channels, 1)
        self.g = nn.Conv2d(channels, inter_channels, 1)
        self.W = nn.Conv2d(inter_channels, channels, 1)
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(self.W.bias)
        self.norm = get_norm(norm, channels)

    def forward(self, x):
        n, _, h, w = x.shape
        # (n, groups, c / groups, h w)
        shape = (n, self.groups, self.group_channels, h * w)
        theta, phi, g = (f(x).view(shape) for f in (self.theta, self.phi, self.g))
        affinity = torch.matmul(theta.transpose(2, 3), phi) / (h * w)   # (n, groups, hw, hw)
        y = torch.matmul(g, affinity.transpose(2, 3))                   # (n, groups, c / groups, hw)
        y = y.reshape(n, self.groups * self.group_channels, h, w)
        return F.relu(x + self.norm(self.W(y)))


class DoubleHeadConvHead(nn.Module):
    """Up-channel block, ``num_blocks`` x [non-local block (optional) + bottleneck], global
    average pool: a ``channels``-d vector per RoI (the official 7 x 7 average pool on 7 x 7
    RoIs; average over any RoI size here)."""

    def __init__(self, input_shape: ShapeSpec, channels=1024, num_blocks=2, non_local=True,
                 non_local_groups=4, non_local_inter_channels=512, norm="BN"):
        super().__init__()
        self.up = UpChannelBlock(input_shape.channels, channels, norm)
        blocks = []
        for _ in range(num_blocks):
            if non_local:
                blocks.append(GroupNonLocal2d(channels, non_local_inter_channels, non_local_groups, norm))
            blocks.append(Bottleneck(channels, norm))
        self.blocks = nn.Sequential(*blocks)
        self._output_size = channels

    @classmethod
    def from_config(cls, cfg, input_shape):
        c = cfg.MODEL.DOUBLE_HEAD
        return cls(input_shape, c.CONV_DIM, c.NUM_BLOCKS, c.NON_LOCAL, c.NON_LOCAL_GROUPS,
                   c.NON_LOCAL_INTER_CHANNELS, c.NORM)

    @property
    def output_shape(self):
        return ShapeSpec(channels=self._output_size)

    def forward(self, x):
        return self.blocks(self.up(x)).mean(dim=(2, 3))
