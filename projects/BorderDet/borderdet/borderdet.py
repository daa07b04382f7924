"""BorderDet (Qiu et al., ECCV 2020): FCOS whose coarse boxes are re-scored and refined from
border features (the Border Alignment Module).

The FCOS half is the official code's FCOS (``MODEL.BORDERDET.FCOS "official"``) or detectron2's
(``"detectron2"``); see ``add_borderdet_config``. Per level, the FCOS towers give the coarse
prediction (cls, box, centerness). The coarse boxes, detached, mapped to the feature map (a
location's own cell for an edge through it) and clamped to it, select where BorderAlign pools
in the border branches: the classification branch reads the cls tower, the regression branch the box
tower. Training adds a focal loss on the border classes and an L1 loss on the border offsets;
inference multiplies the FCOS score by the border score and moves each box by the border
offsets.
"""

import math

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, batched_nms, cat
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from fvcore.nn import giou_loss, sigmoid_focal_loss_jit

from .border_branch import BorderBranch
from .border_targets import apply_border_deltas, border_targets
from .vendored import Scale, add_group_norm, fcos_label_anchors, normalizer_over_processes, resnet_fpn_p6p7

__all__ = ["BorderDet", "BorderDetHead", "build_borderdet_resnet_fpn_backbone"]

FCOS_KINDS = ("official", "detectron2")


def _fcos_kind(cfg):
    kind = cfg.MODEL.BORDERDET.FCOS
    if kind not in FCOS_KINDS:
        raise ValueError(f"MODEL.BORDERDET.FCOS must be one of {FCOS_KINDS}, not {kind!r}")
    return kind


class BorderDetHead(FCOSHead):
    """detectron2's FCOS head plus the two border branches (official ``BorderHead``); with
    ``scales``, the official learnable Scale per level on the box regression."""

    def __init__(self, *, input_shape, conv_dims, num_classes, norm="", border_cls_channels=256,
                 border_reg_channels=128, pool_size=10, prior_prob=0.01, scales=False, **kwargs):
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, num_classes=num_classes,
                         prior_prob=prior_prob, norm="" if norm == "GN" else norm, **kwargs)
        if norm == "GN":
            add_group_norm(self)
        c = conv_dims[-1]
        self.border_cls_subnet = BorderBranch(c, border_cls_channels, pool_size)
        self.border_reg_subnet = BorderBranch(c, border_reg_channels, pool_size)
        self.border_cls_score = torch.nn.Conv2d(c, num_classes, 1)
        self.border_bbox_pred = torch.nn.Conv2d(c, 4, 1)
        # Official init: N(0, 0.01), zero bias; the border class bias gives prior_prob.
        for m in (self.border_cls_subnet, self.border_reg_subnet, self.border_cls_score,
                  self.border_bbox_pred):
            for layer in m.modules():
                if isinstance(layer, torch.nn.Conv2d):
                    torch.nn.init.normal_(layer.weight, std=0.01)
                    torch.nn.init.zeros_(layer.bias)
        torch.nn.init.constant_(self.border_cls_score.bias, -math.log((1 - prior_prob) / prior_prob))
        # Official: relu(scale_l * x) * stride; detectron2's Box2BoxTransformLinear applies the
        # relu and the stride when decoding.
        self.scales = torch.nn.ModuleList(Scale() for _ in input_shape) if scales else None

    def forward(self, features):
        """FCOS's outputs plus each level's cls and box tower features."""
        logits, bbox_reg, ctrness, cls_feats, box_feats = [], [], [], [], []
        for level, feature in enumerate(features):
            cls_feat, box_feat = self.cls_subnet(feature), self.bbox_subnet(feature)
            logits.append(self.cls_score(cls_feat))
            box = self.bbox_pred(box_feat)
            bbox_reg.append(self.scales[level](box) if self.scales is not None else box)
            ctrness.append(self.ctrness(box_feat))
            cls_feats.append(cls_feat)
            box_feats.append(box_feat)
        return logits, bbox_reg, ctrness, cls_feats, box_feats

    def forward_border(self, cls_feats, box_feats, align_boxes):
        """Border logits ``(N, K, H, W)`` and offsets ``(N, 4, H, W)`` per level, from the tower
        features and the per-level boxes in feature-map coordinates ``(N, H*W, 4)``."""
        logits, deltas = [], []
        for cls_feat, box_feat, boxes in zip(cls_feats, box_feats, align_boxes):
            logits.append(self.border_cls_score(self.border_cls_subnet(cls_feat, boxes)))
            deltas.append(self.border_bbox_pred(self.border_reg_subnet(box_feat, boxes)))
        return logits, deltas


@META_ARCH_REGISTRY.register()
class BorderDet(FCOS):
    @configurable
    def __init__(self, *, border_iou_thresh=0.6, border_bbox_std=(0.5, 0.5, 0.5, 0.5),
                 fcos="official", **kwargs):
        super().__init__(**kwargs)
        self.border_iou_thresh = border_iou_thresh
        self.border_bbox_std = tuple(border_bbox_std)
        self.official_fcos = fcos == "official"
        if self.official_fcos:
            # cvpods' shifts: locations at k * stride (detectron2's FCOS: (k + 0.5) * stride).
            strides = self.anchor_generator.strides
            self.anchor_generator = DefaultAnchorGenerator(
                sizes=[[s] for s in strides], aspect_ratios=[1.0], strides=strides, offset=0.0)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.BORDERDET
        fcos = _fcos_kind(cfg)
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        head = BorderDetHead(
            input_shape=[shapes[f] for f in c.IN_FEATURES],
            conv_dims=[shapes[c.IN_FEATURES[0]].channels] * c.NUM_CONVS,
            num_classes=c.NUM_CLASSES,
            prior_prob=c.PRIOR_PROB,
            norm=c.NORM,
            border_cls_channels=c.BORDER_CLS_CHANNELS,
            border_reg_channels=c.BORDER_REG_CHANNELS,
            pool_size=c.POOL_SIZE,
            scales=fcos == "official",
        )
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": c.IN_FEATURES,
            "num_classes": c.NUM_CLASSES,
            "center_sampling_radius": c.CENTER_SAMPLING_RADIUS,
            "focal_loss_alpha": c.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": c.FOCAL_LOSS_GAMMA,
            "test_score_thresh": c.SCORE_THRESH_TEST,
            "test_topk_candidates": c.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": c.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "border_iou_thresh": c.BORDER_IOU_THRESH,
            "border_bbox_std": c.BORDER_BBOX_STD,
            "fcos": fcos,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def _border_predictions(self, features, predictions):
        """Runs the border branches on the head's tower features and the detached coarse
        boxes. Returns the anchors, the coarse boxes per level ``(N, H*W, 4)`` and the five
        predictions transposed to ``(N, H*W, K or 4 or 1)`` per level: cls, box deltas,
        centerness, border cls, border deltas."""
        logits, bbox_reg, ctrness, cls_feats, box_feats = predictions
        anchors = self.anchor_generator(features)
        coarse = self._coarse_boxes(anchors, bbox_reg)
        align_boxes = [
            self._align_boxes(b, s, f.shape[-2:], self.anchor_generator.offset)
            for b, s, f in zip(coarse, self.anchor_generator.strides, features)
        ]
        border_logits, border_deltas = self.head.forward_border(cls_feats, box_feats, align_boxes)
        k = self.num_classes
        dense = self._transpose_dense_predictions(
            [logits, bbox_reg, ctrness, border_logits, border_deltas], [k, 4, 1, k, 4]
        )
        return anchors, coarse, dense

    @torch.no_grad()
    def _coarse_boxes(self, anchors, bbox_reg):
        """Detached coarse FCOS boxes per level, ``(N, H*W, 4)`` in image pixels."""
        out = []
        for a, reg in zip(anchors, bbox_reg):
            deltas = reg.detach().permute(0, 2, 3, 1).reshape(reg.shape[0], -1, 4)
            out.append(self.box2box_transform.apply_deltas(
                deltas.reshape(-1, 4), a.tensor.repeat(reg.shape[0], 1)).view_as(deltas))
        return out

    @staticmethod
    def _align_boxes(boxes, stride, hw, offset):
        """Image boxes -> this level's map coordinates, clamped to the map (official). The
        location of cell k is (k + offset) * stride, so an edge through it is read at cell k
        (official: offset 0, ``boxes / stride``)."""
        h, w = hw
        boxes = boxes / stride - offset
        x = boxes[..., 0::2].clamp(0, w - 1)
        y = boxes[..., 1::2].clamp(0, h - 1)
        return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1).contiguous()

    label_anchors = fcos_label_anchors  # images without objects (upstream ef2c3abb)

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness):
        """detectron2's FCOS losses, or the official ones: classification and centerness summed
        and divided by the batch's positives, the GIoU loss weighted by the centerness target
        and divided by the batch sum of that target (both totals over processes / processes)."""
        if not self.official_fcos:
            return super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes,
                                  pred_centerness)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        pos = (gt_labels >= 0) & (gt_labels != self.num_classes)
        get_event_storage().put_scalar("num_pos_anchors", pos.sum().item() / len(gt_labels))
        num_pos = normalizer_over_processes(pos.sum().float(), 1.0)
        logits = cat(pred_logits, dim=1)
        onehot = F.one_hot(gt_labels, self.num_classes + 1)[..., :-1].to(logits.dtype)
        loss_cls = sigmoid_focal_loss_jit(logits, onehot, alpha=self.focal_loss_alpha,
                                          gamma=self.focal_loss_gamma, reduction="sum")
        ctr_targets = self.compute_ctrness_targets(anchors, gt_boxes)[pos]
        anchors = Boxes.cat(anchors).tensor
        pred_boxes = torch.stack([
            self.box2box_transform.apply_deltas(d, anchors) for d in cat(pred_anchor_deltas, dim=1)])
        # detectron2 v0.6 labels with Boxes, later versions with tensors.
        gt_boxes = torch.stack([b.tensor if isinstance(b, Boxes) else b for b in gt_boxes])
        loss_loc = (giou_loss(pred_boxes[pos], gt_boxes[pos]) * ctr_targets).sum()
        loss_ctr = F.binary_cross_entropy_with_logits(
            cat(pred_centerness, dim=1).squeeze(2)[pos], ctr_targets, reduction="sum")
        return {
            "loss_fcos_cls": loss_cls / num_pos,
            "loss_fcos_loc": loss_loc / normalizer_over_processes(ctr_targets.sum(), 1.0),
            "loss_fcos_ctr": loss_ctr / num_pos,
        }

    def forward_training(self, images, features, predictions, gt_instances):
        anchors, coarse, dense = self._border_predictions(features, predictions)
        logits, deltas, ctrness, border_logits, border_deltas = dense
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        losses = self.losses(anchors, logits, gt_labels, deltas, gt_boxes, ctrness)
        losses.update(self.border_losses(
            cat(coarse, dim=1), cat(border_logits, dim=1), cat(border_deltas, dim=1), gt_instances))
        return losses

    def border_losses(self, coarse, border_logits, border_deltas, gt_instances):
        """Focal loss on border classes and L1 on border offsets, both divided by the number of
        border positives averaged over processes.

        Args:
            coarse: ``(N, A, 4)``; border_logits: ``(N, A, K)``; border_deltas: ``(N, A, 4)``.
        """
        labels, targets = zip(*[
            border_targets(c, gt.gt_boxes.tensor, gt.gt_classes, self.num_classes,
                           self.border_iou_thresh, self.border_bbox_std)
            for c, gt in zip(coarse, gt_instances)
        ])
        labels, targets = torch.stack(labels), torch.stack(targets)
        pos = labels < self.num_classes
        num_pos = normalizer_over_processes(pos.sum().float(), 1.0)
        onehot = F.one_hot(labels, self.num_classes + 1)[..., :-1].to(border_logits.dtype)
        loss_cls = sigmoid_focal_loss_jit(
            border_logits, onehot, alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma,
            reduction="sum") / num_pos
        loss_reg = F.l1_loss(border_deltas[pos], targets[pos], reduction="sum") / num_pos
        return {"loss_border_cls": loss_cls, "loss_border_reg": loss_reg}

    def forward_inference(self, images, features, predictions):
        _, coarse, (logits, _, ctrness, border_logits, border_deltas) = self._border_predictions(
            features, predictions)
        return [
            self.inference_single_image_border(
                [x[i] for x in logits], [x[i] for x in ctrness], [x[i] for x in border_logits],
                [x[i] for x in border_deltas], [x[i] for x in coarse], size)
            for i, size in enumerate(images.image_sizes)
        ]

    def inference_single_image_border(self, logits, ctrness, border_logits, border_deltas, coarse,
                                      image_size):
        """Official score fusion: s = sqrt(sigmoid(cls) sigmoid(ctr)) must pass the threshold;
        the top-k of s * sigmoid(border_cls) per level are kept; box = coarse + border offsets;
        final score sqrt(s * sigmoid(border_cls)); class-wise NMS on the unclipped boxes; best
        ``max_det`` kept (detector_postprocess clips them to the image)."""
        boxes_all, scores_all, classes_all = [], [], []
        for lg, ct, blg, bd, cb in zip(logits, ctrness, border_logits, border_deltas, coarse):
            s = torch.sqrt(lg.sigmoid() * ct.sigmoid())  # (HW, K)
            keep = s > self.test_score_thresh
            fused = (s * blg.sigmoid())[keep]
            loc, cls = keep.nonzero(as_tuple=True)
            top = fused.argsort(descending=True)[: self.test_topk_candidates]
            loc, cls, fused = loc[top], cls[top], fused[top]
            boxes_all.append(apply_border_deltas(cb[loc], bd[loc], self.border_bbox_std))
            scores_all.append(fused.sqrt())
            classes_all.append(cls)
        boxes = Boxes(cat(boxes_all))
        scores, classes = cat(scores_all), cat(classes_all)
        keep = batched_nms(boxes.tensor, scores, classes, self.test_nms_thresh)
        keep = keep[: self.max_detections_per_image]
        return Instances(image_size, pred_boxes=boxes[keep], scores=scores[keep], pred_classes=classes[keep])


@BACKBONE_REGISTRY.register()
def build_borderdet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-FPN with P6/P7 (ReLU before P7) from C5 as the official code
    (``MODEL.BORDERDET.FCOS "official"``), or from P5 as detectron2's FCOS."""
    in_feature = "res5" if _fcos_kind(cfg) == "official" else "p5"
    return resnet_fpn_p6p7(cfg, input_shape, in_feature=in_feature)
