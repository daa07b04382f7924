"""Softmax attention over query chunks: the memory of an attention map of all P2 positions.

At 800 x 1333 P2 holds ~67k positions and its pooled keys (or P3) ~17k: one float32 score map
is ~4.5 GB per image, and autograd would keep several. Computed ``chunk`` queries at a time, and
recomputed in the backward pass instead of stored (``torch.utils.checkpoint``), the memory is
that of one chunk's map; the result is the same to float32 round-off.
"""

import inspect

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["chunked_softmax_attention"]

# torch >= 1.11 takes use_reentrant (the non-reentrant form also works with inputs that need no
# gradient); older versions only have the reentrant one.
_CHECKPOINT_KWARGS = {"use_reentrant": False} if "use_reentrant" in inspect.signature(checkpoint).parameters \
    else {}


def _attend(q, k_t, v, key_bias, scale, dropout):
    scores = torch.bmm(q, k_t) * scale
    if key_bias is not None:
        scores = scores + key_bias
    probs = scores.softmax(dim=-1)
    if dropout > 0:
        probs = F.dropout(probs, dropout, training=True)
    return torch.bmm(probs, v)


def chunked_softmax_attention(q, k, v, scale, key_bias=None, dropout=0.0, chunk=4096):
    """``softmax(q k^T * scale + key_bias) v`` in float32 (float64 inputs: float64), ``chunk``
    queries at a time.

    Args:
        q: (B, N, d) queries; k: (B, M, d) keys; v: (B, M, e) values.
        key_bias: (B, M), added to every query's scores (or None).
        dropout: on the attention probabilities (pass 0 in eval mode).
        chunk: queries per chunk; with gradients needed and more than one chunk, each chunk's
            scores are recomputed in the backward pass (dropout masks included) instead of kept.
    Returns:
        (B, N, e), in ``v``'s dtype.
    """
    dtype = v.dtype
    work = torch.promote_types(dtype, torch.float32)
    q, k_t, v = q.to(work), k.to(work).transpose(1, 2), v.to(work)
    bias = None if key_bias is None else key_bias.to(work).unsqueeze(1)
    n = q.shape[1]
    if n <= chunk:
        return _attend(q, k_t, v, bias, scale, dropout).to(dtype)
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k_t, v))
    outs = []
    for start in range(0, n, chunk):
        args = (q[:, start:start + chunk], k_t, v, bias, scale, dropout)
        outs.append(checkpoint(_attend, *args, **_CHECKPOINT_KWARGS) if keep else _attend(*args))
    return torch.cat(outs, dim=1).to(dtype)
