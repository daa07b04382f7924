"""Mechanisms shared by several packages of this repo (detectron2 fixes made after v0.6, and
layers several papers use), copied here so that this package stands alone. Every copy is kept
identical by the repo's ``tests/test_vendored.py``: change them all together."""

from detectron2.layers import batched_nms, get_norm
from torch import nn

__all__ = ["add_group_norm", "retinanet_from_config", "clipped_retinanet_inference"]


def add_group_norm(head):
    """Puts GroupNorm(32, C) after every conv of a head's ``cls_subnet`` and ``bbox_subnet``.
    detectron2 v0.6's ``RetinaNetHead`` (and so ``FCOSHead``) probes its norm's type with
    ``get_norm(norm, 1)``, and GroupNorm(32, 1) raises (fixed upstream in 330dd329, after
    v0.6): a "GN" head is built with ``norm=""`` and given its norms by this function, which
    gives the modules, parameter names and random initialisation (norms draw no random
    numbers) of the head detectron2 builds with ``norm="GN"``."""
    for name in ("cls_subnet", "bbox_subnet"):
        layers = []
        for layer in getattr(head, name):
            layers.append(layer)
            if isinstance(layer, nn.Conv2d):
                layers.append(get_norm("GN", layer.out_channels))
        setattr(head, name, nn.Sequential(*layers))
    return head


def retinanet_from_config(from_config, cfg):
    """``from_config(cfg)`` for a detectron2 ``RetinaNet`` (pass ``super().from_config``), whose
    head may use "GN": built without norm, then given its GroupNorms (see add_group_norm)."""
    if cfg.MODEL.RETINANET.NORM != "GN":
        return from_config(cfg)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RETINANET.NORM = ""
    ret = from_config(cfg)
    add_group_norm(ret["head"])
    return ret


def clipped_retinanet_inference(model, anchors, box_cls, box_delta, image_size):
    """``inference_single_image`` of a detectron2 ``RetinaNet`` ``model`` (top-k per level above
    the score threshold, class-wise NMS, the top detections), with the boxes clipped to the
    image before NMS, as the official codes of AP-loss (``ResNet.forward``) and DR loss
    (maskrcnn-benchmark's ``RetinaNetPostProcessor``) do; detectron2 clips after NMS."""
    pred = model._decode_multi_level_predictions(
        anchors, box_cls, box_delta, model.test_score_thresh, model.test_topk_candidates, image_size)
    pred.pred_boxes.clip(image_size)
    keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, model.test_nms_thresh)
    return pred[keep[: model.max_detections_per_image]]
