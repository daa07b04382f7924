"""RetinaNet trained with the DR loss (official: ``sigmoid_dr_loss.py`` dropped into
maskrcnn-benchmark's ``modeling/rpn/retinanet/loss.py`` in place of the focal loss).

detectron2's RetinaNet with maskrcnn-benchmark's losses around it: the classification loss is
the DR loss over every (anchor, class) entry of the ranking set, not normalised by the number
of positives (the focal loss's normaliser would shrink it ~100x, see README);
the regression loss is maskrcnn-benchmark's SmoothL1 over the positives / (4 x their number in
this process); boxes are clipped to the image before NMS at test time.
"""

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import get_event_storage
from torch.nn import functional as F

from .loss import NEG_LAMBDA, dr_loss
from .vendored import clipped_retinanet_inference, retinanet_from_config

__all__ = ["DRLossRetinaNet", "dr_targets"]

SCOPES = ("batch", "image")


def dr_targets(gt_labels, num_classes):
    """(N, R) anchor labels (class, ``num_classes`` = background, -1 ignored) -> (N, R, C)
    entry targets: 1 for a positive anchor's class, 0 for its other classes and every class of
    a background anchor, -1 for every class of an ignored anchor."""
    targets = F.one_hot(gt_labels.clamp(min=0), num_classes + 1)[..., :-1].to(torch.int8)
    targets[gt_labels < 0] = -1
    return targets


@META_ARCH_REGISTRY.register()
class DRLossRetinaNet(RetinaNet):
    @configurable
    def __init__(self, *, margin=0.5, pos_lambda=1.0, neg_lambda=NEG_LAMBDA, L=6.0, tau=4.0,
                 scope="batch", **kwargs):
        """
        Args:
            margin, pos_lambda, neg_lambda, L, tau, scope: see ``add_dr_loss_config``.
            kwargs: RetinaNet's arguments.
        """
        super().__init__(**kwargs)
        if scope not in SCOPES:
            raise ValueError(f"MODEL.DR_LOSS.SCOPE must be one of {SCOPES}, got {scope!r}")
        self.dr_args = dict(margin=margin, pos_lambda=pos_lambda, neg_lambda=neg_lambda, L=L, tau=tau)
        self.scope = scope

    @classmethod
    def from_config(cls, cfg):
        ret = retinanet_from_config(super().from_config, cfg)
        d = cfg.MODEL.DR_LOSS
        ret.update(margin=d.MARGIN, pos_lambda=d.POS_LAMBDA, neg_lambda=d.NEG_LAMBDA, L=d.L, tau=d.TAU,
                   scope=d.SCOPE)
        return ret

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """
        Returns:
            ``loss_cls``: the DR loss of this process's batch (scope "batch") or the mean of
            its images' (scope "image"). ``loss_box_reg``: SmoothL1 over the positive anchors'
            deltas / (4 x their number, at least 1).
        """
        gt_labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        num_pos = pos_mask.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos / len(gt_labels))

        logits = cat(pred_logits, dim=1)  # (N, R, C)
        targets = dr_targets(gt_labels, self.num_classes)
        if self.scope == "batch":
            loss_cls = dr_loss(logits, targets, **self.dr_args)
        else:
            loss_cls = torch.stack([dr_loss(x, t, **self.dr_args) for x, t in zip(logits, targets)]).mean()

        loss_box_reg = _dense_box_regression_loss(
            anchors, self.box2box_transform, pred_anchor_deltas, gt_boxes, pos_mask,
            box_reg_loss_type="smooth_l1", smooth_l1_beta=self.smooth_l1_beta,
        )
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg / max(1, 4 * num_pos)}

    def inference_single_image(self, anchors, box_cls, box_delta, image_size):
        """detectron2's RetinaNet inference with the boxes clipped to the image before NMS, as
        maskrcnn-benchmark's ``RetinaNetPostProcessor``."""
        return clipped_retinanet_inference(self, anchors, box_cls, box_delta, image_size)
