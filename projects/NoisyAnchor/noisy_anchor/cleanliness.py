"""Cleanliness and soft labels (paper Sec. 3.2), re-weighting (Sec. 3.3) and the focal loss
with soft targets; official: ``get_ground_truth`` and ``soft_sigmoid_focal_loss`` in
detectron2/modeling/meta_arch/retinanet_noisy.py of henrylee2570/NoisyAnchor.

For the positive anchors of one image (duplicates kept), with ``loc`` the IoU of each one's
(detached) predicted box with its GT and ``cls`` its (detached) confidence in the GT class:

    soft label:  s = alpha loc / mean(loc) + (1 - alpha) cls / mean(cls),
                 rescaled linearly from [min s, max s] to [mean(loc), 1];
    weight:      r = alpha f(loc) / mean f(loc) + (1 - alpha) f(cls) / mean f(cls),  f(x) = 1 / (1 - x).

The official code divides by zero in three cases; each is guarded here (README, Deviations):
all soft labels equal (one positive, or equal scores) -> every soft label 1; mean(loc) = 0
(no predicted box overlaps its GT) -> loc / mean(loc) = 1; x = 1 in f -> 1 - x is clamped at
2^-24, the gap below 1 in float32, so f stays finite and equals the official for every x < 1.
"""

import torch
from torch.nn import functional as F

EPS = 2.0 ** -24


def _over_mean(x):
    mean = x.mean()
    return x / mean if mean > 0 else torch.ones_like(x)


def soft_labels(loc, cls, alpha=0.75):
    s = alpha * _over_mean(loc) + (1 - alpha) * _over_mean(cls)
    low = loc.mean()
    spread = s.max() - s.min()
    if not spread > 0:
        return torch.ones_like(s)
    return low + (s - s.min()) * ((1.0 - low) / spread)


def reweighting(loc, cls, alpha=0.75):
    def f(x):
        return 1 / (1 - x).clamp(min=EPS)

    return alpha * _over_mean(f(loc)) + (1 - alpha) * _over_mean(f(cls))


def soft_focal_loss(logits, targets, alpha=0.5, gamma=2.0):
    """Element-wise focal loss against targets t in [0, 1]:

        -t alpha (1 - p)^gamma log p - (1 - t) (1 - alpha) p^gamma log(1 - p),

    the official's formula, with log p and log(1 - p) as log-sigmoids (the official's
    log(sigmoid(x)) is -inf, and the loss NaN or inf, once sigmoid saturates in float32)."""
    p = torch.sigmoid(logits)
    term1 = (1 - p) ** gamma * F.logsigmoid(logits)
    term2 = p ** gamma * F.logsigmoid(-logits)
    return -targets * term1 * alpha - (1 - targets) * term2 * (1 - alpha)
