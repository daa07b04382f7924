from detectron2.config import CfgNode as CN


def add_double_head_config(cfg):
    """Adds ``cfg.MODEL.DOUBLE_HEAD`` with the official defaults of Double-Head-Ext
    (wuyuebupt/doubleheadsrcnn at a744b41: ``cmd_train.sh`` flags and
    ``maskrcnn_benchmark/config/defaults.py``); see the project README for each source.

    The fc head (classification-focused) is detectron2's box head, set by
    ``MODEL.ROI_BOX_HEAD`` (``FastRCNNConvFCHead``, 2 x 1024 FCs on COCO)."""
    _C = cfg.MODEL
    _C.DOUBLE_HEAD = CN()
    # Conv head (regression-focused), on the RoI enlarged ENLARGE x about its centre (pooled
    # from the level of the original RoI): an up-channel residual block to CONV_DIM, then
    # NUM_BLOCKS blocks of [grouped non-local block (if NON_LOCAL) + bottleneck], average pool.
    # Official: --conv-bbox-expand 1.3, --nonlocal-out-channels 1024,
    # --nonlocal-shared-num-stack 2, --nonlocal-use-attention True. mmdetection's simplified
    # head (configs/double_heads): NUM_BLOCKS 4, NON_LOCAL False.
    _C.DOUBLE_HEAD.ENLARGE = 1.3
    _C.DOUBLE_HEAD.CONV_DIM = 1024
    _C.DOUBLE_HEAD.NUM_BLOCKS = 2
    _C.DOUBLE_HEAD.NON_LOCAL = True
    _C.DOUBLE_HEAD.NON_LOCAL_GROUPS = 4              # --nonlocal-shared-num-group 4
    _C.DOUBLE_HEAD.NON_LOCAL_INTER_CHANNELS = 512    # --nonlocal-inter-channels 512
    # Norm of every conv in the conv head: plain BatchNorm over the RoIs of one process
    # (official nn.BatchNorm2d). "SyncBN" / "naiveSyncBN" pool the statistics over processes.
    _C.DOUBLE_HEAD.NORM = "BN"
    # Loss weights (--mask-loss, in the official order conv cls, conv reg, fc cls, fc reg).
    # Double-Head-Ext: 0.5 2.0 1.4 0.6 (the paper's w_conv 2.5 x (0.2, 0.8) and
    # w_fc 2.0 x (0.7, 0.3)); Double-Head: fc cls and conv reg only (0 2.5 2.0 0).
    _C.DOUBLE_HEAD.CONV_CLS_WEIGHT = 0.5
    _C.DOUBLE_HEAD.CONV_REG_WEIGHT = 2.0
    _C.DOUBLE_HEAD.FC_CLS_WEIGHT = 1.4
    _C.DOUBLE_HEAD.FC_REG_WEIGHT = 0.6
    # Inference (the official PostProcessor modes): class probabilities from "fc", "conv" or
    # "fused" (1 - (1 - p_fc)(1 - p_conv) on the softmax outputs, background included, before
    # thresholding and NMS: Double-Head-Ext), boxes from the "conv" or the "fc" head.
    # Official mode 2 (Double-Head) = fc / conv, mode 3 (Double-Head-Ext) = fused / conv.
    _C.DOUBLE_HEAD.TEST_SCORES = "fused"
    _C.DOUBLE_HEAD.TEST_BOXES = "conv"
