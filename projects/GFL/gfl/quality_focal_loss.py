"""Quality Focal Loss (paper, Sec. 3: QFL).

The classification branch predicts a joint class-and-localisation-quality score: the target of
a positive location's GT class is the IoU y in [0, 1] between its predicted box and its GT box,
every other entry (other classes, background locations) has target 0. QFL is binary cross
entropy with that soft target, scaled by |y - sigma|^beta:

    QFL(sigma) = -|y - sigma|^beta ((1 - y) log(1 - sigma) + y log(sigma))

For y = 0 this is the focal loss' negative term with gamma = beta.
"""

import torch
import torch.nn.functional as F

__all__ = ["quality_focal_loss"]


def quality_focal_loss(logits, labels, quality, beta=2.0):
    """Elementwise QFL; the caller sums and normalises it.

    Args:
        logits: ``(M, K)`` classification logits.
        labels: ``(M,)`` class of each location's assigned GT, or K for background.
        quality: ``(M,)`` IoU targets; read only where ``labels < K``. Not differentiated.
        beta: the modulating exponent (2 in the paper).

    Returns:
        ``(M, K)`` loss. As in the official code, the gradient also flows through the
        modulating factor.
    """
    num_classes = logits.shape[1]
    target = torch.zeros_like(logits)
    pos = labels < num_classes
    target[pos, labels[pos]] = quality[pos].to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return bce * (logits.sigmoid() - target).abs().pow(beta)
