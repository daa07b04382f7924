"""Soft-NMS (Bodla et al., "Soft-NMS: Improving Object Detection With One Line of Code",
ICCV 2017), in torch.

Self-contained (torch and torchvision only): another project can copy this file as it is.
Instead of deleting every box that overlaps a kept box by more than a threshold, soft-NMS
decays its score:

    linear:   s_i <- s_i * (1 - IoU(M, b_i))   if IoU(M, b_i) > iou_threshold, else unchanged
    gaussian: s_i <- s_i * exp(-IoU(M, b_i)^2 / sigma)

where M is the highest-scoring box still left, then drops boxes whose score fell below
``min_score``.
"""

import torch
from torchvision.ops import box_iou

__all__ = ["soft_nms", "batched_soft_nms"]


def soft_nms(boxes, scores, method="linear", iou_threshold=0.5, sigma=0.5, min_score=1e-3):
    """
    Args:
        boxes (Tensor): (N, 4) boxes ``(x1, y1, x2, y2)``.
        scores (Tensor): (N,) scores.
        method (str): "linear" or "gaussian".
        iou_threshold (float): the linear method's threshold (unused by "gaussian").
        sigma (float): the gaussian method's sigma (unused by "linear").
        min_score (float): boxes whose decayed score is below it are removed.

    Returns:
        keep (Tensor): int64 indices of the kept boxes, in decreasing order of decayed score.
        new_scores (Tensor): their decayed scores.
    """
    if method not in ("linear", "gaussian"):
        raise ValueError(f"soft_nms method must be 'linear' or 'gaussian', got {method!r}")
    scores = scores.clone()
    left = torch.nonzero(scores >= min_score, as_tuple=True)[0]
    keep, new_scores = [], []
    while left.numel() > 0:
        top = torch.argmax(scores[left])
        m = left[top]
        keep.append(m)
        new_scores.append(scores[m])
        left = torch.cat([left[:top], left[top + 1:]])
        if left.numel() == 0:
            break
        iou = box_iou(boxes[m][None], boxes[left])[0]
        if method == "linear":
            decay = torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
        else:
            decay = torch.exp(-(iou * iou) / sigma)
        scores[left] = scores[left] * decay
        left = left[scores[left] >= min_score]
    if not keep:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device), scores.new_zeros(0)
    return torch.stack(keep), torch.stack(new_scores)


def batched_soft_nms(boxes, scores, idxs, **kwargs):
    """Soft-NMS within each category (``idxs``): boxes of different categories never decay
    each other. Same arguments and results as :func:`soft_nms`."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device), scores.new_zeros(0)
    # Move each category's boxes far enough apart that they cannot overlap (torchvision's
    # batched_nms trick).
    shift = idxs.to(boxes) * (boxes.max() - boxes.min() + 1)
    return soft_nms(boxes + shift[:, None], scores, **kwargs)
