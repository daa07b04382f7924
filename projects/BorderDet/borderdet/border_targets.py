"""Border targets (BorderDet Sec. 3.3; official ``get_ground_truth``): every location whose
coarse FCOS box overlaps a GT with IoU >= 0.6 is a border positive of that GT's class (the GT
with the highest IoU); its regression target is the offset of each GT side from the coarse
box's side, in units of 0.5 x the coarse box's width (x sides) or height (y sides)."""

import torch
from detectron2.structures import Boxes, pairwise_iou

__all__ = ["border_targets", "apply_border_deltas"]


@torch.no_grad()
def border_targets(coarse_boxes, gt_boxes, gt_classes, num_classes, iou_thresh=0.6,
                   bbox_std=(0.5, 0.5, 0.5, 0.5)):
    """
    Args:
        coarse_boxes: ``(A, 4)`` XYXY coarse boxes of one image (detached).
        gt_boxes: ``(G, 4)`` XYXY; gt_classes: ``(G,)``.

    Returns:
        labels ``(A,)`` (``num_classes`` = background) and deltas ``(A, 4)`` (x1, y1, x2, y2
        offsets; meaningful at positives only).
    """
    labels = torch.full((len(coarse_boxes),), num_classes, dtype=torch.long, device=coarse_boxes.device)
    if len(gt_boxes) == 0:
        return labels, torch.zeros_like(coarse_boxes)
    iou = pairwise_iou(Boxes(coarse_boxes), Boxes(gt_boxes))  # (A, G)
    best_iou, best_gt = iou.max(dim=1)
    positive = best_iou >= iou_thresh
    labels[positive] = gt_classes[best_gt[positive]]
    wh = (coarse_boxes[:, 2:] - coarse_boxes[:, :2]).repeat(1, 2)
    std = coarse_boxes.new_tensor(bbox_std)
    deltas = (gt_boxes[best_gt] - coarse_boxes) / (wh * std).clamp(min=1e-6)
    return labels, deltas


def apply_border_deltas(coarse_boxes, deltas, bbox_std=(0.5, 0.5, 0.5, 0.5)):
    """Inverse of the targets: coarse + deltas * std * [w, h, w, h]."""
    wh = coarse_boxes[..., 2:] - coarse_boxes[..., :2]
    wh = torch.cat([wh, wh], dim=-1)
    return coarse_boxes + deltas * coarse_boxes.new_tensor(bbox_std) * wh
