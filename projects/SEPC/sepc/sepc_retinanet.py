"""RetinaNet with the SEPC head, and the official neck (P6 from C5, no ReLU before P7).

detectron2's RetinaNet, with three mechanics switchable to those of mmdetection 1.1's
RetinaHead, which the official numbers were trained and tested with (``MODEL.SEPC``):

- ``LOSS_NORMALIZER "batch"``: both losses divided by this process's positives, each image
  counting at least 1 (``anchor_target``'s ``num_total_pos``); "ema": detectron2's moving
  average of the positives count.
- ``LOW_QUALITY_MATCHES "gt"``: an anchor tied at a GT's best IoU becomes a positive of that
  GT (a later GT overwrites an earlier one: ``MaxIoUAssigner``, ``gt_max_assign_all``);
  "anchor": detectron2's ``Matcher``, which makes it positive for its own best GT.
- ``TEST_CANDIDATES "anchors"``: per level, the 1000 anchors with the highest score over
  classes, then every class above the threshold, boxes clipped to the image before NMS
  (``get_bboxes_single``, ``multiclass_nms``); "pairs": detectron2's top 1000 (anchor, class)
  pairs, unclipped.
"""

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms, cat
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from fvcore.nn import sigmoid_focal_loss_jit
from torch.nn import functional as F

from .head import SEPCHead
from .vendored import resnet_fpn_p6p7

__all__ = ["SEPCRetinaNet", "GTBestAnchorMatcher", "build_sepc_resnet_fpn_backbone"]

CHOICES = {
    "HEAD": ("sepc", "retinanet"),
    "LOSS_NORMALIZER": ("batch", "ema"),
    "LOW_QUALITY_MATCHES": ("gt", "anchor"),
    "TEST_CANDIDATES": ("anchors", "pairs"),
}


@BACKBONE_REGISTRY.register()
def build_sepc_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-FPN with P3-P7 as the official neck builds them (mmdetection 1.1 FPN with
    ``add_extra_convs=True``: P6 = 3x3/2 conv of C5, P7 = 3x3/2 conv of P6 without a ReLU in
    between; detectron2's RetinaNet neck has that ReLU)."""
    return resnet_fpn_p6p7(cfg, input_shape, in_feature="res5", relu_before_p7=False)


class GTBestAnchorMatcher(Matcher):
    """detectron2's Matcher (IoU thresholds and labels) whose low-quality matches are
    mmdetection's: every anchor whose IoU with a GT equals that GT's best IoU is matched to
    that GT and made positive, the highest-index GT winning a tie between GTs (mmdetection
    loops over the GTs in order). A GT whose best IoU is 0 (a degenerate box) gets none."""

    def __init__(self, thresholds, labels):
        super().__init__(thresholds, labels, allow_low_quality_matches=False)

    def __call__(self, match_quality_matrix):
        matches, labels = super().__call__(match_quality_matrix)
        if match_quality_matrix.numel() == 0:
            return matches, labels
        best = match_quality_matrix.max(dim=1, keepdim=True).values  # (G, 1)
        ties = (match_quality_matrix == best) & (best > 0)  # (G, R)
        order = torch.arange(1, len(best) + 1, device=ties.device)[:, None]
        last = (ties * order).max(dim=0).values  # 1 + the last GT an anchor ties with, or 0
        low_quality = last > 0
        matches[low_quality] = last[low_quality] - 1
        labels[low_quality] = 1
        return matches, labels


@META_ARCH_REGISTRY.register()
class SEPCRetinaNet(RetinaNet):
    """detectron2's RetinaNet (assignment, focal + SmoothL1 losses, inference) with the SEPC
    head (or, ``MODEL.SEPC.HEAD "retinanet"``, detectron2's RetinaNet head: the baseline with
    the same mechanics) and the mechanics chosen above. Anchors are laid on the head's output maps, which
    with unpadded final convs are 2 px smaller than the pyramid (the official behaviour)."""

    @configurable
    def __init__(self, *, loss_normalizer="batch", test_candidates="anchors", **kwargs):
        super().__init__(**kwargs)
        self.loss_normalizer_kind = loss_normalizer
        self.test_candidates = test_candidates

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.SEPC
        for key, allowed in CHOICES.items():
            if c[key] not in allowed:
                raise ValueError(f"MODEL.SEPC.{key} must be one of {allowed}, not {c[key]!r}")
        ret = super().from_config(cfg)
        if c.HEAD == "sepc":  # else detectron2's RetinaNetHead: the baseline
            shapes = ret["backbone"].output_shape()
            ret["head"] = SEPCHead(cfg, [shapes[f] for f in cfg.MODEL.RETINANET.IN_FEATURES])
        if c.LOW_QUALITY_MATCHES == "gt":
            r = cfg.MODEL.RETINANET
            ret["anchor_matcher"] = GTBestAnchorMatcher(r.IOU_THRESHOLDS, r.IOU_LABELS)
        ret.update(loss_normalizer=c.LOSS_NORMALIZER, test_candidates=c.TEST_CANDIDATES)
        return ret

    # The anchor generator only reads the maps' sizes: give it the head's outputs.
    def forward_training(self, images, features, predictions, gt_instances):
        return super().forward_training(images, predictions[0], predictions, gt_instances)

    def forward_inference(self, images, features, predictions):
        return super().forward_inference(images, predictions[0], predictions)

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """detectron2's RetinaNet losses; with ``LOSS_NORMALIZER "batch"`` divided by
        sum over images of max(positives, 1) (mmdetection) instead of the moving average."""
        if self.loss_normalizer_kind == "ema":
            return super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        valid = gt_labels >= 0
        pos = valid & (gt_labels != self.num_classes)
        get_event_storage().put_scalar("num_pos_anchors", pos.sum().item() / len(gt_labels))
        normalizer = pos.sum(dim=1).clamp(min=1).sum().float()
        target = F.one_hot(gt_labels[valid], num_classes=self.num_classes + 1)[:, :-1]
        loss_cls = sigmoid_focal_loss_jit(
            cat(pred_logits, dim=1)[valid], target.to(pred_logits[0].dtype),
            alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma, reduction="sum")
        loss_box_reg = _dense_box_regression_loss(
            anchors, self.box2box_transform, pred_anchor_deltas, gt_boxes, pos,
            box_reg_loss_type=self.box_reg_loss_type, smooth_l1_beta=self.smooth_l1_beta)
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

    def inference_single_image(self, anchors, box_cls, box_delta, image_size):
        """``box_cls``: per level, (anchors, classes) probabilities. With ``TEST_CANDIDATES
        "anchors"``, mmdetection's candidates: the top-k anchors by their best class score,
        every class of them above the threshold, boxes clipped, class-wise NMS, best ``max``."""
        if self.test_candidates == "pairs":
            return super().inference_single_image(anchors, box_cls, box_delta, image_size)
        boxes, scores, classes = [], [], []
        for anchors_l, cls_l, delta_l in zip(anchors, box_cls, box_delta):
            top = cls_l.max(dim=1).values.topk(min(self.test_topk_candidates, len(cls_l))).indices
            cls_l, delta_l, anchors_l = cls_l[top], delta_l[top], anchors_l.tensor[top]
            idx, k = (cls_l > self.test_score_thresh).nonzero(as_tuple=True)
            boxes.append(self.box2box_transform.apply_deltas(delta_l[idx], anchors_l[idx]))
            scores.append(cls_l[idx, k])
            classes.append(k)
        boxes, scores, classes = Boxes(cat(boxes)), cat(scores), cat(classes)
        boxes.clip(image_size)
        keep = batched_nms(boxes.tensor, scores, classes, self.test_nms_thresh)
        keep = keep[: self.max_detections_per_image]
        return Instances(image_size, pred_boxes=boxes[keep], scores=scores[keep], pred_classes=classes[keep])
