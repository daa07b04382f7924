"""Paired RPN: every anchor scores one objectness and regresses a full and a visible proposal."""


import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY, RPN_HEAD_REGISTRY
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from detectron2.modeling.proposal_generator.rpn import RPN, StandardRPNHead
from detectron2.structures import Boxes, Instances, pairwise_iou

from .pairing import match_pairs, pairwise_iof, split_ignore


@RPN_HEAD_REGISTRY.register()
class PairedRPNHead(StandardRPNHead):
    """detectron2's RPN head with 8 deltas per anchor: 4 for the full box, then 4 for the
    visible box."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["box_dim"] = 2 * ret["box_dim"]
        return ret


@PROPOSAL_GENERATOR_REGISTRY.register()
class CrowdRPN(RPN):
    """detectron2's RPN as CrowdDet's FPN baseline runs it: ignore regions (``gt_ignore``) are
    not targets, so anchors on them may be negatives (CrowdDet's fpn_anchor_target keeps only
    the people), and with ``topk_across_levels`` the proposals of an image are the top
    ``PRE_NMS_TOPK`` of all levels together, clipped, small ones dropped, then one NMS over
    all levels (CrowdDet's find_top_rpn_proposals), instead of detectron2's top-k and NMS per
    level."""

    @configurable
    def __init__(self, *, topk_across_levels: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.topk_across_levels = topk_across_levels

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["topk_across_levels"] = cfg.MODEL.PBM.RPN_TOPK_ACROSS_LEVELS
        return ret

    def forward(self, images, features, gt_instances=None):
        if gt_instances is not None:
            gt_instances = [split_ignore(x)[0] for x in gt_instances]
        return super().forward(images, features, gt_instances)

    def predict_proposals(self, anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes):
        if not self.topk_across_levels:
            return super().predict_proposals(anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes)
        with torch.no_grad():  # all levels as one: one top-k, one NMS
            proposals = self._decode_proposals(anchors, pred_anchor_deltas)
            return find_top_rpn_proposals(
                [cat(proposals, 1)], [cat(pred_objectness_logits, 1)], image_sizes, self.nms_thresh,
                self.pre_nms_topk[self.training], self.post_nms_topk[self.training], self.min_box_size,
                self.training,
            )


@PROPOSAL_GENERATOR_REGISTRY.register()
class PairedRPN(CrowdRPN):
    """An anchor is positive for the pair (F, V) when IoU(A, F) >= alpha1 and IoF(A, V) >=
    beta1; negative when its IoU with every full box is below ``IOU_THRESHOLDS[0]``.
    Proposals are pairs (``proposal_boxes``, ``proposal_vis_boxes``), de-duplicated by NMS on
    the full boxes, per level or over all levels (``CrowdRPN``); ignore regions are not
    targets."""

    @configurable
    def __init__(self, *, vis_iof_thresh: float, vis_loss_weight: float, **kwargs):
        super().__init__(**kwargs)
        self.vis_iof_thresh = vis_iof_thresh
        self.vis_loss_weight = vis_loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["vis_iof_thresh"] = cfg.MODEL.PBM.RPN_IOF_THRESH
        ret["vis_loss_weight"] = cfg.MODEL.PBM.RPN_VIS_LOSS_WEIGHT
        if cfg.MODEL.RPN.HEAD_NAME != "PairedRPNHead":
            raise ValueError(
                f"PairedRPN needs MODEL.RPN.HEAD_NAME PairedRPNHead, not {cfg.MODEL.RPN.HEAD_NAME}"
            )
        return ret

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: list[Boxes], gt_instances: list[Instances]):
        """Labels (1 / 0 / -1, sampled) and the matched full and visible boxes of each anchor."""
        anchors = Boxes.cat(anchors)
        neg_thresh, pos_thresh = self.anchor_matcher.thresholds[1:3]
        gt_labels, gt_full, gt_vis = [], [], []
        for gt in gt_instances:
            iou = pairwise_iou(gt.gt_boxes, anchors)
            iof = pairwise_iof(gt.gt_vis_boxes, anchors)
            matched, labels = match_pairs(iou, iof, pos_thresh, self.vis_iof_thresh, neg_thresh,
                                          allow_low_quality_matches=True)
            if self.anchor_boundary_thresh >= 0:
                labels[~anchors.inside_box(gt.image_size, self.anchor_boundary_thresh)] = -1
            gt_labels.append(self._subsample_labels(labels))
            if len(gt) == 0:
                gt_full.append(torch.zeros_like(anchors.tensor))
                gt_vis.append(torch.zeros_like(anchors.tensor))
            else:
                gt_full.append(gt.gt_boxes.tensor[matched])
                gt_vis.append(gt.gt_vis_boxes.tensor[matched])
        return gt_labels, gt_full, gt_vis

    def forward(self, images, features, gt_instances=None):
        if gt_instances is not None:
            gt_instances = [split_ignore(x)[0] for x in gt_instances]
        features = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(features)
        logits, deltas = self.rpn_head(features)
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        # (N, A * 8, H, W) -> (N, H * W * A, 8), in the anchors' order
        deltas = [
            x.view(x.shape[0], -1, 8, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
            for x in deltas
        ]
        full_deltas, vis_deltas = [d[..., :4] for d in deltas], [d[..., 4:] for d in deltas]
        losses = {}
        if self.training:
            gt_labels, gt_full, gt_vis = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(anchors, logits, gt_labels, full_deltas, gt_full)
            pos_mask = torch.stack(gt_labels) == 1
            vis_loss = _dense_box_regression_loss(
                anchors, self.box2box_transform, vis_deltas, gt_vis, pos_mask,
                box_reg_loss_type=self.box_reg_loss_type, smooth_l1_beta=self.smooth_l1_beta,
            )
            losses["loss_rpn_vis_loc"] = (
                vis_loss / (self.batch_size_per_image * len(gt_labels)) * self.vis_loss_weight
                * self.loss_weight.get("loss_rpn_loc", 1.0)
            )
        proposals = self.predict_paired_proposals(anchors, logits, full_deltas, vis_deltas,
                                                  images.image_sizes)
        return proposals, losses

    @torch.no_grad()
    def predict_paired_proposals(self, anchors, logits, full_deltas, vis_deltas, image_sizes):
        """Decodes both boxes of every anchor, then detectron2's proposal selection (top-k per
        level, clip, drop small full boxes and empty visible ones, NMS per level on the full
        boxes, top-k) carrying the visible boxes along; with ``topk_across_levels`` all levels
        are one (one top-k, one NMS)."""
        full = self._decode_proposals(anchors, full_deltas)
        vis = self._decode_proposals(anchors, vis_deltas)
        if self.topk_across_levels:
            full, vis, logits = [cat(full, 1)], [cat(vis, 1)], [cat(logits, 1)]
        pre_topk, post_topk = self.pre_nms_topk[self.training], self.post_nms_topk[self.training]
        num_images = len(image_sizes)
        batch = torch.arange(num_images, device=full[0].device)
        top_full, top_vis, top_scores, levels = [], [], [], []
        for lvl, (f, v, s) in enumerate(zip(full, vis, logits)):
            k = min(s.shape[1], pre_topk)
            s, idx = s.sort(descending=True, dim=1)
            s, idx = s[:, :k], idx[:, :k]
            top_full.append(f[batch[:, None], idx])
            top_vis.append(v[batch[:, None], idx])
            top_scores.append(s)
            levels.append(torch.full((k,), lvl, dtype=torch.int64, device=s.device))
        top_full, top_vis, top_scores = cat(top_full, 1), cat(top_vis, 1), cat(top_scores, 1)
        levels = cat(levels)
        results = []
        for n, image_size in enumerate(image_sizes):
            f, v, s, lvl = Boxes(top_full[n]), Boxes(top_vis[n]), top_scores[n], levels
            valid = torch.isfinite(f.tensor).all(1) & torch.isfinite(v.tensor).all(1) & torch.isfinite(s)
            if not valid.all():
                if self.training:
                    raise FloatingPointError(
                        "Predicted boxes or scores contain Inf/NaN. Training has diverged."
                    )
                f, v, s, lvl = f[valid], v[valid], s[valid], lvl[valid]
            f.clip(image_size)
            v.clip(image_size)
            # A pair needs both boxes: a visible proposal clipped to nothing can be neither
            # pooled nor regressed from.
            keep = f.nonempty(threshold=self.min_box_size) & v.nonempty()
            f, v, s, lvl = f[keep], v[keep], s[keep], lvl[keep]
            keep = batched_nms(f.tensor, s, lvl, self.nms_thresh)[:post_topk]
            res = Instances(image_size)
            res.proposal_boxes, res.proposal_vis_boxes = f[keep], v[keep]
            res.objectness_logits = s[keep]
            results.append(res)
        return results
