"""RetinaNet trained with the AP-loss (Sec. 3 and 4 of the paper; official ``lib/model/model.py``
and the anchor assignment in ``lib/model/aploss.py``).

detectron2's RetinaNet with four changes: the classification loss is the AP-loss over all
anchors x classes (``ranking.ap_loss``); the regression loss is SmoothL1 over the positives
divided by 4 x their number (the official gradient); a GT's best anchors only become positive
when that best IoU is above 0; and at test time the boxes are clipped to the image before NMS,
as the official ``ResNet.forward``.
"""

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import get_event_storage
from torch import nn
from torch.nn import functional as F

from .ranking import ap_loss
from .vendored import clipped_retinanet_inference, normalizer_over_processes, retinanet_from_config

__all__ = ["APLossRetinaNet", "PositiveLowQualityMatcher"]


class PositiveLowQualityMatcher(Matcher):
    """detectron2's Matcher, except that the low-quality matches (each GT's best anchors,
    ties included) are only made for a GT whose best IoU is above 0. The official code (and
    detectron2's Matcher) would otherwise make every anchor tied at IoU 0 with such a GT (a
    degenerate or tiny box) positive."""

    def set_low_quality_matches_(self, match_labels, match_quality_matrix):
        best = match_quality_matrix.max(dim=1, keepdim=True).values
        ties = (match_quality_matrix == best) & (best > 0)
        match_labels[ties.any(dim=0)] = 1


@META_ARCH_REGISTRY.register()
class APLossRetinaNet(RetinaNet):
    @configurable
    def __init__(self, *, cls_loss="ap", delta=1.0, interpolate=True, scope="batch",
                 chunk_size=1 << 22, **kwargs):
        """
        Args:
            cls_loss: "ap" or "focal" (detectron2's RetinaNet losses, unchanged).
            delta, interpolate, scope, chunk_size: see ``add_ap_loss_config``.
            kwargs: RetinaNet's arguments.
        """
        super().__init__(**kwargs)
        assert cls_loss in ("ap", "focal"), f"unknown MODEL.AP_LOSS.CLS_LOSS {cls_loss!r}"
        assert scope in ("batch", "global"), f"unknown MODEL.AP_LOSS.SCOPE {scope!r}"
        self.cls_loss = cls_loss
        self.delta = delta
        self.interpolate = interpolate
        self.scope = scope
        self.chunk_size = chunk_size
        # Official init of the box output: N(0, 0.001) (other convs N(0, 0.01), as detectron2).
        nn.init.normal_(self.head.bbox_pred.weight, std=0.001)

    @classmethod
    def from_config(cls, cfg):
        ret = retinanet_from_config(super().from_config, cfg)
        c = cfg.MODEL.RETINANET
        ret["anchor_matcher"] = PositiveLowQualityMatcher(
            c.IOU_THRESHOLDS, c.IOU_LABELS, allow_low_quality_matches=True
        )
        a = cfg.MODEL.AP_LOSS
        ret.update(cls_loss=a.CLS_LOSS, delta=a.DELTA, interpolate=a.INTERPOLATE, scope=a.SCOPE,
                   chunk_size=a.CHUNK_SIZE)
        return ret

    def inference_single_image(self, anchors, box_cls, box_delta, image_size):
        """detectron2's RetinaNet inference with the boxes clipped to the image before NMS, as
        the official code does."""
        return clipped_retinanet_inference(self, anchors, box_cls, box_delta, image_size)

    def _num_positives(self, pos_mask):
        """Positives of the ranking scope (at least 1): this process's, or the batch's over all
        processes divided by their number (see normalizer_over_processes)."""
        num = pos_mask.sum().float()
        if self.scope == "global":
            return normalizer_over_processes(num, 1.0)
        return num.clamp(min=1)

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """
        Returns:
            ``loss_cls``: 1 - AP over all (anchor, class) entries of the ranking scope, whose
            gradient is the paper's update. ``loss_box_reg``: SmoothL1 over the positive
            anchors' deltas / (4 x number of positives).
        """
        if self.cls_loss == "focal":
            return super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        gt_labels = torch.stack(gt_labels)  # (N, R): class, num_classes = background, -1 ignored
        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        get_event_storage().put_scalar("num_pos_anchors", pos_mask.sum().item() / len(gt_labels))

        # Per (anchor, class): 1 for a positive anchor's class, 0 for its other classes and for
        # every class of a negative anchor, -1 for every class of an ignored anchor.
        targets = F.one_hot(gt_labels.clamp(min=0), self.num_classes + 1)[..., :-1].to(torch.int8)
        targets[gt_labels < 0] = -1
        loss_cls = ap_loss(cat(pred_logits, dim=1), targets, self.delta, self.interpolate, self.scope,
                           self.chunk_size)

        loss_box_reg = _dense_box_regression_loss(
            anchors, self.box2box_transform, pred_anchor_deltas, gt_boxes, pos_mask,
            box_reg_loss_type="smooth_l1", smooth_l1_beta=self.smooth_l1_beta,
        )
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg / (4 * self._num_positives(pos_mask))}
