"""Paired R-CNN: one score and two boxes (full, visible) per proposal pair, from the PPFE feature."""

import math

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms, cat
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads import build_box_head
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import get_event_storage
from torch import nn

from .pairing import ignored_by_regions, match_pairs, r2nms, split_ignore
from .ppfe import PPFE

NMS_TYPES = ("r2nms", "greedy")


class PairedOutputLayers(FastRCNNOutputLayers):
    """detectron2's box predictor plus a second regression branch for the visible box.

    ``forward`` returns ``(scores, full_deltas, vis_deltas)``; full deltas are relative to the
    full proposal, visible deltas to the visible proposal. At inference, NMS is R2NMS
    (``nms="r2nms"``: overlap of the visible boxes) or greedy NMS on the full boxes.
    """

    @configurable
    def __init__(self, input_shape, *, vis_loss_weight=1.0, nms="r2nms", **kwargs):
        super().__init__(input_shape, **kwargs)
        if nms not in NMS_TYPES:
            raise ValueError(f"MODEL.PBM.NMS must be one of {NMS_TYPES}, not {nms!r}")
        self.vis_bbox_pred = nn.Linear(self.bbox_pred.in_features, self.bbox_pred.out_features)
        nn.init.normal_(self.vis_bbox_pred.weight, std=0.001)
        nn.init.constant_(self.vis_bbox_pred.bias, 0)
        self.vis_loss_weight = vis_loss_weight
        self.nms = nms

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["vis_loss_weight"] = cfg.MODEL.PBM.RCNN_VIS_LOSS_WEIGHT
        ret["nms"] = cfg.MODEL.PBM.NMS
        return ret

    def forward(self, x):
        scores, full_deltas = super().forward(x)
        return scores, full_deltas, self.vis_bbox_pred(torch.flatten(x, start_dim=1))

    def losses(self, predictions, proposals):
        scores, full_deltas, vis_deltas = predictions
        losses = super().losses((scores, full_deltas), proposals)
        if len(proposals):
            prop_vis = cat([p.proposal_vis_boxes.tensor for p in proposals])
            gt_vis = cat([(p.gt_vis_boxes if p.has("gt_vis_boxes") else p.proposal_vis_boxes).tensor
                          for p in proposals])
            gt_classes = cat([p.gt_classes for p in proposals])
        else:
            prop_vis = gt_vis = torch.empty((0, 4), device=vis_deltas.device)
            gt_classes = torch.empty(0, dtype=torch.long, device=vis_deltas.device)
        losses["loss_box_reg_vis"] = (
            self.box_reg_loss(prop_vis, gt_vis, vis_deltas, gt_classes)
            * self.vis_loss_weight * self.loss_weight.get("loss_box_reg", 1.0)
        )
        return losses

    def inference(self, predictions, proposals):
        scores, full_deltas, vis_deltas = predictions
        full = self.predict_boxes((scores, full_deltas), proposals)
        vis = self._decode(vis_deltas, [p.proposal_vis_boxes for p in proposals])
        probs = self.predict_probs((scores, full_deltas), proposals)
        results = [
            paired_inference_single_image(
                f, v, s, p.image_size, self.test_score_thresh, self.test_nms_thresh,
                self.test_topk_per_image, self.nms,
            )
            for f, v, s, p in zip(full, vis, probs, proposals)
        ]
        return results, None

    def _decode(self, deltas, proposal_boxes):
        if not len(proposal_boxes):
            return []
        boxes = self.box2box_transform.apply_deltas(deltas, cat([b.tensor for b in proposal_boxes]))
        return boxes.split([len(b) for b in proposal_boxes])


def paired_inference_single_image(full, vis, scores, image_shape, score_thresh, nms_thresh, topk, nms):
    """detectron2's ``fast_rcnn_inference_single_image`` for pairs: the score threshold, then
    R2NMS (``nms="r2nms"``) or greedy NMS on the full boxes; the kept pairs are the output
    (``pred_boxes`` full, ``pred_vis_boxes`` visible)."""
    valid = torch.isfinite(full).all(1) & torch.isfinite(vis).all(1) & torch.isfinite(scores).all(1)
    full, vis, scores = full[valid], vis[valid], scores[valid][:, :-1]
    num_reg = full.shape[1] // 4
    boxes = []
    for b in (full, vis):
        b = Boxes(b.reshape(-1, 4))
        b.clip(image_shape)
        boxes.append(b.tensor.view(-1, num_reg, 4))
    mask = scores > score_thresh
    inds = mask.nonzero()
    if num_reg == 1:
        full, vis = boxes[0][inds[:, 0], 0], boxes[1][inds[:, 0], 0]
    else:
        full, vis = boxes[0][mask], boxes[1][mask]
    scores = scores[mask]
    if nms == "r2nms":
        keep = r2nms(vis, scores, inds[:, 1], nms_thresh)
    else:
        keep = batched_nms(full, scores, inds[:, 1], nms_thresh)
    if topk >= 0:
        keep = keep[:topk]
    result = Instances(image_shape)
    result.pred_boxes, result.pred_vis_boxes = Boxes(full[keep]), Boxes(vis[keep])
    result.scores, result.pred_classes = scores[keep], inds[keep, 1]
    return result


def _log_samples(gt_classes_per_image, num_classes):
    storage = get_event_storage()
    num_fg = [((c >= 0) & (c < num_classes)).sum().item() for c in gt_classes_per_image]
    num_bg = [(c == num_classes).sum().item() for c in gt_classes_per_image]
    storage.put_scalar("roi_head/num_fg_samples", sum(num_fg) / len(num_fg))
    storage.put_scalar("roi_head/num_bg_samples", sum(num_bg) / len(num_bg))


@ROI_HEADS_REGISTRY.register()
class CrowdROIHeads(StandardROIHeads):
    """detectron2's R-CNN with CrowdDet's ignore regions (``gt_ignore``): the people are the
    targets, and a RoI whose IoU with every person is below the foreground threshold but which
    lies in an ignore region (``ignored_by_regions``) is neither foreground nor background.
    The CrowdHuman baseline's R-CNN."""

    @configurable
    def __init__(self, *, ignore_ioa_thresh: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.ignore_ioa_thresh = ignore_ioa_thresh

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["ignore_ioa_thresh"] = cfg.MODEL.PBM.IGNORE_IOA_THRESH
        return ret

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals, targets):
        targets, regions = zip(*[split_ignore(t) for t in targets])
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        out = []
        for p, t, r in zip(proposals, targets, regions):
            iou = pairwise_iou(t.gt_boxes, p.proposal_boxes)
            matched, labels = self.proposal_matcher(iou)
            labels[ignored_by_regions(p.proposal_boxes, iou, r, self.ignore_ioa_thresh)] = -1
            sampled, gt_classes = self._sample_proposals(matched, labels, t.gt_classes)
            p = p[sampled]
            p.gt_classes = gt_classes
            if len(t):
                p.gt_boxes = t.gt_boxes[matched[sampled]]
            out.append(p)
        _log_samples([p.gt_classes for p in out], self.num_classes)
        return out


@ROI_HEADS_REGISTRY.register()
class PBMROIHeads(CrowdROIHeads):
    """Paired R-CNN. Each proposal pair is pooled twice (full and visible proposal, each from
    its own FPN level), fused by the PPFE and classified and regressed once. A pair is
    positive for the ground-truth pair (F, V) when IoU(Pf, F) >= alpha2 and IoU(Pv, V) >= beta2,
    background when IoU(Pf, F) < alpha2 for every F, ignored otherwise; pairs whose full
    proposal lies in an ignore region are ignored as in ``CrowdROIHeads``."""

    @configurable
    def __init__(self, *, ppfe: nn.Module, vis_iou_thresh: float, **kwargs):
        super().__init__(**kwargs)
        self.ppfe = ppfe
        self.vis_iou_thresh = vis_iou_thresh
        self.full_iou_thresh = self.proposal_matcher.thresholds[1]

    @classmethod
    def from_config(cls, cfg, input_shape):
        if len(cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS) != 1:
            raise ValueError("PBMROIHeads takes one MODEL.ROI_HEADS.IOU_THRESHOLDS value (alpha2)")
        if cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON:
            raise ValueError("PBMROIHeads predicts boxes only: set MODEL.MASK_ON and KEYPOINT_ON False")
        ret = super().from_config(cfg, input_shape)
        ret["vis_iou_thresh"] = cfg.MODEL.PBM.RCNN_VIS_IOU_THRESH
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        channels = {input_shape[f].channels for f in in_features}
        assert len(channels) == 1, channels
        box_head = build_box_head(  # the PPFE feature has twice the channels
            cfg, ShapeSpec(channels=2 * channels.pop(), height=resolution, width=resolution)
        )
        return {
            "box_in_features": in_features,
            "box_pooler": ROIPooler(
                output_size=resolution,
                scales=tuple(1.0 / input_shape[k].stride for k in in_features),
                sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
                pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
            ),
            "box_head": box_head,
            "box_predictor": PairedOutputLayers(cfg, box_head.output_shape),
            "ppfe": PPFE(cfg.MODEL.PBM.FUSION),
        }

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals, targets):
        targets, regions = zip(*[split_ignore(t) for t in targets])
        if self.proposal_append_gt:  # every ground-truth pair is a proposal pair too
            proposals = [Instances.cat([p, _gt_pairs_as_proposals(t)]) for p, t in zip(proposals, targets)]
        out = []
        for p, t, r in zip(proposals, targets, regions):
            full_iou = pairwise_iou(t.gt_boxes, p.proposal_boxes)
            matched, labels = match_pairs(
                full_iou, pairwise_iou(t.gt_vis_boxes, p.proposal_vis_boxes),
                self.full_iou_thresh, self.vis_iou_thresh, self.full_iou_thresh,
            )
            labels[ignored_by_regions(p.proposal_boxes, full_iou, r, self.ignore_ioa_thresh)] = -1
            sampled, gt_classes = self._sample_proposals(matched, labels, t.gt_classes)
            p = p[sampled]
            p.gt_classes = gt_classes
            if len(t):
                p.gt_boxes = t.gt_boxes[matched[sampled]]
                p.gt_vis_boxes = t.gt_vis_boxes[matched[sampled]]
            out.append(p)
        _log_samples([p.gt_classes for p in out], self.num_classes)
        return out

    def _forward_box(self, features, proposals):
        features = [features[f] for f in self.box_in_features]
        full_boxes = [p.proposal_boxes for p in proposals]
        vis_boxes = [p.proposal_vis_boxes for p in proposals]
        x = self.ppfe(
            self.box_pooler(features, full_boxes), self.box_pooler(features, vis_boxes),
            cat([b.tensor for b in full_boxes]), cat([b.tensor for b in vis_boxes]),
        )
        predictions = self.box_predictor(self.box_head(x))
        if self.training:
            return self.box_predictor.losses(predictions, proposals)
        return self.box_predictor.inference(predictions, proposals)[0]


def _gt_pairs_as_proposals(gt):
    """The ground-truth pairs of one image as proposal pairs with (almost) certain objectness."""
    prop = Instances(gt.image_size)
    prop.proposal_boxes = gt.gt_boxes
    prop.proposal_vis_boxes = gt.gt_vis_boxes
    logit = math.log((1.0 - 1e-10) / (1 - (1.0 - 1e-10)))  # as detectron2's gt proposals
    prop.objectness_logits = torch.full((len(gt),), logit, device=gt.gt_boxes.device)
    return prop
