"""The distributional ranking loss (paper Sec. 3, Eq. 9-12; official ``sigmoid_dr_loss.py``
of idstcv/DR_loss).

Over a set of (anchor, class) entries with confidences p = sigmoid(logit):

    negatives: q-_j = softmax_j(p-_j / lambda-),   P- = sum_j q-_j p-_j   (hard negatives weigh more)
    positives: q+_i = softmax_i(-p+_i / lambda+),  P+ = sum_i q+_i p+_i   (hard positives weigh more)
    loss = tau / L * log(1 + exp(L (P- - P+ + margin)))

with P+ = 1 where the set has no positive. Gradients flow through the softmax weights too, as
in the official code.
"""

import math

import torch
from torch.nn import functional as F

NEG_LAMBDA = 0.1 / math.log(3.5)


def dr_loss(logits, targets, margin=0.5, pos_lambda=1.0, neg_lambda=NEG_LAMBDA, L=6.0, tau=4.0):
    """The DR loss of one ranking set.

    Args:
        logits: any shape, the classification logits.
        targets: the same shape: 1 for a positive entry (an anchor's GT class), 0 for a negative
            (every other class of any anchor that is not ignored), -1 ignored.
    Returns:
        a scalar, computed in float32 (or float64 for float64 logits) whatever the input dtype.
    """
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    p = logits.sigmoid()
    neg = p[targets == 0]
    pos = p[targets == 1]
    neg_dist = (F.softmax(neg / neg_lambda, dim=0) * neg).sum()
    pos_dist = (F.softmax(-pos / pos_lambda, dim=0) * pos).sum() if pos.numel() else 1.0
    # softplus(x) = log(1 + exp(x)); here |x| <= 1.5 L, far from softplus's linear cut-off
    return tau * F.softplus(L * (neg_dist - pos_dist + margin)) / L
