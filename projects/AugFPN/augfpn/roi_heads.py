"""Consistent Supervision (paper Sec. 3.2) and Soft RoI Selection in detectron2's
``StandardROIHeads``.

Official: mmdet/models/detectors/two_stage.py (``use_consistent_supervision``),
mmdet/models/roi_extractors/all_level_auxiliary.py, mmdet/models/bbox_heads/
bbox_head_auxiliary.py and convfc_bbox_head_auxiliary.py of Gus-Guo/AugFPN.
"""

from detectron2.config import configurable
from detectron2.layers import ROIAlign, ShapeSpec, cat, cross_entropy
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.modeling.roi_heads.box_head import build_box_head
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from torch import nn

from .soft_roi_selection import SoftRoISelection

CS_HEAD_INITS = ("pytorch", "detectron2")


@ROI_HEADS_REGISTRY.register()
class AugFPNROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with, as configured,

    - Soft RoI Selection as the box pooler;
    - Consistent Supervision (training only): every sampled RoI is RoIAligned (7 x 7, 2
      samples) from each raw lateral map the backbone returns as ``"lateral<k>"``; one
      auxiliary box head + predictor, shared by the levels and separate from the main ones,
      classifies and regresses each level's features against the main head's targets; each
      level adds ``cs_weight`` x (its CE + its SmoothL1), as ``loss_cls_lateral<k>`` and
      ``loss_box_reg_lateral<k>``. At inference nothing of it runs.
    """

    @configurable
    def __init__(self, *, cs_poolers=None, cs_box_head=None, cs_predictor=None, cs_weight=0.25, **kwargs):
        super().__init__(**kwargs)
        self.cs_poolers = cs_poolers
        self.cs_box_head = cs_box_head
        self.cs_predictor = cs_predictor
        self.cs_weight = cs_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        c = cfg.MODEL.AUGFPN
        if c.CONSISTENT_SUPERVISION:
            in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
            size = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
            channels = input_shape[in_features[0]].channels
            ret["cs_poolers"] = nn.ModuleDict({
                f.replace("p", "lateral"): ROIAlign(size, 1.0 / input_shape[f].stride, 2, aligned=True)
                for f in in_features})
            ret["cs_box_head"] = build_box_head(cfg, ShapeSpec(channels=channels, height=size, width=size))
            ret["cs_predictor"] = FastRCNNOutputLayers(cfg, ret["cs_box_head"].output_shape)
            ret["cs_weight"] = c.CS_WEIGHT
            if c.CS_HEAD_INIT not in CS_HEAD_INITS:
                raise ValueError(
                    f"MODEL.AUGFPN.CS_HEAD_INIT must be one of {CS_HEAD_INITS}, got {c.CS_HEAD_INIT!r}")
            if c.CS_HEAD_INIT == "pytorch":
                for m in (*ret["cs_box_head"].modules(), *ret["cs_predictor"].modules()):
                    if isinstance(m, (nn.Linear, nn.Conv2d)):
                        m.reset_parameters()
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        if cfg.MODEL.AUGFPN.SOFT_ROI_SELECTION:
            in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
            ret["box_pooler"] = SoftRoISelection(
                input_shape[in_features[0]].channels, cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION,
                [1.0 / input_shape[f].stride for f in in_features],
                cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO or 2)
        return ret

    def _forward_box(self, features, proposals):
        out = super()._forward_box(features, proposals)
        if self.training and self.cs_poolers is not None:
            out.update(self._consistent_supervision_losses(features, proposals))
        return out

    def _consistent_supervision_losses(self, features, proposals):
        missing = [k for k in self.cs_poolers if k not in features]
        if missing:
            raise KeyError(f"Consistent supervision needs the backbone's raw laterals {missing}: "
                           "use MODEL.BACKBONE.NAME build_augfpn_resnet_backbone")
        # The main head's targets (FastRCNNOutputLayers.losses without its logging, which
        # would overwrite the main head's accuracy statistics).
        rois = convert_boxes_to_pooler_format([p.proposal_boxes for p in proposals])
        gt_classes = cat([p.gt_classes for p in proposals])
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals])
        gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals])
        losses = {}
        for name, pooler in self.cs_poolers.items():
            scores, deltas = self.cs_predictor(self.cs_box_head(pooler(features[name], rois)))
            losses[f"loss_cls_{name}"] = self.cs_weight * cross_entropy(scores, gt_classes, reduction="mean")
            losses[f"loss_box_reg_{name}"] = self.cs_weight * self.cs_predictor.box_reg_loss(
                proposal_boxes, gt_boxes, deltas, gt_classes)
        return losses
