from detectron2.config import CfgNode as CN


def add_augfpn_config(cfg):
    """Adds ``cfg.MODEL.AUGFPN``: one switch per component of AugFPN, so that the paper's
    ablation can be rerun, with the official defaults (Gus-Guo/AugFPN,
    configs/faster_rcnn_r50_augfpn_1x.py, mmdet/models/necks/high_fpn.py,
    mmdet/models/roi_extractors/soft_roi_selection.py, mmdet/models/detectors/two_stage.py);
    see the project README. All three off is detectron2's Faster R-CNN FPN."""
    _C = cfg.MODEL
    _C.AUGFPN = CN()
    # Consistent Supervision: each sampled RoI is also pooled from every raw lateral map (before
    # the top-down pass) and classified / regressed by an auxiliary box head shared by the
    # levels, with the main head's targets; each level's two losses are scaled by CS_WEIGHT
    # ("alpha"). Training only.
    _C.AUGFPN.CONSISTENT_SUPERVISION = True
    _C.AUGFPN.CS_WEIGHT = 0.25
    # Init of the auxiliary head's layers: "pytorch" (official: two_stage.py builds the head but
    # never calls its init_weights, so nn.Linear keeps PyTorch's default, kaiming-uniform with
    # a = sqrt(5)) or "detectron2" (the main head's: c2_xavier FCs, N(0, 0.01) / N(0, 0.001)
    # outputs).
    _C.AUGFPN.CS_HEAD_INIT = "pytorch"
    # Residual Feature Augmentation: ratio-invariant adaptive pooling of C5 to
    # max(1, int(h r)) x max(1, int(w r)) for r in RFA_RATIOS, fused by Adaptive Spatial Fusion
    # and added to the top lateral before the top-down pass ("pool_ratios").
    _C.AUGFPN.RESIDUAL_FEATURE_AUGMENTATION = True
    _C.AUGFPN.RFA_RATIOS = [0.1, 0.2, 0.3]
    # Soft RoI Selection: every RoI pooled from all levels, fused with learned spatial weights,
    # instead of detectron2's one level per RoI.
    _C.AUGFPN.SOFT_ROI_SELECTION = True
