"""Faster R-CNN's box branch with the feature intertwiner (paper Sec. 3, Fig. 2).

Official: lib/sub_module.py ``Dev.forward`` (structure "beta"), lib/model.py ``meta_loss`` and
lib/workflow.py ``train_epoch`` (loss factor, negative meta-loss set to 0) of
hli2020/feature_intertwiner.
"""

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format
from detectron2.utils import comm
from torch import distributed as dist

from .divergence import OTMetaLoss, l2_meta_loss
from .intertwiner import ClassBuffer, Critic, MakeUpLayer, class_sums, intertwiner_sets

META_LOSSES = ("none", "l2", "ot")


def _pooler(cfg, input_shape, resolution):
    """The box head's pooler settings at ``resolution``, with InterNet's canonical box size."""
    in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
    return ROIPooler(
        output_size=resolution,
        scales=tuple(1.0 / input_shape[k].stride for k in in_features),
        sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
        pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        canonical_box_size=cfg.MODEL.INTERNET.CANONICAL_BOX_SIZE,
    )


@ROI_HEADS_REGISTRY.register()
class InterNetROIHeads(StandardROIHeads):
    """``StandardROIHeads`` whose box head pools every RoI from the make-up layer's output, and
    which adds, in training, the meta-loss ``loss_meta``:

    for each level l of ``meta_levels``, the critic maps the less reliable set (RoIs of level
    l, pooled from make-up(P_l)) and the reliable set (RoIs of the levels above, pooled from
    P_l, no gradient); per-class means of the reliable features (background left out) update
    the buffer; the divergence between the less reliable class centroids (all meta levels
    together) and the buffer's centroids, over the classes present in both, times
    ``meta_weight``, is the loss (negative values set to 0). At inference only the make-up
    layer runs.
    """

    @configurable
    def __init__(self, *, makeup=None, meta_loss="none", meta_levels=(), meta_pooler=None,
                 critic=None, buffer=None, ot=None, meta_weight=0.0, **kwargs):
        super().__init__(**kwargs)
        if self.train_on_pred_boxes:
            raise ValueError("InterNetROIHeads does not support MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES")
        self.makeup = makeup
        self.meta_loss = meta_loss
        self.meta_levels = tuple(meta_levels)
        self.meta_pooler = meta_pooler
        self.critic = critic
        self.buffer = buffer
        self.ot = ot
        self.meta_weight = meta_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        c = cfg.MODEL.INTERNET
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        channels = input_shape[in_features[0]].channels
        if c.MAKEUP_LAYER:
            ret["makeup"] = MakeUpLayer(channels, c.NORM)
        if c.META_LOSS not in META_LOSSES:
            raise ValueError(f"MODEL.INTERNET.META_LOSS must be one of {META_LOSSES}, got {c.META_LOSS!r}")
        if c.META_LOSS == "none":
            return ret
        pooler = ret["box_pooler"]
        levels = range(pooler.min_level, pooler.max_level)  # the top level has nothing above it
        if not c.META_LEVELS or any(level not in levels for level in c.META_LEVELS):
            raise ValueError(f"MODEL.INTERNET.META_LEVELS must be levels of {list(in_features)} below the "
                             f"top one ({list(levels)}), got {list(c.META_LEVELS)}")
        critic = Critic(channels, c.POOLER_RESOLUTION, c.CRITIC_CHANNELS, sigmoid=c.META_LOSS == "l2")
        ret.update(
            meta_loss=c.META_LOSS, meta_levels=c.META_LEVELS, critic=critic,
            meta_pooler=_pooler(cfg, input_shape, c.POOLER_RESOLUTION),
            buffer=ClassBuffer(cfg.MODEL.ROI_HEADS.NUM_CLASSES, critic.out_channels),
            meta_weight=c.L2_WEIGHT if c.META_LOSS == "l2" else c.OT_WEIGHT,
        )
        if c.META_LOSS == "ot":
            ret["ot"] = OTMetaLoss(critic.out_channels, c.OT_CRITIC_DIM, c.OT_EPSILON, c.OT_ITERS,
                                   c.OT_CRITIC)
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_pooler"] = _pooler(cfg, input_shape, cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION)
        return ret

    def _forward_box(self, features, proposals):
        raw = [features[f] for f in self.box_in_features]
        made_up = [self.makeup(x) for x in raw] if self.makeup is not None else raw
        box_features = self.box_head(self.box_pooler(made_up, [p.proposal_boxes for p in proposals]))
        predictions = self.box_predictor(box_features)
        del box_features
        if not self.training:
            return self.box_predictor.inference(predictions, proposals)[0]
        losses = self.box_predictor.losses(predictions, proposals)
        if self.meta_loss != "none":
            losses["loss_meta"] = self.meta_weight * self.intertwiner_loss(raw, made_up, proposals)
        return losses

    def roi_levels(self, boxes):
        """The level (2, 3, ...) of each RoI, as the box pooler assigns it."""
        p = self.box_pooler
        return assign_boxes_to_levels(boxes, p.min_level, p.max_level, p.canonical_box_size,
                                      p.canonical_level) + p.min_level

    def centroid_sums(self, raw, made_up, proposals):
        """Per-class sums and counts of the critic's features of the less reliable and of the
        reliable sets over all meta levels. A level without less reliable RoIs adds to neither
        set, and an empty set is not passed to the critic (official). The critic's BatchNorm is
        in eval mode, so a set of one RoI is fine and no process waits on another's sets."""
        boxes = [p.proposal_boxes for p in proposals]
        rois = convert_boxes_to_pooler_format(boxes)
        levels = self.roi_levels(boxes)
        labels = cat([p.gt_classes for p in proposals])
        k, d = self.num_classes, self.critic.out_channels
        less = [rois.new_zeros(k, d), rois.new_zeros(k)]
        reliable = [rois.new_zeros(k, d), rois.new_zeros(k)]
        for level in self.meta_levels:
            i = level - self.meta_pooler.min_level
            pool = self.meta_pooler.level_poolers[i]
            is_less, is_reliable = intertwiner_sets(levels, level)
            if not is_less.any():
                continue
            for acc, x in zip(less, class_sums(self.critic(pool(made_up[i], rois[is_less])),
                                               labels[is_less], k)):
                acc += x
            if is_reliable.any():
                with torch.no_grad():  # the reliable side gets no gradient (BIG_FEAT_DETACH)
                    sums = class_sums(self.critic(pool(raw[i], rois[is_reliable])), labels[is_reliable], k)
                for acc, x in zip(reliable, sums):
                    acc += x
        return less, reliable

    def intertwiner_loss(self, raw, made_up, proposals):
        """The unweighted meta-loss of one training step; also updates the buffer."""
        (less_sum, less_count), (reliable_sum, reliable_count) = self.centroid_sums(raw, made_up, proposals)
        if comm.get_world_size() > 1:  # one buffer, the same on every process
            dist.all_reduce(reliable_sum)
            dist.all_reduce(reliable_count)
        self.buffer.update(reliable_sum, reliable_count)
        # Every meta-module takes part in the graph (DDP expects gradients for all parameters).
        loss = sum(p.sum() for m in (self.critic, self.ot) if m is not None for p in m.parameters()) * 0.0
        present = (less_count > 0) & (self.buffer.count > 0)
        if not present.any():
            return loss
        x = less_sum[present] / less_count[present, None]
        y = self.buffer.mean[present]
        divergence = l2_meta_loss(x, y) if self.meta_loss == "l2" else self.ot(x, y)
        return loss + divergence.clamp(min=0)
