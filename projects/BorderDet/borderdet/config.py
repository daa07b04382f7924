from detectron2.config import CfgNode as CN


def add_borderdet_config(cfg):
    """Adds ``cfg.MODEL.BORDERDET``. Defaults are the official ones
    (Megvii-BaseDetection/BorderDet, ``borderdet.res50.fpn.coco.800size.1x/config.py`` and
    ``borderdet.py``); see the project README."""
    _C = cfg.MODEL
    _C.BORDERDET = CN()
    _C.BORDERDET.NUM_CLASSES = 80
    _C.BORDERDET.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # The FCOS half. "official": the official code's FCOS (cvpods): locations at k * stride,
    # a learnable Scale per level on the box regression, P6/P7 from C5, the GIoU loss weighted
    # by the centerness target and divided by its batch sum, the classification and centerness
    # losses divided by the batch's positives. "detectron2": detectron2's FCOS (locations at
    # (k + 0.5) * stride, no Scale, P6/P7 from P5, losses divided by an EMA of the positives),
    # which the toy config keeps so that it differs from the toy FCOS baseline only by the
    # border module. The backbone builder reads it too (P6/P7 input).
    _C.BORDERDET.FCOS = "official"
    # The FCOS part: towers of NUM_CONVS 3x3 convs + NORM + ReLU, focal loss, centre sampling.
    _C.BORDERDET.NUM_CONVS = 4
    _C.BORDERDET.NORM = "GN"
    _C.BORDERDET.PRIOR_PROB = 0.01
    _C.BORDERDET.CENTER_SAMPLING_RADIUS = 1.5
    _C.BORDERDET.FOCAL_LOSS_ALPHA = 0.25
    _C.BORDERDET.FOCAL_LOSS_GAMMA = 2.0
    # Border Alignment Module: channels C of the border features of the classification and
    # the regression branch (4C are pooled, C kept as the point feature), and the number of
    # intervals per border (pool_size + 1 samples).
    _C.BORDERDET.BORDER_CLS_CHANNELS = 256
    _C.BORDERDET.BORDER_REG_CHANNELS = 128
    _C.BORDERDET.POOL_SIZE = 10
    # Border targets: a location whose coarse box has IoU >= BORDER_IOU_THRESH with a GT is a
    # border positive; its regression target is (gt - coarse) / (BORDER_BBOX_STD * [w,h,w,h]).
    _C.BORDERDET.BORDER_IOU_THRESH = 0.6
    _C.BORDERDET.BORDER_BBOX_STD = [0.5, 0.5, 0.5, 0.5]
    # Inference: threshold on sqrt(cls * ctr), top-k per level, class-wise NMS.
    _C.BORDERDET.SCORE_THRESH_TEST = 0.05
    _C.BORDERDET.TOPK_CANDIDATES_TEST = 1000
    _C.BORDERDET.NMS_THRESH_TEST = 0.6
