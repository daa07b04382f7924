"""The general distribution of a box side (paper, Sec. 3: DFL) and the conversions around it.

A box side is regressed as the distance from a location to that side, in units of the
level's stride. Instead of one number the head predicts, per side, logits over the n+1 integers
{0, 1, ..., n} (n = ``reg_max``); the distance is the expectation of the softmax distribution
(the integral): y_hat = sum_i P(y_i) y_i.

Box conventions: boxes are XYXY; ``ltrb`` are the distances (left, top, right, bottom) from a
point (x, y) to the four sides, all in the same units as the point.
"""

import torch

__all__ = ["integral", "distance_to_distribution", "ltrb_to_boxes", "boxes_to_ltrb"]


def integral(logits):
    """The integral: ``(..., n+1)`` logits -> ``(...)`` expected distances in [0, n]."""
    bins = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return (logits.softmax(dim=-1) * bins).sum(dim=-1)


def distance_to_distribution(distances, reg_max):
    """The inverse of :func:`integral` that DFL learns: the distribution that puts all
    its mass on the two integers around y, p(y_i) = y_{i+1} - y and p(y_{i+1}) = y - y_i, whose
    expectation is y. ``(...)`` distances in [0, n] -> ``(..., n+1)`` probabilities."""
    y = distances.clamp(0, reg_max)
    left = y.floor().clamp(max=reg_max - 1).long()
    w_right = y - left
    out = torch.zeros(*y.shape, reg_max + 1, dtype=y.dtype, device=y.device)
    out.scatter_(-1, left[..., None], (1 - w_right)[..., None])
    out.scatter_add_(-1, left[..., None] + 1, w_right[..., None])
    return out


def ltrb_to_boxes(points, ltrb):
    """``(M, 2)`` points and ``(M, 4)`` distances -> ``(M, 4)`` XYXY boxes."""
    return torch.cat([points - ltrb[:, :2], points + ltrb[:, 2:]], dim=1)


def boxes_to_ltrb(points, boxes):
    """``(M, 2)`` points and ``(M, 4)`` XYXY boxes -> ``(M, 4)`` distances to the four sides."""
    return torch.cat([points - boxes[:, :2], boxes[:, 2:] - points], dim=1)
