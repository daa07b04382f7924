"""Self-Transformer (ST, paper Sec. 3.2): a non-local interaction within one pyramid level whose
attention is a Mixture of Softmaxes.

Official: ``lib/modeling/self_trans.py`` (``SelfTrans``, ``MixtureOfSoftMax``) of
ZHANGDONG-NJUST/FPT, as ``FPT_a.py`` builds it: one head, ``n_mix = 2``, d_k = d_v = channels.
"""

import math

import torch
from detectron2.layers import get_norm
from torch import nn

from .attention import chunked_softmax_attention

__all__ = ["SelfTransformer"]


class SelfTransformer(nn.Module):
    """``x + norm(conv(MoS(q, k) v))``: queries ``q = f(x)`` at every position, keys
    ``k = f(pool(x))`` and values ``v = g(pool(x))`` on a 3x3 / stride-2 average-pooled map
    (``f`` is one 1x1 conv for queries and keys, as the official). The channels of ``q`` and
    ``k`` are split into ``mixtures`` parts n; part n gives its own softmax over the keys of
    ``q_n . k_n / sqrt(channels)``, and the parts are mixed with per-image weights
    ``pi = softmax(W mean(q))`` before weighting the (unsplit) values. Dropout acts on each
    part's attention probabilities."""

    def __init__(self, channels, mixtures=2, dropout=0.1, norm="BN", chunk=4096):
        super().__init__()
        if channels % mixtures:
            raise ValueError(f"Self-Transformer: {channels} channels do not split into {mixtures} mixtures")
        self.mixtures, self.dropout, self.chunk = mixtures, dropout, chunk
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.query_key = nn.Conv2d(channels, channels, 1)  # official conv_qs, also its conv_ks
        self.value = nn.Conv2d(channels, channels, 1)      # conv_vs
        nn.init.normal_(self.query_key.weight, std=math.sqrt(2.0 / (2 * channels)))
        nn.init.normal_(self.value.weight, std=math.sqrt(2.0 / (2 * channels)))
        # MixtureOfSoftMax.weight (only with 2+ mixtures), U(-1/sqrt(m), 1/sqrt(m))
        self.mixture_weight = nn.Parameter(torch.empty(mixtures, channels).uniform_(
            -mixtures ** -0.5, mixtures ** -0.5)) if mixtures > 1 else None
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = get_norm(norm, channels) or nn.Identity()

    def mixture_weights(self, q):
        """(B, mixtures): softmax over the mixtures of ``W`` times the spatial mean of ``q``
        (B, C, N)."""
        if self.mixture_weight is None:
            return q.new_ones(q.shape[0], 1)
        return torch.softmax(self.mixture_weight @ q.mean(dim=2, keepdim=True), dim=1).squeeze(2)

    def forward(self, x):
        b, c, h, w = x.shape
        pooled = self.pool(x)  # (h + 1) // 2 x (w + 1) // 2, any h and w
        q = self.query_key(x).flatten(2)        # (B, C, N)
        k = self.query_key(pooled).flatten(2)   # (B, C, M)
        v = self.value(pooled).flatten(2).transpose(1, 2)
        pi = self.mixture_weights(q)
        d = c // self.mixtures
        dropout = self.dropout if self.training else 0.0
        out = 0
        for n in range(self.mixtures):
            part = slice(n * d, (n + 1) * d)
            attended = chunked_softmax_attention(q[:, part].transpose(1, 2), k[:, part].transpose(1, 2), v,
                                                 scale=c ** -0.5, dropout=dropout, chunk=self.chunk)
            out = out + pi[:, n, None, None] * attended
        out = out.transpose(1, 2).reshape(b, c, h, w)
        return x + self.norm(self.out(out))
