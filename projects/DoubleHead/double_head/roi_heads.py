"""Double-Head R-CNN's RoI heads (paper Sec. 4): an fc head and a conv head on the same RoIs,
each with its own classifier and class-specific box regressor; their losses weighted as in
Double-Head(-Ext) (Sec. 4.2-4.3) and their outputs combined at inference (Eq. 3).

Official: maskrcnn_benchmark/modeling/roi_heads/box_head/{box_head.py, inference.py,
roi_box_predictors.py (``FPNPredictorNeighbor``)} and modeling/poolers.py
(``PoolerNeighbor``) of wuyuebupt/doubleheadsrcnn.
"""

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat, cross_entropy
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import assign_boxes_to_levels, convert_boxes_to_pooler_format
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from detectron2.structures import Boxes

from .conv_head import DoubleHeadConvHead

TEST_SCORES = ("fused", "fc", "conv")
TEST_BOXES = ("conv", "fc")


def enlarge_boxes(boxes: Boxes, scale: float) -> Boxes:
    """Each box scaled by ``scale`` about its centre (width and height x scale), unclipped."""
    t = boxes.tensor
    centre = (t[:, :2] + t[:, 2:]) / 2
    half = (t[:, 2:] - t[:, :2]) * (scale / 2)
    return Boxes(torch.cat([centre - half, centre + half], dim=1))


def pool_at_levels_of(pooler, features, level_boxes, pool_boxes):
    """``pooler`` (a detectron2 ``ROIPooler``) applied to ``pool_boxes``, each pooled from the
    level that ``level_boxes`` (the same number of boxes per image) are assigned to."""
    rois = convert_boxes_to_pooler_format(pool_boxes)
    if len(pooler.level_poolers) == 1:
        return pooler.level_poolers[0](features[0], rois)
    levels = assign_boxes_to_levels(level_boxes, pooler.min_level, pooler.max_level,
                                    pooler.canonical_box_size, pooler.canonical_level)
    out = features[0].new_zeros((len(rois), features[0].shape[1], *pooler.output_size))
    for level, level_pooler in enumerate(pooler.level_poolers):
        inds = torch.nonzero(levels == level).squeeze(1)
        out.index_put_((inds,), level_pooler(features[level], rois[inds]))
    return out


@ROI_HEADS_REGISTRY.register()
class DoubleHeadROIHeads(StandardROIHeads):
    """``StandardROIHeads`` whose box branch is two heads on the same sampled RoIs:

    - the fc head: detectron2's box head (``MODEL.ROI_BOX_HEAD``) on the RoI, with
      ``box_predictor``;
    - the conv head (``DoubleHeadConvHead``) on the RoI enlarged ``enlarge`` x about its
      centre and pooled from the original RoI's level, with ``conv_predictor``.

    Training adds each head's CE and box loss (detectron2's ``FastRCNNOutputLayers`` targets)
    with its own weight: ``loss_cls_fc``, ``loss_box_reg_fc``, ``loss_cls_conv``,
    ``loss_box_reg_conv``. Inference takes the class probabilities from one head or fuses
    them, the boxes from one head, then detectron2's per-class threshold, NMS and top-k.
    """

    @configurable
    def __init__(self, *, conv_head, conv_predictor, enlarge=1.3, loss_weights=(0.5, 2.0, 1.4, 0.6),
                 test_scores="fused", test_boxes="conv", **kwargs):
        super().__init__(**kwargs)
        if test_scores not in TEST_SCORES:
            raise ValueError(
                f"MODEL.DOUBLE_HEAD.TEST_SCORES must be one of {TEST_SCORES}, got {test_scores!r}")
        if test_boxes not in TEST_BOXES:
            raise ValueError(
                f"MODEL.DOUBLE_HEAD.TEST_BOXES must be one of {TEST_BOXES}, got {test_boxes!r}")
        if self.train_on_pred_boxes:
            raise ValueError("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES is not supported by Double-Head")
        self.conv_head = conv_head
        self.conv_predictor = conv_predictor
        self.enlarge = enlarge
        # conv cls, conv reg, fc cls, fc reg (the official --mask-loss order)
        self.loss_weights = tuple(loss_weights)
        self.test_scores = test_scores
        self.test_boxes = test_boxes

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        c = cfg.MODEL.DOUBLE_HEAD
        if not c.NORM:
            raise ValueError("MODEL.DOUBLE_HEAD.NORM must name a norm (BN, SyncBN, naiveSyncBN, GN)")
        size = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        channels = input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels
        shape = ShapeSpec(channels=channels, height=size, width=size)
        ret["conv_head"] = DoubleHeadConvHead.from_config(cfg, shape)
        ret["conv_predictor"] = FastRCNNOutputLayers(cfg, ret["conv_head"].output_shape)
        ret["enlarge"] = c.ENLARGE
        ret["loss_weights"] = (c.CONV_CLS_WEIGHT, c.CONV_REG_WEIGHT, c.FC_CLS_WEIGHT, c.FC_REG_WEIGHT)
        ret["test_scores"] = c.TEST_SCORES
        ret["test_boxes"] = c.TEST_BOXES
        return ret

    def _forward_box(self, features, proposals):
        features = [features[f] for f in self.box_in_features]
        boxes = [p.proposal_boxes for p in proposals]
        fc_pred = self.box_predictor(self.box_head(self.box_pooler(features, boxes)))
        enlarged = [enlarge_boxes(b, self.enlarge) for b in boxes]
        conv_pred = self.conv_predictor(self.conv_head(
            pool_at_levels_of(self.box_pooler, features, boxes, enlarged)))
        if self.training:
            return self.losses(conv_pred, fc_pred, proposals)
        return self.inference(conv_pred, fc_pred, proposals)

    def losses(self, conv_pred, fc_pred, proposals):
        """The four weighted losses; the fc head's also log detectron2's ``fast_rcnn/*``
        accuracy statistics."""
        w_conv_cls, w_conv_reg, w_fc_cls, w_fc_reg = self.loss_weights
        fc = self.box_predictor.losses(fc_pred, proposals)
        scores, deltas = conv_pred
        gt_classes = cat([p.gt_classes for p in proposals])
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals])
        gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals])
        return {
            "loss_cls_fc": w_fc_cls * fc["loss_cls"],
            "loss_box_reg_fc": w_fc_reg * fc["loss_box_reg"],
            "loss_cls_conv": w_conv_cls * cross_entropy(scores, gt_classes, reduction="mean"),
            "loss_box_reg_conv": w_conv_reg * self.conv_predictor.box_reg_loss(
                proposal_boxes, gt_boxes, deltas, gt_classes),
        }

    def fused_probs(self, conv_pred, fc_pred, proposals):
        """Per image, the (R, K + 1) class probabilities chosen by ``test_scores``."""
        if self.test_scores == "fc":
            return self.box_predictor.predict_probs(fc_pred, proposals)
        conv = self.conv_predictor.predict_probs(conv_pred, proposals)
        if self.test_scores == "conv":
            return conv
        fc = self.box_predictor.predict_probs(fc_pred, proposals)
        return [1 - (1 - c) * (1 - f) for c, f in zip(conv, fc)]

    def inference(self, conv_pred, fc_pred, proposals):
        scores = self.fused_probs(conv_pred, fc_pred, proposals)
        if self.test_boxes == "conv":
            boxes = self.conv_predictor.predict_boxes(conv_pred, proposals)
        else:
            boxes = self.box_predictor.predict_boxes(fc_pred, proposals)
        p = self.box_predictor
        instances, _ = fast_rcnn_inference(
            boxes, scores, [x.image_size for x in proposals],
            p.test_score_thresh, p.test_nms_thresh, p.test_topk_per_image)
        return instances
