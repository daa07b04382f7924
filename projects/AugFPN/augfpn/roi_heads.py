"""Consistent Supervision (paper Sec. 3.2) and Soft RoI Selection in detectron2's
``StandardROIHeads``.

Official: mmdet/models/detectors/two_stage.py (``use_consistent_supervision``),
mmdet/models/roi_extractors/all_level_auxiliary.py, mmdet/models/bbox_heads/
bbox_head_auxiliary.py, convfc_bbox_head_auxiliary.py, mmdet/models/mask_heads/fcn_mask_head.py
(``loss_aux``) and configs/mask_rcnn_r50_augfpn_1x.py of Gus-Guo/AugFPN.
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ROIAlign, ShapeSpec, cat, cross_entropy
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.modeling.roi_heads.box_head import build_box_head
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.modeling.roi_heads.mask_head import build_mask_head
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
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

    With ``MODEL.MASK_ON`` (AugFPN on Mask R-CNN): the mask RoIs are pooled by a Soft RoI
    Selection of their own (14 x 14), and Consistent Supervision adds, per level, ``cs_weight``
    x the mask BCE of an auxiliary mask head (shared by the levels, separate from the main one)
    on the foreground RoIs RoIAligned (14 x 14) from the raw laterals, against the main head's
    mask targets (``loss_mask_lateral<k>``).
    """

    @configurable
    def __init__(self, *, cs_poolers=None, cs_box_head=None, cs_predictor=None, cs_weight=0.25,
                 cs_mask_poolers=None, cs_mask_head=None, **kwargs):
        super().__init__(**kwargs)
        self.cs_poolers = cs_poolers
        self.cs_box_head = cs_box_head
        self.cs_predictor = cs_predictor
        self.cs_weight = cs_weight
        self.cs_mask_poolers = cs_mask_poolers
        self.cs_mask_head = cs_mask_head

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
            if cfg.MODEL.MASK_ON:
                size = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
                ret["cs_mask_poolers"] = nn.ModuleDict({
                    f.replace("p", "lateral"): ROIAlign(size, 1.0 / input_shape[f].stride, 2, aligned=True)
                    for f in in_features})
                shape = ShapeSpec(channels=channels, height=size, width=size)
                ret["cs_mask_head"] = build_mask_head(cfg, shape)
                if c.CS_HEAD_INIT == "pytorch":
                    # mmdet's ConvModule initialises its own convs (kaiming, fan-out: detectron2's
                    # too); the never-initialised head keeps PyTorch's default for the deconv and
                    # the mask logits.
                    for m in (ret["cs_mask_head"].deconv, ret["cs_mask_head"].predictor):
                        m.reset_parameters()
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        ret = super()._init_mask_head(cfg, input_shape)
        if cfg.MODEL.MASK_ON and cfg.MODEL.AUGFPN.SOFT_ROI_SELECTION:
            in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
            ret["mask_pooler"] = SoftRoISelection(
                input_shape[in_features[0]].channels, cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
                [1.0 / input_shape[f].stride for f in in_features],
                cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO or 2)
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

    def _forward_mask(self, features, instances):
        out = super()._forward_mask(features, instances)
        if self.training and self.cs_mask_head is not None:
            foreground, _ = select_foreground_proposals(instances, self.num_classes)
            out.update(self._consistent_mask_losses(features, foreground))
        return out

    def _check_laterals(self, features):
        missing = [k for k in self.cs_poolers if k not in features]
        if missing:
            raise KeyError(f"Consistent supervision needs the backbone's raw laterals {missing}: "
                           "use MODEL.BACKBONE.NAME build_augfpn_resnet_backbone")

    def _consistent_mask_losses(self, features, proposals):
        """Per raw lateral, ``cs_weight`` x the auxiliary mask head's BCE on each foreground
        RoI's GT-class mask, against the main head's targets (official ``loss_aux``: the mean
        over the RoIs' pixels, alpha 0.25)."""
        self._check_laterals(features)
        rois = convert_boxes_to_pooler_format([p.proposal_boxes for p in proposals])
        gt_classes = cat([p.gt_classes for p in proposals])
        losses, targets = {}, None
        for name, pooler in self.cs_mask_poolers.items():
            logits = self.cs_mask_head.layers(pooler(features[name], rois))
            if len(logits) == 0:  # no foreground RoI in the batch: a zero that keeps the graph
                losses[f"loss_mask_{name}"] = logits.sum() * 0
                continue
            if targets is None:
                targets = cat([p.gt_masks.crop_and_resize(p.proposal_boxes.tensor, logits.shape[-1])
                               for p in proposals if len(p)]).to(logits.dtype)
            # Class-specific masks: the GT class's map (class-agnostic: the only one).
            index = gt_classes if logits.shape[1] > 1 else torch.zeros_like(gt_classes)
            logits = logits[torch.arange(len(logits), device=logits.device), index]
            losses[f"loss_mask_{name}"] = self.cs_weight * F.binary_cross_entropy_with_logits(
                logits, targets, reduction="mean")
        return losses

    def _consistent_supervision_losses(self, features, proposals):
        self._check_laterals(features)
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
