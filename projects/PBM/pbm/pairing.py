"""Pairs as the sample unit: IoF, the pair matching rule of the paired RPN and R-CNN, R2NMS."""

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, pairwise_ioa


def pairwise_iof(vis_boxes: Boxes, boxes: Boxes) -> torch.Tensor:
    """IoF(A, V) = |A & V| / |V| for every visible box V (rows) and box A (columns):
    detectron2's intersection-over-area of the second argument, transposed. A visible box of
    zero area has IoF 0 with everything."""
    return pairwise_ioa(boxes, vis_boxes).T


def match_pairs(full_quality, vis_quality, full_thresh, vis_thresh, neg_thresh,
                allow_low_quality_matches=False):
    """Labels samples (columns) against ground-truth pairs (rows) by the paired rule.

    A sample is positive for pair g when ``full_quality[g] >= full_thresh`` and
    ``vis_quality[g] >= vis_thresh`` (the pair with the best full quality among those wins);
    negative when its best ``full_quality`` over all pairs is below ``neg_thresh``; ignored
    otherwise (a good full box whose visible part does not fit). With
    ``allow_low_quality_matches``, each pair's best samples by full quality among those meeting
    its visible condition are positive for it too, so no pair is left without a sample.

    Returns ``(matched_idxs, labels)``: the pair of each sample (undefined where not positive)
    and labels 1 / 0 / -1 (int8).
    """
    num_gt, n = full_quality.shape
    device = full_quality.device
    if num_gt == 0:
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        return zeros, zeros.to(torch.int8)
    vis_ok = vis_quality >= vis_thresh
    paired = torch.where((full_quality >= full_thresh) & vis_ok, full_quality, -1.0)
    best, best_idx = paired.max(dim=0)
    max_full, argmax_full = full_quality.max(dim=0)
    labels = torch.full((n,), -1, dtype=torch.int8, device=device)
    labels[max_full < neg_thresh] = 0
    positive = best >= 0
    labels[positive] = 1
    matched = torch.where(positive, best_idx, argmax_full)
    if allow_low_quality_matches:
        q = torch.where(vis_ok, full_quality, torch.zeros_like(full_quality))
        per_gt = q.max(dim=1, keepdim=True).values
        gt_idx, sample_idx = torch.nonzero((q == per_gt) & (per_gt > 0), as_tuple=True)
        labels[sample_idx] = 1
        matched[sample_idx] = gt_idx
    return matched, labels


def split_ignore(instances):
    """(people, ignore region boxes) of one image's ground truth; ``gt_ignore`` marks the
    ignore regions (CrowdHuman's ``mask`` boxes and ``extra.ignore``), absent = none."""
    if not instances.has("gt_ignore"):
        return instances, instances.gt_boxes[:0]
    return instances[~instances.gt_ignore], instances.gt_boxes[instances.gt_ignore]


def ignored_by_regions(boxes: Boxes, person_iou: torch.Tensor, ignore_boxes: Boxes, thresh=0.5):
    """CrowdDet's ignore rule (lib/det_oprs/fpn_roi_target.py): a RoI whose IoU with every
    person is below ``thresh`` but which lies in an ignore region by at least ``thresh`` of its
    own area (|A & R| / |A|) is neither foreground nor background. ``person_iou`` is
    (people, RoIs). Returns a bool mask over the RoIs."""
    if len(ignore_boxes) == 0:
        return torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    if len(person_iou):
        best_person = person_iou.max(dim=0).values
    else:
        best_person = torch.zeros(len(boxes), device=boxes.device)
    in_region = pairwise_ioa(ignore_boxes, boxes).max(dim=0).values
    return (best_person < thresh) & (in_region >= thresh)


def r2nms(vis_boxes, scores, classes, iou_threshold):
    """NMS by representative region: greedy NMS (per class) whose overlap test is the IoU of
    the visible boxes. Returns the indices kept, by decreasing score; the caller keeps the
    full boxes (and everything else) at those indices."""
    return batched_nms(vis_boxes, scores, classes, iou_threshold)
