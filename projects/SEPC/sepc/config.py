from detectron2.config import CfgNode as CN


def add_sepc_config(cfg):
    """Adds ``cfg.MODEL.SEPC``. Defaults are those of the official code (jshilong/SEPC,
    ``sepc/self_mmdet/models/necks/sepc.py``, ``ops/dcn/sepc_dconv.py``) with every switch
    off (the "PConv" variant) and padded final convs; the variant configs set the switches.
    The detector itself is detectron2's RetinaNet (``MODEL.RETINANET``); see the README."""
    _C = cfg.MODEL
    _C.SEPC = CN()
    # Number of stacked PConv modules, shared by the classification and box branches
    # ("Pconv_num"); they replace RetinaNet's conv towers.
    _C.SEPC.NUM_PCONVS = 4
    # Integrated BN: one BatchNorm over all pyramid levels after each PConv and after the final
    # cconv / lconv ("iBN"). Needs >= 4 images per process with "BN"; "SyncBN" (or
    # "naiveSyncBN") shares the statistics over processes.
    _C.SEPC.IBN = False
    _C.SEPC.IBN_NORM = "BN"
    # Deformable (DCNv1) kernels on the output levels above P3: in every PConv
    # ("pconv_deform") and in the final cconv / lconv ("lcconv_deform"). SEPC-lite = only
    # the latter; SEPC = both.
    _C.SEPC.PCONV_DEFORM = False
    _C.SEPC.LCCONV_DEFORM = False
    # Padding of the final cconv / lconv. 1 (ours): same-size maps, anchors where the features
    # are. 0 (official): maps 2 px smaller, whose anchor grid is laid from the image corner,
    # one cell off the features it is computed from (README).
    _C.SEPC.LCCONV_PADDING = 1
    # The RetinaNet mechanics (sepc_retinanet.py): mmdetection 1.1's, with which the official
    # numbers were obtained (defaults), or detectron2's (the toy configs, so that they differ
    # from the toy RetinaNet in the head only). Loss normaliser: "batch" (this process's
    # positives, each image at least 1) or "ema" (detectron2's moving average); low-quality
    # matches: "gt" (a GT's best anchors become that GT's) or "anchor" (detectron2: they keep
    # their own best GT); test candidates: "anchors" (top-k anchors by best class score, boxes
    # clipped before NMS) or "pairs" (detectron2: top-k (anchor, class) pairs, unclipped).
    _C.SEPC.LOSS_NORMALIZER = "batch"
    # "sepc", or "retinanet": detectron2's RetinaNet head (4 convs per tower), the baseline
    # with the same neck and mechanics.
    _C.SEPC.HEAD = "sepc"
    _C.SEPC.LOW_QUALITY_MATCHES = "gt"
    _C.SEPC.TEST_CANDIDATES = "anchors"
