"""Confidence weighting and the two losses of AutoAssign (Sec. 3.3 of the paper; official
``positive_bag_loss``, ``negative_bag_loss`` and the ``box_prob`` block of ``losses``).

Every location inside a GT box, on every level, is a candidate of that GT: a (location, GT)
pair. The functions below work on the P pairs of one image, each with the index of its GT.

Positive side. A pair's joint confidence is
``P+ = sigmoid(cls)[GT class] * sigmoid(objectness) * exp(-5 * GIoU loss)``; its weight
``w+ = exp(P+ / tau) * G`` (G: the centre prior), normalised over the GT's pairs; the GT's loss
is ``-log(sum w+ P+)``. The weights are not detached: confidence and prior get gradients
through them.

Negative side. ``v = 1 / (1 - IoU)`` of the pair's location (IoU of its predicted box with the
GTs, maximum over all GTs), min-max normalised over the GT's pairs, is the probability that
the location is a positive of that GT; a location's negative confidence on the GT's class is
scaled by ``1 - v``.
"""

import torch
from torch.nn import functional as F

__all__ = ["positive_weights", "positive_loss", "negative_weights", "negative_loss"]

EPS = 1e-12  # the official normalisation eps


def _segment_sum(x, index, n):
    return x.new_zeros(n).index_add(0, index, x)


def positive_weights(p, prior, gt_index, num_gt, tau=1.0 / 3.0):
    """``w+`` of each pair: ``exp(p / tau) * prior`` divided by its sum over the pair's GT.

    Args:
        p: ``(P,)`` joint confidence ``P+`` of each pair.
        prior: ``(P,)`` centre prior G of each pair.
        gt_index: ``(P,)`` the pair's GT, in ``[0, num_gt)``.
        num_gt: number of GTs of the image.
    """
    weight = torch.exp(p / tau) * prior
    return weight / _segment_sum(weight, gt_index, num_gt)[gt_index].clamp(min=EPS)


def positive_loss(p, prior, gt_index, num_gt, tau=1.0 / 3.0):
    """``(num_gt,)`` BCE(sum over the GT's pairs of ``w+ * p``, 1). A GT without any pair (a box
    so small that no location lies inside it) has no candidate to learn from: its loss is 0
    (the official code adds the constant BCE(0, 1) = 100, which has no gradient either)."""
    bag = _segment_sum(positive_weights(p, prior, gt_index, num_gt, tau) * p, gt_index, num_gt)
    # bag <= max(p) <= 1 up to rounding, which binary_cross_entropy would reject.
    loss = F.binary_cross_entropy(bag.clamp(max=1.0), torch.ones_like(bag), reduction="none")
    has_pair = torch.zeros(num_gt, dtype=torch.bool, device=p.device)
    has_pair[gt_index] = True
    return torch.where(has_pair, loss, torch.zeros_like(loss))


@torch.no_grad()
def negative_weights(ious, loc_index, gt_index):
    """``(P,)`` the probability that each pair's location is a positive of the pair's GT.

    With ``iou`` the IoU of the location's predicted box with the GTs, maximum over all GTs
    of the image (not only the pair's), ``v = 1 / (1 - iou)`` is min-max normalised over
    each GT's pairs, ``(v - min + eps) / (max - min + eps)``: in (0, 1], 1 at the GT's best
    location.

    Args:
        ious: ``(G, A)`` IoU of every GT with the predicted box of every location.
        loc_index, gt_index: ``(P,)`` each pair's location and GT.
    """
    v = 1 / (1 - ious.max(dim=0).values[loc_index]).clamp(min=EPS)
    num_gt = len(ious)
    lo = v.new_zeros(num_gt).scatter_reduce(0, gt_index, v, "amin", include_self=False)[gt_index]
    hi = v.new_zeros(num_gt).scatter_reduce(0, gt_index, v, "amax", include_self=False)[gt_index]
    return (v - lo + EPS) / (hi - lo + EPS)


def negative_loss(scores, pos_prob, gamma=2.0):
    """Elementwise ``q^gamma * BCE(q, 0)`` with ``q = scores * (1 - pos_prob)``.

    Args:
        scores: joint confidence ``sigmoid(cls) * sigmoid(objectness)``, any shape.
        pos_prob: same shape, the probability of being a positive on that class (0 where the
            location lies in no GT box of the class).
    """
    q = scores * (1 - pos_prob)
    return q**gamma * F.binary_cross_entropy(q, torch.zeros_like(q), reduction="none")
