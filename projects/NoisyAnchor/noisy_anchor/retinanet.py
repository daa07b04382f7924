"""RetinaNet learning from noisy anchors (official: ``RetinaNetNoisy`` in
detectron2/modeling/meta_arch/retinanet_noisy.py of henrylee2570/NoisyAnchor, a detectron2
fork). detectron2's RetinaNet with its training replaced: top-N assignment, soft labels and
re-weighting from the detached predictions, the focal loss against the soft labels, both losses
re-weighted with their sums kept. Inference is RetinaNet's.
"""

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import get_event_storage
from fvcore.nn import smooth_l1_loss

from .cleanliness import reweighting, soft_focal_loss, soft_labels
from .matcher import TopNMatcher
from .vendored import retinanet_from_config

__all__ = ["NoisyAnchorRetinaNet", "matched_iou"]


def matched_iou(gt_boxes, pred_boxes):
    """IoU of each (GT, predicted) pair of two (P, 4) tensors, as ``pairwise_iou`` computes
    it (0 without intersection)."""
    wh = torch.min(gt_boxes[:, 2:], pred_boxes[:, 2:]) - torch.max(gt_boxes[:, :2], pred_boxes[:, :2])
    wh = wh.clamp(min=0)
    inter = wh.prod(dim=1)
    union = Boxes(gt_boxes).area() + Boxes(pred_boxes).area() - inter
    return torch.where(inter > 0, inter / union, torch.zeros(1, dtype=inter.dtype, device=inter.device))


@META_ARCH_REGISTRY.register()
class NoisyAnchorRetinaNet(RetinaNet):
    @configurable
    def __init__(self, *, top_n=30, noisy_alpha=0.75, **kwargs):
        """
        Args:
            top_n, noisy_alpha: see ``add_noisy_anchor_config``.
            kwargs: RetinaNet's arguments (``focal_loss_alpha``: the soft focal loss's alpha).
        """
        super().__init__(**kwargs)
        self.anchor_matcher = TopNMatcher(top_n)
        self.noisy_alpha = noisy_alpha
        # The official normaliser: an EMA of the batch's number of positive anchors (momentum
        # 0.9, from 100), the losses divided by max(1, EMA).
        self.loss_normalizer = 100.0

    @classmethod
    def from_config(cls, cfg):
        ret = retinanet_from_config(super().from_config, cfg)
        ret.update(top_n=cfg.MODEL.NOISY_ANCHOR.TOPN, noisy_alpha=cfg.MODEL.NOISY_ANCHOR.ALPHA)
        return ret

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4])
        anchors = self.anchor_generator(features)
        targets = self.label_anchors_noisy(anchors, gt_instances, pred_logits, pred_anchor_deltas)
        return self.noisy_losses(anchors, pred_logits, pred_anchor_deltas, *targets)

    @torch.no_grad()
    def label_anchors_noisy(self, anchors, gt_instances, pred_logits, pred_anchor_deltas):
        """Per image: the top-N labels and matched GT boxes, and the positives' soft labels and
        re-weighting coefficients from the detached predictions.

        Returns:
            gt_labels, gt_boxes: lists of (R,) and (R, 4), as ``RetinaNet.label_anchors``
            (class or ``num_classes`` for background; never -1).
            soft, weights: lists of (R,): a positive's soft label (0 elsewhere) and its
            coefficient (1 elsewhere).
        """
        anchors = Boxes.cat(anchors)
        logits = cat(pred_logits, dim=1)
        deltas = cat(pred_anchor_deltas, dim=1)
        gt_labels, gt_boxes, soft, weights = [], [], [], []
        for i, gt in enumerate(gt_instances):
            matches, labels, topn = self.anchor_matcher(pairwise_iou(gt.gt_boxes, anchors))
            soft_i = torch.zeros(len(anchors), device=anchors.device)
            weights_i = torch.ones(len(anchors), device=anchors.device)
            if len(gt) > 0:
                boxes_i = gt.gt_boxes.tensor[matches]
                labels_i = gt.gt_classes[matches]
                labels_i[labels == 0] = self.num_classes
                cls = torch.sigmoid(logits[i])[topn, labels_i[topn]]
                pred_boxes = self.box2box_transform.apply_deltas(deltas[i], anchors.tensor)
                loc = matched_iou(boxes_i[topn], pred_boxes[topn])
                # an anchor in several GTs' top N: the same values, written once per occurrence
                soft_i[topn] = soft_labels(loc, cls, self.noisy_alpha)
                weights_i[topn] = reweighting(loc, cls, self.noisy_alpha)
            else:
                boxes_i = torch.zeros_like(anchors.tensor)
                labels_i = torch.full_like(matches, self.num_classes)
            gt_labels.append(labels_i)
            gt_boxes.append(boxes_i)
            soft.append(soft_i)
            weights.append(weights_i)
        return gt_labels, gt_boxes, soft, weights

    def noisy_losses(self, anchors, pred_logits, pred_anchor_deltas, gt_labels, gt_boxes, soft, weights):
        """The soft focal loss over every (anchor, class) entry and SmoothL1 over the
        positives, each element times its anchor's coefficient, rescaled so that each sum is
        what it was before re-weighting, then divided by max(1, EMA of the positives)."""
        gt_labels, soft, weights = torch.stack(gt_labels), torch.stack(soft), torch.stack(weights)
        pos_mask = gt_labels != self.num_classes
        num_pos = pos_mask.sum().item()
        get_event_storage().put_scalar("num_pos_anchors", num_pos / len(gt_labels))
        self.loss_normalizer = 0.9 * self.loss_normalizer + 0.1 * num_pos

        logits = cat(pred_logits, dim=1)
        targets = torch.zeros_like(logits)
        targets[pos_mask, gt_labels[pos_mask]] = soft[pos_mask].to(logits.dtype)
        loss_cls = soft_focal_loss(logits, targets, self.focal_loss_alpha, self.focal_loss_gamma)

        anchors = Boxes.cat(anchors).tensor
        gt_deltas = torch.stack([self.box2box_transform.get_deltas(anchors, b) for b in gt_boxes])
        loss_box = smooth_l1_loss(cat(pred_anchor_deltas, dim=1)[pos_mask], gt_deltas[pos_mask],
                                  beta=self.smooth_l1_beta, reduction="none")

        loss_cls = _reweight(loss_cls, weights[..., None])
        loss_box = _reweight(loss_box, weights[pos_mask][:, None])
        normalizer = max(1.0, self.loss_normalizer)
        return {"loss_cls": loss_cls.sum() / normalizer, "loss_box_reg": loss_box.sum() / normalizer}


def _reweight(loss, coeffs):
    """loss x coeffs x (sum of loss / sum of loss x coeffs), the scale a constant."""
    with torch.no_grad():
        weighted = (loss * coeffs).sum()
        scale = loss.sum() / weighted if weighted > 0 else torch.ones_like(weighted)
    return loss * (coeffs * scale)
