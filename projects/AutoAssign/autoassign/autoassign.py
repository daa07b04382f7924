"""The AutoAssign detector: FCOS-like, with every location inside a GT box (on every level) a
candidate whose positive and negative weights are computed on the fly (Sec. 3 of the paper;
official ``AutoAssign.losses`` / ``inference``)."""

import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransformLinear
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, pairwise_iou, pairwise_point_box_distance
from fvcore.nn import giou_loss

from .center_prior import CenterPrior
from .head import AutoAssignHead
from .vendored import normalizer_over_processes
from .weighting import negative_loss, negative_weights, positive_loss

__all__ = ["AutoAssign"]


@META_ARCH_REGISTRY.register()
class AutoAssign(DenseDetector):
    """AutoAssign. Boxes are XYXY in input-image pixels; a location regresses its distances
    (pixels) to the four sides of its box."""

    @configurable
    def __init__(
        self,
        *,
        backbone,
        head,
        head_in_features,
        num_classes,
        location_offset=0.0,
        reg_weight=5.0,
        tau=1.0 / 3.0,
        neg_gamma=2.0,
        pos_loss_weight=0.25,
        neg_loss_weight=0.75,
        center_loss_weight=0.75,
        test_score_thresh=0.05,
        test_topk_candidates=1000,
        test_nms_thresh=0.6,
        max_detections_per_image=100,
        pixel_mean,
        pixel_std,
    ):
        """
        Args:
            location_offset: locations at ``(k + location_offset) * stride``.
            Others: see ``add_autoassign_config``.
        """
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.num_classes = num_classes
        strides = [backbone.output_shape()[f].stride for f in head_in_features]
        # One stride x stride box per location, centred on it: its centre is the location and
        # Box2BoxTransformLinear turns (l, t, r, b) pixel distances from it into a box.
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[s] for s in strides], aspect_ratios=[1.0], strides=strides, offset=location_offset
        )
        self.box2box_transform = Box2BoxTransformLinear(normalize_by_size=False)
        self.center_prior = CenterPrior(num_classes)
        self.reg_weight = reg_weight
        self.tau = tau
        self.neg_gamma = neg_gamma
        self.pos_loss_weight = pos_loss_weight
        self.neg_loss_weight = neg_loss_weight
        self.center_loss_weight = center_loss_weight
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.AUTOASSIGN
        backbone = build_backbone(cfg)
        shapes = [backbone.output_shape()[f] for f in c.IN_FEATURES]
        return {
            "backbone": backbone,
            "head": AutoAssignHead(cfg, shapes),
            "head_in_features": c.IN_FEATURES,
            "num_classes": c.NUM_CLASSES,
            "location_offset": c.LOCATION_OFFSET,
            "reg_weight": c.REG_WEIGHT,
            "tau": c.TAU,
            "neg_gamma": c.NEG_GAMMA,
            "pos_loss_weight": c.POS_LOSS_WEIGHT,
            "neg_loss_weight": c.NEG_LOSS_WEIGHT,
            "center_loss_weight": c.CENTER_LOSS_WEIGHT,
            "test_score_thresh": c.SCORE_THRESH_TEST,
            "test_topk_candidates": c.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": c.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def _dense(self, features, predictions):
        """The locations' boxes (list of Boxes per level) and the predictions as lists of
        ``(N, HW, K)``, ``(N, HW, 4)`` and ``(N, HW, 1)`` per level."""
        anchors = self.anchor_generator(features)
        logits, reg, obj = self._transpose_dense_predictions(predictions, [self.num_classes, 4, 1])
        return anchors, logits, reg, obj

    def _strides(self, anchors):
        """``(A,)`` the stride of each location's level."""
        return cat([torch.full((len(a),), float(s), device=a.device)
                    for a, s in zip(anchors, self.anchor_generator.strides)])

    def forward_training(self, images, features, predictions, gt_instances):
        anchors, logits, reg, obj = self._dense(features, predictions)
        return self.losses(Boxes.cat(anchors), self._strides(anchors), cat(logits, dim=1),
                           cat(reg, dim=1), cat(obj, dim=1), gt_instances)

    def candidates(self, locations, strides, scores, pred_boxes, gt):
        """The candidates of one image: every (location, GT) pair with the location strictly
        inside the GT box, on every level.

        Args:
            locations: ``(A, 2)``; strides: ``(A,)``.
            scores: ``(A, K)`` sigmoid(cls) * sigmoid(objectness); pred_boxes: ``(A, 4)``.
            gt: Instances with ``gt_boxes`` and ``gt_classes``.

        Returns:
            ``a``, ``g``: ``(P,)`` the pairs' location and GT indices; ``prior``: ``(P,)`` their
            centre prior G; ``p_pos``: ``(P,)`` their positive confidence
            ``P+ = scores[a, class of g] * exp(-reg_weight * GIoU loss(box of a, GT g))``.
        """
        boxes, classes = gt.gt_boxes.tensor, gt.gt_classes
        inside = pairwise_point_box_distance(locations, gt.gt_boxes).min(dim=2).values > 0
        a, g = inside.nonzero(as_tuple=True)
        prior = self.center_prior(locations[a], strides[a], boxes[g], classes[g])
        p_loc = torch.exp(-self.reg_weight * giou_loss(pred_boxes[a], boxes[g], reduction="none"))
        return a, g, prior, scores[a, classes[g]] * p_loc

    def losses(self, anchors, strides, logits, reg, obj, gt_instances):
        """
        Args:
            anchors: Boxes ``(A,)``, one per location, centred on it; strides: ``(A,)``.
            logits: ``(N, A, K)``; reg: ``(N, A, 4)`` pixel distances; obj: ``(N, A, 1)``.
            gt_instances: per image, ``gt_boxes`` and ``gt_classes``.

        Returns:
            ``loss_pos``: sum over GTs of the positive loss / number of GTs, x 0.25.
            ``loss_neg``: sum over locations and classes of the negative loss / sum of the centre
            prior over all (location, GT) pairs, x 0.75.
            ``loss_center``: mean over images of (number of GTs / sum of its centre prior),
            x 0.75: it keeps the prior from shrinking where there are no objects.
            Both sums in the normalisers are averaged over processes.
        """
        locations = anchors.get_centers()
        scores = logits.sigmoid() * obj.sigmoid()  # (N, A, K) joint confidence
        pred_boxes = torch.stack([self.box2box_transform.apply_deltas(r, anchors.tensor) for r in reg])

        pos_losses, pos_probs, prior_sums, center_losses = [], [], [], []
        for i, gt in enumerate(gt_instances):
            a, g, prior, p_pos = self.candidates(locations, strides, scores[i], pred_boxes[i], gt)
            pos_losses.append(positive_loss(p_pos, prior, g, len(gt), self.tau))

            # Negative: the probability that location a is a positive on its GT's class.
            pos_prob = scores.new_zeros(scores.shape[1:])
            if len(a):
                with torch.no_grad():
                    v = negative_weights(pairwise_iou(gt.gt_boxes, Boxes(pred_boxes[i])), a, g)
                # A location inside two GTs of one class: the larger probability (the official
                # index assignment keeps whichever write lands last).
                pos_prob.view(-1).scatter_reduce_(0, a * self.num_classes + gt.gt_classes[g], v, "amax")
            pos_probs.append(pos_prob)

            s = prior.sum()
            prior_sums.append(s.detach())
            # An image whose GTs contain no location has no prior to normalise: 0 (official:
            # the constant len(gt) / 1e-12, without gradient; 0 for an image without GTs).
            center_losses.append(len(gt) / s if len(a) else s * 0)

        # Both normalisers over the whole batch, at least 1, per process (official: averaged
        # over processes, then at least 1; README).
        num_gt = sum(len(gt) for gt in gt_instances)
        num_gt = normalizer_over_processes(torch.tensor(float(num_gt), device=reg.device), 1.0)
        prior_sum = normalizer_over_processes(torch.stack(prior_sums).sum(), 1.0)
        loss_pos = cat(pos_losses).sum() / num_gt
        loss_neg = negative_loss(scores, torch.stack(pos_probs), self.neg_gamma).sum() / prior_sum
        loss_center = torch.stack(center_losses).mean()
        return {
            "loss_pos": self.pos_loss_weight * loss_pos,
            "loss_neg": self.neg_loss_weight * loss_neg,
            "loss_center": self.center_loss_weight * loss_center,
        }

    def forward_inference(self, images, features, predictions):
        anchors, logits, reg, obj = self._dense(features, predictions)
        results = []
        for i, image_size in enumerate(images.image_sizes):
            scores = [x[i].sigmoid() * y[i].sigmoid() for x, y in zip(logits, obj)]
            results.append(self.inference_single_image(anchors, scores, [x[i] for x in reg], image_size))
        return results

    def inference_single_image(self, anchors, scores, reg, image_size):
        """Per level: every (location, class) with score > ``test_score_thresh``, the best
        ``test_topk_candidates`` of them; then class-wise NMS over all levels, keeping the best
        ``max_detections_per_image``. ``scores`` is sigmoid(cls) * sigmoid(objectness)."""
        pred = self._decode_multi_level_predictions(
            anchors, scores, reg, self.test_score_thresh, self.test_topk_candidates, image_size
        )
        keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, self.test_nms_thresh)
        return pred[keep[: self.max_detections_per_image]]
