from detectron2.config import CfgNode as CN


def add_autoassign_config(cfg):
    """Adds ``cfg.MODEL.AUTOASSIGN``. Defaults are those of the official code
    (Megvii-BaseDetection/AutoAssign, ``auto_assign.res50.fpn.coco.800size.1x/config.py`` and
    ``auto_assign.py`` on cvpods' ``FCOSConfig``); see the project README."""
    _C = cfg.MODEL
    _C.AUTOASSIGN = CN()
    _C.AUTOASSIGN.NUM_CLASSES = 80
    _C.AUTOASSIGN.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Head: NUM_CONVS 3x3 convs (+ NORM, ReLU) per tower ("NUM_CONVS", GroupNorm(32)).
    _C.AUTOASSIGN.NUM_CONVS = 4
    _C.AUTOASSIGN.NORM = "GN"
    # Initial foreground probability of the classification logits ("PRIOR_PROB").
    _C.AUTOASSIGN.PRIOR_PROB = 0.02
    # Initial bias of the box-regression conv: relu(4) * stride at the start.
    _C.AUTOASSIGN.REG_BIAS_INIT = 4.0
    # Where a level's locations lie, in strides: k * stride + OFFSET * stride. The official
    # shift generator uses 0 ("SHIFT_GENERATOR.OFFSET"), as detectron2's FCOS does.
    _C.AUTOASSIGN.LOCATION_OFFSET = 0.0
    # Localisation confidence of a (location, GT) pair: exp(-REG_WEIGHT * GIoU loss)
    # ("REG_WEIGHT", "IOU_LOSS_TYPE='giou'").
    _C.AUTOASSIGN.REG_WEIGHT = 5.0
    # tau of the confidence weighting C(P) = exp(P / tau) (the official exp(3 * P)).
    _C.AUTOASSIGN.TAU = 1.0 / 3.0
    # Exponent of the negative loss q^GAMMA * BCE(q, 0) ("FOCAL_LOSS_GAMMA").
    _C.AUTOASSIGN.NEG_GAMMA = 2.0
    # Loss weights: positive alpha, negative and centre-prior normalisation 1 - alpha
    # ("FOCAL_LOSS_ALPHA" = 0.25).
    _C.AUTOASSIGN.POS_LOSS_WEIGHT = 0.25
    _C.AUTOASSIGN.NEG_LOSS_WEIGHT = 0.75
    _C.AUTOASSIGN.CENTER_LOSS_WEIGHT = 0.75
    # Inference: score = sigmoid(cls) * sigmoid(objectness); the TOPK_CANDIDATES_TEST best
    # (location, class) scores per level above SCORE_THRESH_TEST; class-wise NMS. Detections
    # per image come from TEST.DETECTIONS_PER_IMAGE (100).
    _C.AUTOASSIGN.TOPK_CANDIDATES_TEST = 1000
    _C.AUTOASSIGN.SCORE_THRESH_TEST = 0.05
    _C.AUTOASSIGN.NMS_THRESH_TEST = 0.6
