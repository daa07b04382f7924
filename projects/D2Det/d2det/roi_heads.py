"""D2Det's second stage: classification on discriminative RoI pooling, localisation by dense
local regression, the two-pass inference and, with ``MODEL.MASK_ON``, instance segmentation.

Official: mmdet/models/detectors/D2Det.py (``forward_train``, ``simple_test``) of
JialeCao001/D2Det.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat, cross_entropy
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.box_head import build_box_head
from detectron2.modeling.roi_heads.fast_rcnn import _log_classification_stats, fast_rcnn_inference
from detectron2.structures import Boxes, Instances

from .dense_regression import (
    DenseRegressionHead,
    average_cell_boxes,
    decode_dense,
    dense_regression_losses,
    jitter_boxes,
)
from .discriminative_pooling import DiscriminativeRoIPooler
from .instance_segmentation import (
    D2DetMaskHead,
    area_ratios,
    class_maps,
    mask_losses,
    mask_scores,
    overlap_from_masks,
)
from .layers import batched_soft_nms


class ClassificationOutputs(nn.Module):
    """The box predictor of D2Det's classification branch: class scores only (no box deltas;
    official ``with_reg=False``), softmax cross-entropy x ``loss_weight``. At inference the
    (unregressed) proposals are scored, and class-wise NMS keeps the best ``topk``."""

    @configurable
    def __init__(self, input_shape, *, num_classes, loss_weight=2.0, test_score_thresh=0.03,
                 test_nms_thresh=0.5, test_topk_per_image=125):
        super().__init__()
        dim = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.cls_score = nn.Linear(dim, num_classes + 1)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.zeros_(self.cls_score.bias)
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "loss_weight": cfg.MODEL.D2DET.CLS_LOSS_WEIGHT,
            "test_score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            "test_nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            "test_topk_per_image": cfg.MODEL.D2DET.PRE_REFINE_TOPK_TEST,
        }

    def forward(self, x):
        return self.cls_score(x.flatten(1))

    def losses(self, scores, proposals):
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        _log_classification_stats(scores, gt_classes)
        return {"loss_cls": self.loss_weight * cross_entropy(scores, gt_classes, reduction="mean")}

    def inference(self, scores, proposals):
        probs = F.softmax(scores, dim=-1).split([len(p) for p in proposals])
        boxes = [p.proposal_boxes.tensor for p in proposals]
        return fast_rcnn_inference(boxes, probs, [p.image_size for p in proposals],
                                   self.test_score_thresh, self.test_nms_thresh, self.test_topk_per_image)


@ROI_HEADS_REGISTRY.register()
class D2DetROIHeads(StandardROIHeads):
    """``StandardROIHeads`` whose box branch classifies discriminatively pooled RoI features
    and whose boxes come from dense local regression:

    - training: the sampled RoIs train the classifier; the positives, jittered and subsampled,
      train the dense regression head on RoIAlign features;
    - inference: class-wise NMS on the scored proposals, dense regression of the survivors
      (averaging the confident cells' boxes), then class-wise soft-NMS and the top detections.

    With a ``d2det_mask_head`` (``MODEL.MASK_ON``; detectron2's own mask head is not built):

    - training: the overlap targets of dense regression are the GT masks at 7 x 7, and the
      same jittered positives train the mask and the mask-IoU head on the regression features;
    - inference: no soft-NMS (official ``simple_test``); the refined boxes are pooled again,
      their masks predicted for their class, and each mask scored by its box score + 0.3 x its
      predicted mask IoU (``mask_scores``; :class:`MaskScoreCOCOEvaluator` ranks masks by it).
    """

    @configurable
    def __init__(self, *, reg_pooler, reg_head, reg_samples_per_image=96, jitter=0.15,
                 reg_loss_weight=2.0, reg_loss_weighting="released", overlap_loss_weight=1.0,
                 soft_nms_method="linear",
                 soft_nms_iou_thresh=0.5, soft_nms_sigma=0.5, soft_nms_min_score=1e-3,
                 detections_per_image=100, d2det_mask_head=None, mask_size=28, mask_loss_weight=1.0,
                 mask_iou_loss_weight=0.5, mask_iou_score_weight=0.3, **kwargs):
        super().__init__(**kwargs)
        self.d2det_mask_head = d2det_mask_head
        self.mask_size = mask_size
        self.mask_loss_weight = mask_loss_weight
        self.mask_iou_loss_weight = mask_iou_loss_weight
        self.mask_iou_score_weight = mask_iou_score_weight
        self.reg_pooler = reg_pooler
        self.reg_head = reg_head
        self.reg_samples_per_image = reg_samples_per_image
        self.jitter = jitter
        self.reg_loss_weight = reg_loss_weight
        self.reg_loss_weighting = reg_loss_weighting
        self.overlap_loss_weight = overlap_loss_weight
        self.soft_nms = {"method": soft_nms_method, "iou_threshold": soft_nms_iou_thresh,
                         "sigma": soft_nms_sigma, "min_score": soft_nms_min_score}
        self.detections_per_image = detections_per_image

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        c = cfg.MODEL.D2DET
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        ret.update(
            reg_pooler=ROIPooler(c.REG_POOLER_RESOLUTION,
                                 tuple(1.0 / input_shape[f].stride for f in in_features),
                                 c.REG_POOLER_SAMPLING_RATIO, "ROIAlignV2"),
            reg_head=DenseRegressionHead(input_shape[in_features[0]].channels, c.CONV_DIM, c.NUM_CONV,
                                         c.NORM_GROUPS, c.CONV_GROUPS),
            reg_samples_per_image=c.REG_SAMPLES_PER_IMAGE,
            jitter=c.JITTER,
            reg_loss_weight=c.REG_LOSS_WEIGHT,
            reg_loss_weighting=c.REG_LOSS_WEIGHTING,
            overlap_loss_weight=c.OVERLAP_LOSS_WEIGHT,
            soft_nms_method=c.SOFT_NMS_METHOD,
            soft_nms_iou_thresh=c.SOFT_NMS_IOU_THRESH,
            soft_nms_sigma=c.SOFT_NMS_SIGMA,
            soft_nms_min_score=c.SOFT_NMS_MIN_SCORE,
            detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
        if cfg.MODEL.MASK_ON:
            cells = c.REG_POOLER_RESOLUTION // 2
            ret.update(
                d2det_mask_head=D2DetMaskHead(c.CONV_DIM, cfg.MODEL.ROI_HEADS.NUM_CLASSES, cells,
                                              c.MASK_DECONV_DIM, c.MASK_NORM_GROUPS, c.MASK_IOU_FC_DIM),
                mask_size=4 * cells,
                mask_loss_weight=c.MASK_LOSS_WEIGHT,
                mask_iou_loss_weight=c.MASK_IOU_LOSS_WEIGHT,
                mask_iou_score_weight=c.MASK_IOU_SCORE_WEIGHT,
            )
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        # With MODEL.MASK_ON the masks come from D2Det's own branch (d2det_mask_head), not
        # from detectron2's mask head on its own pooler.
        return {}

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        c = cfg.MODEL.D2DET
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"D2Det pools every level with one head; got channels {channels}")
        channels = channels.pop()
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        box_pooler = DiscriminativeRoIPooler(
            channels, resolution, [1.0 / input_shape[f].stride for f in in_features],
            sampling_ratio=c.DEFORM_SAMPLING_RATIO, trans_std=c.TRANS_STD,
            offset_pool_size=c.OFFSET_POOLER_RESOLUTION, offset_fc_dim=c.OFFSET_FC_DIM,
            num_offset_fcs=c.NUM_OFFSET_FC, gate=c.AWP_GATE, shared=c.SHARED_POOLER,
        )
        box_head = build_box_head(cfg, ShapeSpec(channels=channels, height=resolution, width=resolution))
        return {
            "box_in_features": in_features,
            "box_pooler": box_pooler,
            "box_head": box_head,
            "box_predictor": ClassificationOutputs(cfg, box_head.output_shape),
        }

    def _forward_box(self, features, proposals):
        out = super()._forward_box(features, proposals)
        if self.training:
            out.update(self._dense_regression_losses(features, proposals))
            return out
        return self._refine(features, out)

    def _dense_regression_losses(self, features, proposals):
        rois, gts, classes, mask_targets, ratios = [], [], [], [], []
        for p in proposals:
            pos = p[(p.gt_classes >= 0) & (p.gt_classes < self.num_classes)]
            if not pos.has("gt_boxes"):  # an image without objects has no positives
                pos.gt_boxes = Boxes(p.proposal_boxes.tensor[:0])
            pos = pos[torch.randperm(len(pos), device=pos.gt_classes.device)[: self.reg_samples_per_image]]
            boxes = Boxes(jitter_boxes(pos.proposal_boxes.tensor, self.jitter, p.image_size))
            keep = boxes.nonempty()
            rois.append(boxes[keep])
            gts.append(pos.gt_boxes.tensor[keep])
            classes.append(pos.gt_classes[keep])
            if self.d2det_mask_head is not None:
                # Each positive's GT mask cropped to its jittered box at 28 x 28, and the share
                # of the GT's pixels inside the box.
                boxes = rois[-1].tensor
                if len(boxes) and not pos.has("gt_masks"):
                    raise ValueError("MODEL.MASK_ON: the training data has no instance masks "
                                     "('segmentation' in a COCO json)")
                if len(boxes):
                    gt_masks = pos.gt_masks[keep]
                    mask_targets.append(gt_masks.crop_and_resize(boxes, self.mask_size).to(boxes.dtype))
                    ratios.append(area_ratios(boxes, gt_masks))
                else:
                    mask_targets.append(boxes.new_zeros((0, self.mask_size, self.mask_size)))
                    ratios.append(boxes.new_zeros((0,)))
        x = self.reg_pooler([features[f] for f in self.box_in_features], rois)
        boxes, gts, classes = cat([r.tensor for r in rois]), cat(gts), cat(classes)
        if self.d2det_mask_head is None:
            ltrb, overlap_logits = self.reg_head(x)
            return dense_regression_losses(boxes, gts, ltrb, overlap_logits, self.reg_loss_weight,
                                           self.overlap_loss_weight, self.reg_loss_weighting)
        ltrb, overlap_logits, reg_features = self.reg_head(x, return_features=True)
        mask_targets = cat(mask_targets)
        losses = dense_regression_losses(boxes, gts, ltrb, overlap_logits, self.reg_loss_weight,
                                         self.overlap_loss_weight, self.reg_loss_weighting,
                                         overlap=overlap_from_masks(mask_targets, ltrb.shape[-1]))
        mask_logits, mask_iou = self.d2det_mask_head(reg_features, classes)
        losses.update(mask_losses(mask_logits, mask_iou, classes, mask_targets, cat(ratios),
                                  self.mask_loss_weight, self.mask_iou_loss_weight))
        return losses

    def _refine(self, features, instances):
        if sum(len(i) for i in instances) == 0:
            return self._with_empty_masks(instances)
        x = self.reg_pooler([features[f] for f in self.box_in_features], [i.pred_boxes for i in instances])
        ltrb, overlap_logits = self.reg_head(x)
        boxes = cat([i.pred_boxes.tensor for i in instances])
        boxes = average_cell_boxes(decode_dense(boxes, ltrb), overlap_logits)
        results = []
        for inst, b in zip(instances, boxes.split([len(i) for i in instances])):
            b = Boxes(b)  # not clipped (official); detectron2 clips the output
            if self.d2det_mask_head is None:
                keep, scores = batched_soft_nms(b.tensor, inst.scores, inst.pred_classes, **self.soft_nms)
                keep, scores = keep[: self.detections_per_image], scores[: self.detections_per_image]
            else:  # with masks, the official keeps the first pass's NMS only
                keep, scores = torch.arange(len(b), device=b.device), inst.scores
            result = Instances(inst.image_size)
            result.pred_boxes = b[keep]
            result.scores = scores
            result.pred_classes = inst.pred_classes[keep]
            results.append(result)
        if self.d2det_mask_head is not None:
            self._predict_masks(features, results)
        return results

    def _predict_masks(self, features, instances):
        """Masks of the refined boxes (their regression features pooled again), for their
        predicted class, as probabilities (R, 1, M, M), and their ``mask_scores``."""
        x = self.reg_pooler([features[f] for f in self.box_in_features], [i.pred_boxes for i in instances])
        _, _, reg_features = self.reg_head(x, return_features=True)
        classes = cat([i.pred_classes for i in instances])
        mask_logits, mask_iou = self.d2det_mask_head(reg_features, classes)
        probs = class_maps(mask_logits, classes)[:, None].sigmoid()
        box_scores = cat([i.scores for i in instances])
        scores = mask_scores(mask_iou, classes, box_scores, self.mask_iou_score_weight)
        sizes = [len(i) for i in instances]
        for inst, p, s in zip(instances, probs.split(sizes), scores.split(sizes)):
            inst.pred_masks = p
            inst.mask_scores = s

    def _with_empty_masks(self, instances):
        if self.d2det_mask_head is not None:
            for inst in instances:
                inst.pred_masks = inst.pred_boxes.tensor.new_zeros((0, 1, self.mask_size, self.mask_size))
                inst.mask_scores = inst.scores
        return instances
