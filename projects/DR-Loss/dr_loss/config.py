import math

from detectron2.config import CfgNode as CN


def add_dr_loss_config(cfg):
    """Adds ``cfg.MODEL.DR_LOSS`` with the official defaults (idstcv/DR_loss at f9fa187,
    ``sigmoid_dr_loss.py``: ``SigmoidDRLoss.__init__``); see the project README. The
    RetinaNet settings the official configs change (prior 0.5, IoU 0.5 / 0.5, test score 0.2)
    are in ``configs/Base-DR-Loss.yaml``."""
    _C = cfg.MODEL
    _C.DR_LOSS = CN()
    _C.DR_LOSS.MARGIN = 0.5                      # gamma
    _C.DR_LOSS.POS_LAMBDA = 1.0                  # lambda+, the positives' softmax temperature
    _C.DR_LOSS.NEG_LAMBDA = 0.1 / math.log(3.5)  # lambda-, the negatives' (0.0798)
    _C.DR_LOSS.L = 6.0                           # smoothness of the logistic hinge
    _C.DR_LOSS.TAU = 4.0                         # scale of the loss
    # The ranking set: "batch", every entry of this process's images together (the official
    # code: one loss per GPU batch of 2 images), or "image", one ranking per image, averaged
    # over the images (the paper's formulation; the same at one image per process).
    _C.DR_LOSS.SCOPE = "batch"
