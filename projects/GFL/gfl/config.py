from detectron2.config import CfgNode as CN


def add_gfl_config(cfg):
    """Adds ``cfg.MODEL.GFL``. Defaults are those of the official code (implus/GFocal,
    ``configs/gfl_r50_1x.py``; mmdetection ``configs/gfl``); see the project README."""
    _C = cfg.MODEL
    _C.GFL = CN()
    _C.GFL.NUM_CLASSES = 80
    _C.GFL.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Head: NUM_CONVS stacked 3x3 convs (+ NORM, ReLU) per branch ("stacked_convs").
    _C.GFL.NUM_CONVS = 4
    _C.GFL.NORM = "GN"
    # Initial foreground probability of the classification logits (focal-loss prior).
    _C.GFL.PRIOR_PROB = 0.01
    # n in the paper (DFL): each box side is a distribution over the n+1 integers
    # {0, ..., n}, in units of the level's stride ("reg_max").
    _C.GFL.REG_MAX = 16
    # ATSS assignment: one square anchor of side ANCHOR_SCALE * stride per location
    # ("octave_base_scale"), used only to assign; the TOPK anchors nearest to a GT's centre on
    # each level are its candidates ("topk").
    _C.GFL.ANCHOR_SCALE = 8.0
    _C.GFL.ATSS_TOPK = 9
    # Where a location (anchor centre) lies in its stride x stride cell, in strides: 0.5, the
    # cell centre, as the official 1.x code (anchors centred at (stride - 1) / 2 in its "+1"
    # pixel convention); 0.0, the cell corner, as mmdetection 2.x and 3.x.
    _C.GFL.ANCHOR_OFFSET = 0.5
    # beta of Quality Focal Loss and the weights of the three losses (the paper's total loss:
    # lambda_0 for GIoU, lambda_1 for DFL; QFL has weight 1).
    _C.GFL.QFL_BETA = 2.0
    _C.GFL.QFL_WEIGHT = 1.0
    _C.GFL.DFL_WEIGHT = 0.25
    _C.GFL.GIOU_WEIGHT = 2.0
    # Inference ("test_cfg"): top-k locations per level before NMS ("nms_pre"), score
    # threshold ("score_thr"), class-wise NMS IoU ("nms.iou_thr"). Detections per image come
    # from TEST.DETECTIONS_PER_IMAGE (100, "max_per_img").
    _C.GFL.TOPK_CANDIDATES_TEST = 1000
    _C.GFL.SCORE_THRESH_TEST = 0.05
    _C.GFL.NMS_THRESH_TEST = 0.6
