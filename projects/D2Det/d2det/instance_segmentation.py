"""D2Det's instance segmentation (paper Sec. 3.3): the dense local regression features of a box
are upsampled into a class-specific mask, a mask-IoU head predicts how good that mask is, and
a mask is scored by its box score plus 0.3 x its predicted mask IoU. With masks on, the cells'
overlap targets of dense regression are the instance mask itself (at 7 x 7) instead of the
inner-box rule.

Official: mmdet/models/mask_heads/D2Det_head.py (``MASK_ON``: ``deconv1``, ``deconv2``,
``D2Det_instance``, ``fcs``, ``fc_instance_iou``, ``get_target_mask``, ``get_target_maskiou``,
``_get_area_ratio``) and mmdet/models/detectors/D2Det.py (``forward_train``, ``simple_test``,
``get_mask_scores``) of JialeCao001/D2Det; the same in its mmdet 2.1 port.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BitMasks, Instances, PolygonMasks
from detectron2.structures.masks import polygons_to_bitmask


class D2DetMaskHead(nn.Module):
    """From the dense regression head's last features x (R, C, k, k):

    - mask logits (R, K, 4k, 4k): deconv 2x2/2 (C -> 256) -> GN(16) -> ReLU -> deconv 2x2/2
      (256 -> 256) -> ReLU -> 3x3 conv to one map per class;
    - mask IoU (R, K): the given class's mask logits, detached, max-pooled 4x4/4 (padding 1)
      back to k x k, sigmoid, concatenated to x (C + 1 channels) -> 2 FCs of 1024 (ReLU) ->
      one IoU per class.
    """

    def __init__(self, in_channels, num_classes, cells=7, deconv_dim=256, norm_groups=16,
                 fc_dim=1024, num_fc=2):
        super().__init__()
        self.deconv1 = nn.ConvTranspose2d(in_channels, deconv_dim, 2, stride=2)
        self.norm1 = nn.GroupNorm(norm_groups, deconv_dim)
        self.deconv2 = nn.ConvTranspose2d(deconv_dim, deconv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(deconv_dim, num_classes, 3, padding=1)
        self.fcs = nn.ModuleList(
            nn.Linear((in_channels + 1) * cells * cells if i == 0 else fc_dim, fc_dim) for i in range(num_fc))
        self.iou = nn.Linear(fc_dim, num_classes)
        # Official init_weights: mmcv kaiming_init (normal, fan-out, ReLU) for the 3x3 conv,
        # kaiming normal fan-out for the deconvs, kaiming uniform (a=1, fan-in) for the FCs,
        # N(0, 0.01) for the IoU output; biases 0.
        nn.init.kaiming_normal_(self.predictor.weight, mode="fan_out", nonlinearity="relu")
        for deconv in (self.deconv1, self.deconv2):
            nn.init.kaiming_normal_(deconv.weight, mode="fan_out", nonlinearity="relu")
        for fc in self.fcs:
            nn.init.kaiming_uniform_(fc.weight, a=1, mode="fan_in", nonlinearity="leaky_relu")
        nn.init.normal_(self.iou.weight, std=0.01)
        for m in (self.predictor, self.deconv1, self.deconv2, *self.fcs, self.iou):
            nn.init.zeros_(m.bias)

    def forward(self, x, classes):
        """x: (R, C, k, k) features; classes: (R,) the class of each box (its GT class in
        training, its predicted class at test). Returns mask logits (R, K, 4k, 4k) and
        mask-IoU predictions (R, K)."""
        m = F.relu(self.norm1(self.deconv1(x)))
        logits = self.predictor(F.relu(self.deconv2(m)))
        own = class_maps(logits, classes).detach()[:, None]
        own = F.max_pool2d(own, 4, 4, 1)
        y = torch.cat([x, own.sigmoid()], dim=1).flatten(1)
        for fc in self.fcs:
            y = F.relu(fc(y))
        return logits, self.iou(y)


def class_maps(x, classes):
    """Each RoI's entry for its own class: (R, K, ...) -> (R, ...)."""
    return x[torch.arange(len(x), device=x.device), classes]


def overlap_from_masks(mask_targets, cells=7):
    """The dense-regression overlap targets with masks on (official ``get_target_mask``): the
    (R, M, M) mask targets bilinearly resized by 1/4 (M = 4 x cells), then > 0.5."""
    if len(mask_targets) == 0:
        return mask_targets.new_zeros((0, cells, cells), dtype=torch.float32)
    small = F.interpolate(mask_targets[None].float(), scale_factor=cells / mask_targets.shape[-1],
                          mode="bilinear", align_corners=False)[0]
    return (small > 0.5).float()


def area_ratios(boxes, gt_masks):
    """Per RoI, the fraction of its GT's mask pixels inside the RoI (official
    ``_get_area_ratio``): the RoI's corners truncated to integers, the crop
    ``[y1 : y2 + 1, x1 : x2 + 1]`` inclusive of both ends. boxes (R, 4); gt_masks: the GT mask
    of each RoI, ``BitMasks`` (R, H, W) or ``PolygonMasks`` (rasterised as a full-image bitmap
    would be, but only over the RoI and over the polygon's own extent)."""
    if isinstance(gt_masks, BitMasks):
        # Integral images: S[r, c] = pixels in rows < r and columns < c.
        m = gt_masks.tensor
        h, w = m.shape[-2:]
        s = F.pad(m.to(torch.int64).cumsum(1).cumsum(2), (1, 0, 1, 0))
        c = boxes.detach().to(torch.int64)
        x1, y1 = c[:, 0].clamp(0, w), c[:, 1].clamp(0, h)
        x2, y2 = (c[:, 2] + 1).clamp(0, w), (c[:, 3] + 1).clamp(0, h)
        r = torch.arange(len(m), device=m.device)
        inside = s[r, y2, x2] - s[r, y1, x2] - s[r, y2, x1] + s[r, y1, x1]
        full = s[:, h, w]
    elif isinstance(gt_masks, PolygonMasks):
        inside, full = [], []
        for polygons, (x1, y1, x2, y2) in zip(gt_masks.polygons, boxes.detach().to(torch.int64).tolist()):
            inside.append(_pixels(polygons, x1, y1, y2 - y1 + 1, x2 - x1 + 1))
            xy = np.concatenate(polygons).reshape(-1, 2)
            left, top = np.floor(xy.min(axis=0)).astype(int)
            right, bottom = np.ceil(xy.max(axis=0)).astype(int)
            full.append(_pixels(polygons, left, top, bottom - top + 1, right - left + 1))
        inside, full = boxes.new_tensor(inside), boxes.new_tensor(full)
    else:
        raise TypeError(f"D2Det's mask branch needs BitMasks or PolygonMasks, got {type(gt_masks).__name__}")
    return inside.float() / (full.float() + 1e-7)


def _pixels(polygons, x0, y0, h, w):
    """How many pixels of the h x w window at (x0, y0) of the image the polygons cover, counted
    as in their full-image rasterisation (an integer shift keeps every pixel's membership)."""
    shifted = [(p.reshape(-1, 2) - (x0, y0)).reshape(-1) for p in polygons]
    return int(polygons_to_bitmask(shifted, max(h, 1), max(w, 1)).sum())


def mask_iou_targets(mask_logits, mask_targets, ratios):
    """The IoU of each predicted mask with its whole GT instance (official
    ``get_target_maskiou``). mask_logits (R, M, M) of the GT class; a pixel is predicted when
    its *logit* is > 0.5 (the official compares the logits, not the probabilities, with 0.5).
    The GT's full area, in the RoI's M x M units, is its area inside the RoI over ``ratios``."""
    pred = (mask_logits > 0.5).float()
    target = mask_targets.float()
    overlap = (pred * target).sum((-1, -2))
    full = target.sum((-1, -2)) / (ratios + 1e-7)
    return (overlap / ((pred.sum((-1, -2)) + full - overlap).abs() + 1e-7)).clamp(min=0)


def mask_losses(mask_logits, mask_iou_pred, classes, mask_targets, ratios, mask_weight=1.0,
                iou_weight=0.5):
    """The official losses of the mask branch over the R sampled positives:

    - ``loss_mask``: mean sigmoid BCE of the GT class's mask logits against the targets;
    - ``loss_mask_iou``: mean over the R positives of w (p - t)^2, p the GT class's predicted
      IoU, t :func:`mask_iou_targets`, w = 1 where 0.1 < t <= 1 (else 0), x ``iou_weight``.
    """
    if len(mask_logits) == 0:
        zero = mask_logits.sum() * 0 + mask_iou_pred.sum() * 0
        return {"loss_mask": zero, "loss_mask_iou": zero}
    logits = class_maps(mask_logits, classes)
    loss_mask = F.binary_cross_entropy_with_logits(logits, mask_targets.to(logits.dtype), reduction="mean")
    t = mask_iou_targets(logits.detach(), mask_targets, ratios)
    w = ((t > 0.1) & (t <= 1.0)).to(t.dtype)
    loss_iou = (w * (class_maps(mask_iou_pred, classes) - t) ** 2).mean()
    return {"loss_mask": mask_weight * loss_mask, "loss_mask_iou": iou_weight * loss_iou}


def mask_scores(mask_iou_pred, classes, box_scores, weight=0.3):
    """Official ``get_mask_scores``: box score + ``weight`` x the predicted class's mask IoU."""
    return box_scores + weight * class_maps(mask_iou_pred, classes)


class MaskScoreCOCOEvaluator(COCOEvaluator):
    """detectron2's COCOEvaluator for one task. For "segm", each mask is ranked by its
    ``mask_scores`` (D2Det's score of a mask) instead of its box's ``scores``; for "bbox", the
    masks are not encoded. Use one of each (``DatasetEvaluators``), each with its own
    ``output_dir``, to evaluate box AP with the box scores and mask AP with the mask scores,
    as the official code does."""

    def __init__(self, dataset_name, task, **kwargs):
        super().__init__(dataset_name, tasks=(task,), **kwargs)
        self._task = task

    def process(self, inputs, outputs):
        converted = []
        for output in outputs:
            output = dict(output)
            if "instances" in output:
                instances = Instances(output["instances"].image_size, **output["instances"].get_fields())
                if self._task == "segm" and instances.has("mask_scores"):
                    instances.scores = instances.mask_scores
                if self._task == "bbox" and instances.has("pred_masks"):
                    instances.remove("pred_masks")
                output["instances"] = instances
            converted.append(output)
        super().process(inputs, converted)
