"""Rendering Transformer (RT, paper Sec. 3.4): bottom-up, a coarser level (the query) is
rendered with a finer level's content (keys and values).

Official: ``lib/modeling/rendering_trans.py`` (``RenderTrans``, ``upsample=False``) of
ZHANGDONG-NJUST/FPT.
"""

from detectron2.layers import get_norm
from torch import nn
from torch.nn import functional as F

__all__ = ["RenderingTransformer"]


class RenderingTransformer(nn.Module):
    """``relu(norm(conv3x3_s(fine)) + norm(conv3x3(coarse)) * w)`` with channel weights
    ``w = relu(norm(conv1x1(mean(fine))))`` from the globally average-pooled finer map, and
    ``conv3x3_s`` a 3x3 convolution of stride ``scale`` (the level gap: the finer map is
    ``scale`` times larger) that brings the finer map to the coarser one's size.

    The official module has stride 2 only, so its non-adjacent pairs (P5 from P3 ...) cannot
    add their maps; it also builds two 1x1 convs it never uses (``conv_reduction``,
    ``conv_cat``): they are left out here (see README)."""

    def __init__(self, channels, scale=2, norm="BN"):
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, 1, bias=False)            # official conv1x1
        self.gate_norm = get_norm(norm, channels) or nn.Identity()          # bn_low
        self.query = nn.Conv2d(channels, channels, 3, padding=1, bias=False)  # conv3x3
        self.query_norm = get_norm(norm, channels) or nn.Identity()         # bn_high
        self.value = nn.Conv2d(channels, channels, 3, stride=scale, padding=1, bias=False)  # str_conv3x3
        self.value_norm = get_norm(norm, channels) or nn.Identity()         # bn_reduction

    def forward(self, coarse, fine):
        if self.training and fine.shape[0] == 1 and type(self.gate_norm) is nn.BatchNorm2d:
            raise ValueError("Rendering Transformer: BatchNorm of a globally pooled map needs 2+ images "
                             "per process in training; use 2 images per GPU, MODEL.FPT.NORM 'naiveSyncBN' "
                             "or 'GN'")
        w = F.relu(self.gate_norm(self.gate(fine.mean(dim=(2, 3), keepdim=True))))
        value = self.value_norm(self.value(fine))
        if value.shape[-2:] != coarse.shape[-2:]:
            raise ValueError(f"Rendering Transformer: the finer map {tuple(fine.shape[-2:])} strided to "
                             f"{tuple(value.shape[-2:])} does not match the coarser "
                             f"{tuple(coarse.shape[-2:])}")
        return F.relu(value + self.query_norm(self.query(coarse)) * w)
