"""Distribution Focal Loss (paper, Sec. 3: DFL).

A box side y (in stride units) lies between the integers y_i <= y < y_{i+1}. DFL pushes the
predicted distribution's mass onto those two bins, with the weights that make its expectation y:

    DFL(S_i, S_{i+1}) = -((y_{i+1} - y) log(S_i) + (y - y_i) log(S_{i+1}))

where S = softmax(logits). Its minimum is at S_i = y_{i+1} - y, S_{i+1} = y - y_i.
"""

import torch.nn.functional as F

__all__ = ["distribution_focal_loss"]


def distribution_focal_loss(logits, target):
    """Elementwise DFL.

    Args:
        logits: ``(M, n+1)`` logits over the bins {0, ..., n}.
        target: ``(M,)`` distances, in [0, n). The head clamps them to n - 0.01 first, so that
            y_{i+1} <= n exists.

    Returns:
        ``(M,)`` loss.
    """
    left = target.long()
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = target - left.to(target.dtype)
    return (F.cross_entropy(logits, left, reduction="none") * w_left
            + F.cross_entropy(logits, right, reduction="none") * w_right)
