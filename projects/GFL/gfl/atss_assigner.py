"""Adaptive Training Sample Selection (Zhang et al., "Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection", CVPR 2020, Algorithm 1), the
assigner GFL trains with (GFL paper, Sec. 4; official ``ATSSAssigner(topk=9)``).

For each GT box g:
  1. on every level, its candidates are the ``topk`` anchors whose centres are nearest (L2) to
     g's centre;
  2. the IoU threshold is t_g = mean + std of the candidates' IoUs with g (std unbiased, as
     ``torch.std``);
  3. a candidate is positive for g if its IoU >= t_g and its centre lies inside g (by more than
     0.01 px, as the official code).
An anchor positive for several GTs goes to the one with the highest IoU.

Ties are broken deterministically: among equally distant anchors the one with the lower index
(earlier in the level's row-major order) becomes a candidate first; between GTs with equal IoU
the lower GT index wins.
"""

import torch
from detectron2.structures import Boxes, pairwise_iou

__all__ = ["atss_assign"]


@torch.no_grad()
def atss_assign(anchors_per_level, gt_boxes, topk=9):
    """
    Args:
        anchors_per_level: list of ``(A_l, 4)`` XYXY anchors, one tensor per level.
        gt_boxes: ``(G, 4)`` XYXY GT boxes of one image.
        topk: candidates per level and GT (k in ATSS).

    Returns:
        ``(sum A_l,)`` long tensor: the index of each anchor's GT, or -1 for background.
    """
    anchors = torch.cat(anchors_per_level)
    num_anchors, num_gt = len(anchors), len(gt_boxes)
    matched = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if num_gt == 0:
        return matched

    ious = pairwise_iou(Boxes(anchors), Boxes(gt_boxes))  # (A, G)
    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    distances = torch.cdist(anchor_centers, gt_centers)  # (A, G)

    candidates, start = [], 0
    for level in anchors_per_level:
        end = start + len(level)
        order = distances[start:end].argsort(dim=0, stable=True)
        candidates.append(order[: min(topk, len(level))] + start)
        start = end
    candidates = torch.cat(candidates)  # (C, G): anchor indices, per GT column
    gt_index = torch.arange(num_gt, device=anchors.device).expand_as(candidates)

    candidate_ious = ious[candidates, gt_index]
    # One candidate in all (a single one-location level) has no spread: threshold = its IoU.
    std = candidate_ious.std(dim=0) if len(candidates) > 1 else torch.zeros_like(candidate_ious[0])
    is_pos = candidate_ious >= candidate_ious.mean(dim=0) + std

    cx, cy = anchor_centers[candidates, 0], anchor_centers[candidates, 1]
    gx0, gy0, gx1, gy1 = gt_boxes.unbind(dim=1)
    inside = torch.stack([cx - gx0, cy - gy0, gx1 - cx, gy1 - cy]).amin(dim=0) > 0.01
    is_pos &= inside

    # IoU of each (anchor, GT) pair that passed; -1 elsewhere. max() returns the first of equal
    # maxima, i.e. the lowest GT index.
    pos_ious = torch.full_like(ious, -1.0)
    pos_ious[candidates[is_pos], gt_index[is_pos]] = candidate_ious[is_pos]
    best_iou, best_gt = pos_ious.max(dim=1)
    return torch.where(best_iou >= 0, best_gt, matched)
