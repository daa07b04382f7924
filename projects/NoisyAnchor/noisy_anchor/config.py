from detectron2.config import CfgNode as CN


def add_noisy_anchor_config(cfg):
    """Adds ``cfg.MODEL.NOISY_ANCHOR`` with the official defaults (henrylee2570/NoisyAnchor at
    3960d03: ``MODEL.RETINANET.NOISY`` of its ``detectron2/config/defaults.py`` and the values
    its COCO configs set); see the project README. The focal loss's alpha (0.5 in the official
    configs) is detectron2's ``MODEL.RETINANET.FOCAL_LOSS_ALPHA``."""
    _C = cfg.MODEL
    _C.NOISY_ANCHOR = CN()
    # Positives: the TOPN anchors of highest IoU with each GT (no IoU threshold, no ignored
    # anchors); each positive regresses to and is labelled with its highest-IoU GT. The
    # official default is 50; every released config uses 30.
    _C.NOISY_ANCHOR.TOPN = 30
    # alpha: the mix of localisation (IoU of the predicted box with its GT) and classification
    # confidence in the cleanliness (soft label) and in the re-weighting.
    _C.NOISY_ANCHOR.ALPHA = 0.75
