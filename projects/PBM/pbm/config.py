from detectron2.config import CfgNode as CN


def add_pbm_config(cfg):
    """Keys of the Paired-Box Model under ``cfg.MODEL.PBM``.

    The paper gives no number for these thresholds and weights (no official code is public);
    the values are our choices, with reasons in the README. alpha1 is ``MODEL.RPN.IOU_THRESHOLDS``
    (positive at >= 0.7, negative below 0.3), alpha2 is ``MODEL.ROI_HEADS.IOU_THRESHOLDS``
    (0.5), the R2NMS threshold is ``MODEL.ROI_HEADS.NMS_THRESH_TEST``.
    """
    cfg.MODEL.PBM = CN()
    # Paired RPN: an anchor is positive for a pair (F, V) when IoU(A, F) >= alpha1 and
    # IoF(A, V) = |A & V| / |V| >= beta1.
    cfg.MODEL.PBM.RPN_IOF_THRESH = 0.7  # beta1
    cfg.MODEL.PBM.RPN_VIS_LOSS_WEIGHT = 1.0  # visible-proposal regression, x the full one's
    # RPN proposals: False, detectron2's top PRE_NMS_TOPK per level and NMS per level; True,
    # CrowdDet's top PRE_NMS_TOPK over all levels and one NMS (Base-PBM.yaml, with its 12000 /
    # 6000). Used by PairedRPN and by the baseline's CrowdRPN.
    cfg.MODEL.PBM.RPN_TOPK_ACROSS_LEVELS = False
    # Ignore regions (gt_ignore, CrowdDatasetMapper): a RoI whose IoU with every person is below
    # this and which lies in an ignore region by at least this much of its area is neither
    # foreground nor background (CrowdDet's fpn_roi_target: its fg_threshold, 0.5).
    cfg.MODEL.PBM.IGNORE_IOA_THRESH = 0.5
    # Paired R-CNN: a proposal pair (Pf, Pv) is positive for (F, V) when IoU(Pf, F) >= alpha2
    # and IoU(Pv, V) >= beta2.
    cfg.MODEL.PBM.RCNN_VIS_IOU_THRESH = 0.5  # beta2
    cfg.MODEL.PBM.RCNN_VIS_LOSS_WEIGHT = 1.0
    # PPFE: "concat" (the two RoI features side by side) or "attention" (the full-box feature
    # masked to the visible box's cells, then concatenated with the visible feature).
    cfg.MODEL.PBM.FUSION = "attention"
    # Post-processing: "r2nms" (overlap of the visible boxes decides) or "greedy" (full boxes).
    cfg.MODEL.PBM.NMS = "r2nms"
