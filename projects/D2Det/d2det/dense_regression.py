"""Dense local regression (paper Sec. 3.1): every cell of a k x k grid over a RoI predicts the
distances from its point to the four sides of the object box, plus a binary overlap score
saying whether the cell lies on the object; the box is the average of the confident cells'
boxes.

Official: mmdet/models/mask_heads/D2Det_head.py (``D2DetHead``: ``get_target``,
``get_bboxes_avg``), mmdet/models/detectors/D2Det.py (``_random_jitter``, the losses) and
mmdet/models/losses/iou_loss.py of JialeCao001/D2Det.

Distances are ordered (left, right, top, bottom), as in the official code, and measured in
units of the RoI's width (left, right) and height (top, bottom).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.layers import Conv2d


def cell_points(boxes, size):
    """Centres of the size x size cells of each box: x (R, 1, size), y (R, size, 1); cell
    (j, i) has its point at ``(x1 + (i + 0.5) / size * w, y1 + (j + 0.5) / size * h)``."""
    frac = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x = boxes[:, 0, None] + w[:, None] * frac
    y = boxes[:, 1, None] + h[:, None] * frac
    return x[:, None, :], y[:, :, None]


def dense_targets(rois, gt_boxes, size=7):
    """
    Args:
        rois (Tensor): (R, 4) RoIs (the jittered proposals).
        gt_boxes (Tensor): (R, 4) the GT box each RoI is matched to.

    Returns:
        ltrb (Tensor): (R, 4, size, size) distances from each cell's point to the GT's left,
            right, top and bottom sides, in units of the RoI's width / height.
        overlap (Tensor): (R, size, size), 1.0 where the point lies inside the GT by at least one
            cell pitch on every side, else 0.0. The pitch is ``w / (size - 1)`` and
            ``h / (size - 1)``, as in the official ``get_target``.
    """
    x, y = cell_points(rois, size)
    w = (rois[:, 2] - rois[:, 0])[:, None, None]
    h = (rois[:, 3] - rois[:, 1])[:, None, None]
    gx1, gy1, gx2, gy2 = (g[:, None, None] for g in gt_boxes.unbind(1))
    left, right, top, bottom = x - gx1, gx2 - x, y - gy1, gy2 - y
    pitch_x, pitch_y = w / (size - 1), h / (size - 1)
    overlap = (left >= pitch_x) & (right >= pitch_x) & (top >= pitch_y) & (bottom >= pitch_y)
    shape = (rois.shape[0], size, size)
    ltrb = torch.stack([(left / w).expand(shape), (right / w).expand(shape),
                        (top / h).expand(shape), (bottom / h).expand(shape)], dim=1)
    return ltrb, overlap.to(rois.dtype)


def decode_dense(rois, ltrb):
    """The box each cell predicts: (R, size, size, 4) ``(x1, y1, x2, y2)`` from (R, 4, size,
    size) normalised (left, right, top, bottom) distances. Inverse of :func:`dense_targets`."""
    x, y = cell_points(rois, ltrb.shape[-1])
    w = (rois[:, 2] - rois[:, 0])[:, None, None]
    h = (rois[:, 3] - rois[:, 1])[:, None, None]
    left, right, top, bottom = ltrb.unbind(1)
    return torch.stack([x - left * w, y - top * h, x + right * w, y + bottom * h], dim=-1)


def average_cell_boxes(cell_boxes, overlap_logits):
    """The RoI's box (R, 4): the mean of the boxes of the cells whose overlap logit is > 0.
    A RoI with no such cell averages all its cells (the official code would output a zero
    box; README, deviations)."""
    confident = (overlap_logits > 0).flatten(1).to(cell_boxes.dtype)
    confident[confident.sum(dim=1) == 0] = 1.0
    boxes = cell_boxes.flatten(1, 2)
    return (boxes * confident[..., None]).sum(dim=1) / confident.sum(dim=1, keepdim=True)


def d2det_iou_loss(pred, target, eps=1e-6):
    """Per-box IoU loss of the official code (losses/iou_loss.py): -log(IoU), with IoU <= 0.1
    raised by 0.1 (so a cell far off costs at most -log(0.1)). (N, 4) boxes -> (N,)."""
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(dim=1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(dim=1)
    iou = (inter / (area_p + area_t - inter).clamp(min=eps)).clamp(min=eps)
    iou = torch.where(iou > 0.1, iou, iou + 0.1)
    return -torch.log(iou)


def jitter_boxes(boxes, amplitude, image_size):
    """Shifts each box's centre by up to ``amplitude`` x its size and scales its width and
    height by a factor in [1 - amplitude, 1 + amplitude] (uniform), then clips it to the image
    (official ``_random_jitter``)."""
    u = torch.empty_like(boxes).uniform_(-amplitude, amplitude)
    ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = (boxes[:, 2:] - boxes[:, :2]).abs()
    ctr = ctr + wh * u[:, :2]
    wh = wh * (1 + u[:, 2:])
    out = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1)
    h, w = image_size
    return torch.stack([out[:, 0].clamp(0, w), out[:, 1].clamp(0, h),
                        out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)], dim=1)


class DenseRegressionHead(nn.Module):
    """RoIAlign features (R, C, 2k, 2k) -> ``num_conv`` 3x3 convs with GN and ReLU (the first
    one stride 2) -> per-cell (left, right, top, bottom) distances (ReLU) (R, 4, k, k) and
    overlap logits (R, k, k)."""

    def __init__(self, in_channels, conv_dim=576, num_conv=8, norm_groups=36, conv_groups=1):
        super().__init__()
        convs = []
        for i in range(num_conv):
            conv = Conv2d(in_channels if i == 0 else conv_dim, conv_dim, 3, stride=2 if i == 0 else 1,
                          padding=1, groups=1 if i == 0 else conv_groups, bias=False,
                          norm=nn.GroupNorm(norm_groups, conv_dim),
                          activation=F.relu)
            # mmcv's kaiming_init: normal, fan_out, ReLU gain.
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            convs.append(conv)
        self.convs = nn.Sequential(*convs)
        self.ltrb = nn.Conv2d(conv_dim, 4, 3, padding=1)
        self.overlap = nn.Conv2d(conv_dim, 1, 3, padding=1)
        for layer in (self.ltrb, self.overlap):
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.zeros_(layer.bias)

    def forward(self, x, return_features=False):
        x = self.convs(x)
        out = (F.relu(self.ltrb(x)), self.overlap(x)[:, 0])
        return (*out, x) if return_features else out


REG_LOSS_WEIGHTINGS = ("released", "per_cell")


def dense_regression_losses(rois, gt_boxes, ltrb_pred, overlap_logits, reg_weight=2.0,
                            overlap_weight=1.0, weighting="released", overlap=None):
    """The dense regression losses of a set of RoIs: the IoU loss L of every cell's decoded
    box against the GT, weighted by the overlap targets m, and the BCE of the overlap logits,
    averaged over the N cells of all RoIs (the official ``mean`` reduction). ``weighting``:
    "released", mean(L) * mean(m) (the released mmdet 1.1 code, whose (N,) loss times (N, 1)
    weight broadcasts to N x N); "per_cell", mean(L * m) (the mmdet 2.1 port). ``overlap``:
    (R, k, k) targets m to use instead of the inner-box rule of :func:`dense_targets` (with
    masks on, the instance masks)."""
    if weighting not in REG_LOSS_WEIGHTINGS:
        raise ValueError(
            f"MODEL.D2DET.REG_LOSS_WEIGHTING must be one of {REG_LOSS_WEIGHTINGS}, got {weighting!r}")
    size = ltrb_pred.shape[-1]
    if overlap is None:
        _, overlap = dense_targets(rois, gt_boxes, size)
    overlap = overlap.to(ltrb_pred.dtype)
    cells = decode_dense(rois, ltrb_pred).reshape(-1, 4)
    gt = gt_boxes[:, None, :].expand(-1, size * size, 4).reshape(-1, 4)
    n = max(overlap.numel(), 1)
    losses, m = d2det_iou_loss(cells, gt), overlap.reshape(-1)
    if weighting == "released":
        iou_loss = losses.sum() / n * (m.sum() / n)
    else:
        iou_loss = (losses * m).sum() / n
    bce = F.binary_cross_entropy_with_logits(overlap_logits, overlap, reduction="sum")
    bce = bce / max(overlap.numel(), 1)
    return {"loss_dense_reg": reg_weight * iou_loss, "loss_overlap": overlap_weight * bce}


__all__ = [
    "cell_points", "dense_targets", "decode_dense", "average_cell_boxes", "d2det_iou_loss",
    "jitter_boxes", "DenseRegressionHead", "dense_regression_losses",
]
