"""The Border Alignment Module (BorderDet Sec. 3.2, Fig. 4; official ``BorderBranch``).

From a tower feature (N, C_in, H, W) and each location's coarse box, it builds the
"border feature" of the location: a 1x1 conv + InstanceNorm + ReLU to C channels keeps the
point feature; another to 4C channels is max-pooled along the four borders of the box
(BorderAlign, group k for border k); both are concatenated (5C) and fused by a 1x1 conv back to
C_in channels + ReLU.
"""

import torch
from torch import nn

from .layers import border_align

__all__ = ["BorderBranch", "InstanceNorm"]


class InstanceNorm(nn.Module):
    """``nn.InstanceNorm2d`` without affine (the official choice) that also takes 1x1 maps,
    where it gives 0: the coarsest levels of small images are 1x1, and torch's instance norm
    rejects them."""

    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)


class BorderBranch(nn.Module):
    def __init__(self, in_channels, border_channels, pool_size=10):
        super().__init__()
        self.pool_size = pool_size
        self.point_conv = nn.Sequential(
            nn.Conv2d(in_channels, border_channels, 1), InstanceNorm(), nn.ReLU()
        )
        self.border_conv = nn.Sequential(
            nn.Conv2d(in_channels, 4 * border_channels, 1), InstanceNorm(), nn.ReLU(),
        )
        self.fuse = nn.Sequential(nn.Conv2d(5 * border_channels, in_channels, 1), nn.ReLU())

    def forward(self, feature, boxes):
        """
        Args:
            feature: ``(N, C_in, H, W)``.
            boxes: ``(N, H*W, 4)`` XYXY in this level's feature-map coordinates (the coarse
                boxes divided by the stride and clamped to the map), no gradient.

        Returns:
            ``(N, C_in, H, W)``.
        """
        borders = border_align(self.border_conv(feature), boxes, self.pool_size)
        return self.fuse(torch.cat([borders, self.point_conv(feature)], dim=1))
