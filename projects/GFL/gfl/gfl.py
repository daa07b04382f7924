"""The GFL detector: ATSS assignment, the GFL head, QFL + DFL + GIoU training, and inference
(Sec. 3 and 4 of the paper; the official ``GFLHead.loss`` / ``get_bboxes``)."""

import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, Instances
from detectron2.structures.boxes import matched_pairwise_iou
from fvcore.nn import giou_loss

from .atss_assigner import atss_assign
from .distribution_focal_loss import distribution_focal_loss
from .head import GFLHead
from .integral import boxes_to_ltrb, integral, ltrb_to_boxes
from .quality_focal_loss import quality_focal_loss
from .vendored import normalizer_over_processes

__all__ = ["GFL"]


@META_ARCH_REGISTRY.register()
class GFL(DenseDetector):
    """Generalized Focal Loss detector. Boxes are XYXY in input-image pixels; box regression
    is in units of each level's stride from the location (the anchor's centre)."""

    @configurable
    def __init__(
        self,
        *,
        backbone,
        head,
        head_in_features,
        anchor_generator,
        num_classes,
        reg_max=16,
        atss_topk=9,
        qfl_beta=2.0,
        qfl_weight=1.0,
        dfl_weight=0.25,
        giou_weight=2.0,
        test_score_thresh=0.05,
        test_topk_candidates=1000,
        test_nms_thresh=0.6,
        max_detections_per_image=100,
        pixel_mean,
        pixel_std,
    ):
        """
        Args:
            anchor_generator: one square anchor per location; used only by ATSS and for the
                locations (anchor centres).
            Others: see ``add_gfl_config``.
        """
        super().__init__(backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        assert anchor_generator.num_cell_anchors == [1] * len(head_in_features)
        self.anchor_generator = anchor_generator
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.atss_topk = atss_topk
        self.qfl_beta = qfl_beta
        self.qfl_weight = qfl_weight
        self.dfl_weight = dfl_weight
        self.giou_weight = giou_weight
        self.test_score_thresh = test_score_thresh
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.max_detections_per_image = max_detections_per_image

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.GFL
        backbone = build_backbone(cfg)
        shapes = [backbone.output_shape()[f] for f in c.IN_FEATURES]
        strides = [s.stride for s in shapes]
        return {
            "backbone": backbone,
            "head": GFLHead(cfg, shapes),
            "head_in_features": c.IN_FEATURES,
            "anchor_generator": DefaultAnchorGenerator(
                sizes=[[c.ANCHOR_SCALE * s] for s in strides],
                aspect_ratios=[[1.0]],
                strides=strides,
                offset=c.ANCHOR_OFFSET,
            ),
            "num_classes": c.NUM_CLASSES,
            "reg_max": c.REG_MAX,
            "atss_topk": c.ATSS_TOPK,
            "qfl_beta": c.QFL_BETA,
            "qfl_weight": c.QFL_WEIGHT,
            "dfl_weight": c.DFL_WEIGHT,
            "giou_weight": c.GIOU_WEIGHT,
            "test_score_thresh": c.SCORE_THRESH_TEST,
            "test_topk_candidates": c.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": c.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def _dense(self, features, predictions):
        """Anchors (list of Boxes per level) and the predictions as lists of ``(N, HW, K)`` and
        ``(N, HW, 4, n+1)`` per level."""
        anchors = self.anchor_generator(features)
        logits, reg = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4 * (self.reg_max + 1)]
        )
        reg = [r.reshape(r.shape[0], r.shape[1], 4, self.reg_max + 1) for r in reg]
        return anchors, logits, reg

    def _strides(self, anchors):
        return cat([torch.full((len(a),), float(s), device=a.device)
                    for a, s in zip(anchors, self.anchor_generator.strides)])

    def forward_training(self, images, features, predictions, gt_instances):
        anchors, logits, reg = self._dense(features, predictions)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, cat(logits, dim=1), cat(reg, dim=1), gt_labels, gt_boxes)

    @torch.no_grad()
    def label_anchors(self, anchors, gt_instances):
        """ATSS per image. Returns ``(N, A)`` labels (K = background) and ``(N, A, 4)`` the
        assigned GT boxes (zeros for background)."""
        anchors = [a.tensor for a in anchors]
        labels, boxes = [], []
        for gt in gt_instances:
            gt_boxes = gt.gt_boxes.tensor
            matched = atss_assign(anchors, gt_boxes, self.atss_topk)
            pos = matched >= 0
            label = torch.full_like(matched, self.num_classes)
            label[pos] = gt.gt_classes[matched[pos]]
            box = gt_boxes.new_zeros(len(matched), 4)
            box[pos] = gt_boxes[matched[pos]]
            labels.append(label)
            boxes.append(box)
        return torch.stack(labels), torch.stack(boxes)

    def losses(self, anchors, logits, reg, gt_labels, gt_boxes):
        """
        Args:
            anchors: list of Boxes per level (``A`` in all).
            logits: ``(N, A, K)``; reg: ``(N, A, 4, n+1)``.
            gt_labels: ``(N, A)``; gt_boxes: ``(N, A, 4)`` from :meth:`label_anchors`.

        Returns:
            ``loss_qfl`` (QFL, over all locations / number of positives), ``loss_giou`` and
            ``loss_dfl`` (DFL, over positives, each weighted by its max class score and
            divided by the sum of those weights; DFL also averaged over the 4 sides).
        """
        n = self.reg_max
        pos = gt_labels < self.num_classes  # (N, A)
        # Official: every image counts at least one positive; then over all processes.
        num_pos = normalizer_over_processes(pos.sum(dim=1).clamp(min=1).sum().float(), 1.0)

        # Positives, decoded in units of their level's stride.
        strides = self._strides(anchors)[None].expand_as(pos)[pos][:, None]  # (P, 1)
        points = Boxes.cat(anchors).get_centers()[None].expand(*pos.shape, 2)[pos] / strides
        pos_reg = reg[pos]  # (P, 4, n+1)
        pred_boxes = ltrb_to_boxes(points, integral(pos_reg))
        target_boxes = gt_boxes[pos] / strides

        # QFL's soft target: IoU of the (detached) predicted box with its GT.
        quality = torch.zeros_like(gt_labels, dtype=logits.dtype)
        quality[pos] = matched_pairwise_iou(Boxes(pred_boxes.detach()), Boxes(target_boxes))
        loss_qfl = quality_focal_loss(
            logits.flatten(0, 1), gt_labels.flatten(), quality.flatten(), self.qfl_beta
        ).sum() / num_pos

        # Box losses weighted by the predicted score of each positive (its max over classes),
        # divided by the weights' sum: a score-weighted mean over all positives of the batch.
        # The clamp only avoids 0 / 0 without positives; mmdetection 2.x clamps to 1, which
        # makes the loss depend on the number of processes while the sum is small (README).
        weight = logits.detach().sigmoid().amax(dim=2)[pos]
        weight_sum = normalizer_over_processes(weight.sum(), 1e-6)
        loss_giou = (weight * giou_loss(pred_boxes, target_boxes)).sum() / weight_sum
        # Official (1.x bbox2distance dt=0.1; mmdetection 2.x / 3.x eps=0.1): below n by 0.1.
        target_ltrb = boxes_to_ltrb(points, target_boxes).clamp(min=0, max=n - 0.1)
        dfl = distribution_focal_loss(pos_reg.reshape(-1, n + 1), target_ltrb.flatten())
        loss_dfl = (weight[:, None] * dfl.view(-1, 4)).sum() / 4 / weight_sum
        return {
            "loss_qfl": self.qfl_weight * loss_qfl,
            "loss_giou": self.giou_weight * loss_giou,
            "loss_dfl": self.dfl_weight * loss_dfl,
        }

    def forward_inference(self, images, features, predictions):
        anchors, logits, reg = self._dense(features, predictions)
        return [
            self.inference_single_image(anchors, [x[i] for x in logits], [x[i] for x in reg], size)
            for i, size in enumerate(images.image_sizes)
        ]

    def inference_single_image(self, anchors, logits, reg, image_size):
        """Per level: the ``test_topk_candidates`` locations with the highest max class score;
        every (location, class) with score > ``test_score_thresh``; then class-wise NMS over
        all levels, keeping the best ``max_detections_per_image``. The score is sigmoid(logit):
        GFL has no separate quality branch."""
        boxes_all, scores_all, classes_all = [], [], []
        for anchors_l, stride, logits_l, reg_l in zip(anchors, self.anchor_generator.strides, logits, reg):
            scores = logits_l.sigmoid()  # (HW, K)
            points = anchors_l.get_centers()
            if len(scores) > self.test_topk_candidates:
                keep = scores.amax(dim=1).topk(self.test_topk_candidates).indices
                scores, points, reg_l = scores[keep], points[keep], reg_l[keep]
            boxes = ltrb_to_boxes(points, integral(reg_l) * stride)
            loc, cls = (scores > self.test_score_thresh).nonzero(as_tuple=True)
            boxes_all.append(boxes[loc])
            scores_all.append(scores[loc, cls])
            classes_all.append(cls)
        boxes = Boxes(cat(boxes_all))
        boxes.clip(image_size)
        scores, classes = cat(scores_all), cat(classes_all)
        keep = batched_nms(boxes.tensor, scores, classes, self.test_nms_thresh)
        keep = keep[: self.max_detections_per_image]
        return Instances(image_size, pred_boxes=boxes[keep], scores=scores[keep], pred_classes=classes[keep])
