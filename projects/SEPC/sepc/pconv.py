"""Pyramid convolution, integrated BN and the scale-equalizing (deformable) kernels (Sec. 3 of
the paper; official ``PConvModule``, ``iBN`` and ``sepc_conv``)."""

import torch
from detectron2.layers import get_norm
from torch import nn
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

__all__ = ["PConv", "SEPCConv", "integrated_bn"]


class SEPCConv(nn.Module):
    """A 3x3 convolution whose kernel is shared by every pyramid level. With ``deform`` it is a
    deformable convolution (DCNv1, ``torchvision.ops.deform_conv2d``) on the levels from
    ``start_level`` on (P4 and above): the kernel that is right for P3 is re-aligned on the
    coarser levels by offsets from a 3x3 conv on the input, zero at the start. P3 always uses
    the plain convolution."""

    def __init__(self, in_channels, out_channels, stride=1, padding=1, deform=False, start_level=1):
        super().__init__()
        self.stride, self.padding, self.start_level = stride, padding, start_level
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.normal_(self.weight, std=0.01)  # official init_weights: N(0, 0.01), bias 0
        self.conv_offset = None
        if deform:
            self.conv_offset = nn.Conv2d(in_channels, 2 * 3 * 3, 3, stride=stride, padding=padding)
            nn.init.zeros_(self.conv_offset.weight)
            nn.init.zeros_(self.conv_offset.bias)

    def forward(self, level, x):
        """``level``: the index of the output level (0 = P3)."""
        if self.conv_offset is None or level < self.start_level:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return deform_conv2d(x, self.conv_offset(x), self.weight, self.bias, stride=self.stride,
                             padding=self.padding)


def integrated_bn(features, bn):
    """Integrated BN: ``bn`` applied to all levels as one map, so its statistics are taken over
    every pixel of every level (not level by level)."""
    n, c = features[0].shape[:2]
    sizes = [f.shape[-2:] for f in features]
    joint = bn(torch.cat([f.reshape(n, c, 1, -1) for f in features], dim=3))
    parts = joint.split([h * w for h, w in sizes], dim=3)
    return [p.reshape(n, c, h, w) for p, (h, w) in zip(parts, sizes)]


class PConv(nn.Module):
    """One pyramid convolution: for every level l,

        out_l = w1 * x_l + w2 *(stride 2) x_{l-1} + upsample(w0 * x_{l+1})

    with the three kernels shared across levels (the bottom level has no x_{l-1} term, the top
    level no x_{l+1} term); w0 runs at the coarser resolution and its result is upsampled
    bilinearly (align_corners=True) to level l's size. Then integrated BN (optional) and ReLU.
    """

    def __init__(self, channels, ibn=False, norm="BN", deform=False):
        super().__init__()
        self.up = SEPCConv(channels, channels, deform=deform)  # w0, on x_{l+1}
        self.same = SEPCConv(channels, channels, deform=deform)  # w1, on x_l
        self.down = SEPCConv(channels, channels, stride=2, deform=deform)  # w2, on x_{l-1}
        self.bn = get_norm(norm, channels) if ibn else None

    def forward(self, features):
        out = []
        for level, x in enumerate(features):
            y = self.same(level, x)
            if level > 0:
                y = y + self.down(level, features[level - 1])
            if level < len(features) - 1:
                coarse = self.up(level, features[level + 1])
                y = y + F.interpolate(coarse, size=y.shape[-2:], mode="bilinear", align_corners=True)
            out.append(y)
        if self.bn is not None:
            out = integrated_bn(out, self.bn)
        return [F.relu(y) for y in out]
