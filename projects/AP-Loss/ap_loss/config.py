from detectron2.config import CfgNode as CN


def add_ap_loss_config(cfg):
    """Adds ``cfg.MODEL.AP_LOSS``. The detector itself is configured by detectron2's
    ``MODEL.RETINANET`` / ``MODEL.ANCHOR_GENERATOR`` keys, set to the official values in
    ``configs/Base-AP-Loss.yaml``. Defaults are those of the official code (cccorn/AP-loss,
    ``lib/model/aploss.py``); see the project README."""
    _C = cfg.MODEL
    _C.AP_LOSS = CN()
    # Classification loss: "ap" (the paper) or "focal" (detectron2's RetinaNet loss, same
    # detector: the baseline for speed and accuracy comparisons).
    _C.AP_LOSS.CLS_LOSS = "ap"
    # Half-width of the piecewise-linear step H(x) = clamp(x / (2 delta) + 0.5, 0, 1).
    _C.AP_LOSS.DELTA = 1.0
    # Interpolated AP: each positive's precision is the running max over lower-scored ones.
    _C.AP_LOSS.INTERPOLATE = True
    # Which entries are ranked together: "batch" = all anchors x classes of the images on one
    # process (the official per-GPU ranking); "global" = of the whole batch over all processes.
    _C.AP_LOSS.SCOPE = "batch"
    # Negatives processed at a time by the vectorised ranking (memory bound, not a result).
    _C.AP_LOSS.CHUNK_SIZE = 1 << 22
    # Training augmentation: the official SSD-style pipeline (photometric distortion, zoom
    # out, IoU crop, flip, resize to INPUT.MIN_SIZE_TRAIN[0] squared) if True, else detectron2's
    # (INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN resize and flip). Used by train_net.py.
    _C.AP_LOSS.SSD_AUGMENTATION = True
