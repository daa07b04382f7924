"""Grounding Transformer (GT, paper Sec. 3.3): top-down, a finer level's positions query a
coarser level's.

Official: ``lib/modeling/grounding_trans.py`` (``GroundTrans``, ``mode='dot'``) of
ZHANGDONG-NJUST/FPT. The paper scores a query against a key by the negative squared Euclidean
distance and normalises with a softmax; the released file uses a dot product divided by the
number of keys (no softmax), and the authors answer issues #14 / #26 with "use the negative
Euclidean distance". Both are here (``similarity``); "euclidean" is the default.
"""

import torch
from detectron2.layers import get_norm
from torch import nn
from torch.nn import functional as F

from .attention import chunked_softmax_attention

__all__ = ["GroundingTransformer", "window_of_coarse_positions"]

SIMILARITIES = ("euclidean", "dot")


def window_of_coarse_positions(x, window, fine_size, s):
    """For every position (i, j) of a finer map of ``fine_size`` = (H, W), the ``window`` x
    ``window`` positions of the ``s`` times coarser map ``x`` (B, C, h, w) centred on
    (i // s, j // s). Returns (B, C, window^2, H, W) and a (1, 1, window^2, H, W) mask of the
    positions inside the coarse map (those outside are zero in the first tensor)."""
    h, w = x.shape[-2:]
    H, W = fine_size
    if -(-H // s) != h or -(-W // s) != w:
        raise ValueError(f"Grounding Transformer: a {h}x{w} map is not a coarser level of a {H}x{W} one")

    def unfold(t):
        cols = F.unfold(t, window, padding=window // 2).view(t.shape[0], -1, h, w)
        cols = cols.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)[:, :, :H, :W]
        return cols.reshape(t.shape[0], t.shape[1], window * window, H, W)

    return unfold(x), unfold(x.new_ones(1, 1, h, w)) > 0


class GroundingTransformer(nn.Module):
    """``norm(conv(y))`` at the finer map's resolution, with queries ``q = theta(fine)``, keys
    ``k = phi(coarse)`` and values ``v = g(coarse)`` (1x1 convs to ``inter_channels``) and, for
    each fine position i:

    - "euclidean" (paper): ``y_i = sum_j softmax_j(-|q_i - k_j|^2) v_j``;
    - "dot" (released code): ``y_i = sum_j (q_i . k_j) v_j / M``, M the number of keys.

    ``window`` > 0 (odd) is the locality-constrained GT: j runs only over the ``window`` x
    ``window`` coarse positions centred on the one under i (the coarse map is ``scale`` times
    smaller; positions inside the map only, M is then their number); 0 attends to the whole
    coarse map. The output's norm starts at zero (weight and
    bias 0, as the official), so a fresh GT outputs zeros; it has no residual.
    """

    def __init__(self, channels, inter_channels=None, similarity="euclidean", window=0, scale=2, norm="BN",
                 chunk=4096):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"Grounding Transformer: similarity must be one of {SIMILARITIES}, "
                             f"got {similarity!r}")
        if window < 0 or (window and window % 2 == 0):
            raise ValueError(f"Grounding Transformer: window must be 0 (global) or odd, got {window}")
        inter = inter_channels or channels // 2
        self.similarity, self.window, self.scale, self.chunk = similarity, window, scale, chunk
        self.query = nn.Conv2d(channels, inter, 1)  # official theta
        self.key = nn.Conv2d(channels, inter, 1)    # phi
        self.value = nn.Conv2d(channels, inter, 1)  # g
        self.out = nn.Conv2d(inter, channels, 1)    # W_z[0]
        self.norm = get_norm(norm, channels)        # W_z[1]
        last = self.norm if self.norm is not None else self.out
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.norm = self.norm or nn.Identity()

    def forward(self, fine, coarse):
        q, k, v = self.query(fine), self.key(coarse), self.value(coarse)
        b, c, h, w = q.shape
        if self.window:
            y = self._local(q, k, v)
        elif self.similarity == "dot":
            # (q k^T / M) v = q (k^T v) / M: the same sum, without the N x M map
            y = torch.bmm(q.flatten(2).transpose(1, 2), k.flatten(2) @ v.flatten(2).transpose(1, 2))
            y = (y / k[0, 0].numel()).transpose(1, 2)
        else:
            # -|q - k|^2 = 2 q.k - |k|^2 - |q|^2; the last term is constant over the keys j
            k_norm = (k.to(torch.promote_types(k.dtype, torch.float32)) ** 2).sum(1).flatten(1)
            y = chunked_softmax_attention(q.flatten(2).transpose(1, 2), k.flatten(2).transpose(1, 2),
                                          v.flatten(2).transpose(1, 2), scale=2.0, key_bias=-k_norm,
                                          chunk=self.chunk)
            y = y.transpose(1, 2)
        return self.norm(self.out(y.reshape(b, -1, h, w)))

    def _local(self, q, k, v):
        windows, inside = window_of_coarse_positions(torch.cat([k, v], dim=1), self.window,
                                                     q.shape[-2:], self.scale)
        keys, values = windows.split([k.shape[1], v.shape[1]], dim=1)
        if self.similarity == "dot":
            weights = (q.unsqueeze(2) * keys).sum(1, keepdim=True) / inside.sum(2, keepdim=True)
        else:
            work = torch.promote_types(q.dtype, torch.float32)
            scores = -((q.unsqueeze(2).to(work) - keys.to(work)) ** 2).sum(1, keepdim=True)
            weights = scores.masked_fill(~inside, float("-inf")).softmax(dim=2).to(q.dtype)
        return (weights * values).sum(2)
