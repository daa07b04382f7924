from detectron2.config import CfgNode as CN


def add_d2det_config(cfg):
    """Adds ``cfg.MODEL.D2DET``. Defaults are those of the official code (JialeCao001/D2Det,
    configs/D2Det/D2Det_detection_r50_fpn_2x.py, mmdet/models/mask_heads/D2Det_head.py,
    mmdet/ops/dcn/deform_pool.py, mmdet/models/detectors/D2Det.py); see the project README.
    Standard settings (RPN, RoI sampling, NMS at 0.5 with score > 0.03) live in detectron2's
    keys and are set in configs/Base-D2Det.yaml."""
    _C = cfg.MODEL
    _C.D2DET = CN()
    # Discriminative RoI pooling (classification branch). Plain RoIAlign to
    # OFFSET_POOLER_RESOLUTION^2 -> NUM_OFFSET_FC FCs of OFFSET_FC_DIM (the last predicts the
    # offsets of a POOLER_RESOLUTION^2 grid, upsampled x2) -> deformable RoI pooling at
    # 2 x ROI_BOX_HEAD.POOLER_RESOLUTION with DEFORM_SAMPLING_RATIO^2 samples per bin
    # ("sample_per_part"), offsets x TRANS_STD x RoI size -> adaptive weighted pooling,
    # weights exp(AWP_GATE * sigmoid(.)) ("COEFF").
    _C.D2DET.OFFSET_POOLER_RESOLUTION = 3
    _C.D2DET.NUM_OFFSET_FC = 3
    _C.D2DET.OFFSET_FC_DIM = 1024
    _C.D2DET.DEFORM_SAMPLING_RATIO = 2
    _C.D2DET.TRANS_STD = 0.1
    _C.D2DET.AWP_GATE = 12.0
    # One set of offset FCs and adaptive weighted pooling per FPN level (official: one
    # DeformRoIPoolingPack per level, single_level.py); True shares one set across levels.
    _C.D2DET.SHARED_POOLER = False
    # Cross-entropy weight of the classifier (it predicts no box deltas).
    _C.D2DET.CLS_LOSS_WEIGHT = 2.0
    # Dense local regression: RoIAlign to REG_POOLER_RESOLUTION^2 (sampling ratio 2) ->
    # NUM_CONV 3x3 convs of CONV_DIM channels with GroupNorm(NORM_GROUPS), the first stride 2 ->
    # a (REG_POOLER_RESOLUTION / 2)^2 grid of cells. CONV_GROUPS: groups of the convs after the
    # first; the official code computes 36 but never passes it to ConvModule, so the released
    # model's convs are dense (README).
    _C.D2DET.REG_POOLER_RESOLUTION = 14
    _C.D2DET.REG_POOLER_SAMPLING_RATIO = 2
    _C.D2DET.NUM_CONV = 8
    _C.D2DET.CONV_DIM = 576
    _C.D2DET.NORM_GROUPS = 36
    _C.D2DET.CONV_GROUPS = 1
    # Training: positives jittered by up to JITTER of their size, at most REG_SAMPLES_PER_IMAGE
    # of them per image (official: 192 per GPU of 2 images, "max_num_reg"); IoU-loss and
    # overlap-BCE weights.
    _C.D2DET.JITTER = 0.15
    _C.D2DET.REG_SAMPLES_PER_IMAGE = 96
    # How the cells' IoU losses L are weighted by their overlap targets m (0/1), over the N
    # cells of all RoIs: "released" = mean(L) * mean(m), what the released code (mmdet 1.1,
    # D2Det.py with weight 2.0) computes through a broadcast, so every cell regresses the box;
    # "per_cell" = mean(L * m), the authors' mmdet 2.1 port, which uses weight 1.0 with it.
    _C.D2DET.REG_LOSS_WEIGHTING = "released"
    _C.D2DET.REG_LOSS_WEIGHT = 2.0
    _C.D2DET.OVERLAP_LOSS_WEIGHT = 1.0
    # Inference: class-wise NMS (ROI_HEADS.NMS_THRESH_TEST, SCORE_THRESH_TEST) keeps the top
    # PRE_REFINE_TOPK_TEST scored proposals ("max_per_img"); after dense regression, class-wise
    # soft-NMS, then the top TEST.DETECTIONS_PER_IMAGE.
    _C.D2DET.PRE_REFINE_TOPK_TEST = 125
    _C.D2DET.SOFT_NMS_METHOD = "linear"
    _C.D2DET.SOFT_NMS_IOU_THRESH = 0.5
    _C.D2DET.SOFT_NMS_SIGMA = 0.5
    _C.D2DET.SOFT_NMS_MIN_SCORE = 0.001
    # Instance segmentation (MODEL.MASK_ON; official D2Det_instance_r101_fpn_2x.py and
    # D2Det_head.py with MASK_ON): the regression features (R, CONV_DIM, 7, 7) -> 2 deconvs
    # (2x2, stride 2) of MASK_DECONV_DIM, the first with GroupNorm(MASK_NORM_GROUPS) -> a 3x3
    # conv to one 28 x 28 mask per class (BCE x MASK_LOSS_WEIGHT). Mask IoU: 2 FCs of
    # MASK_IOU_FC_DIM on the regression features + the class's max-pooled mask, MSE x
    # MASK_IOU_LOSS_WEIGHT where the target is in (0.1, 1]. A mask's score: box score +
    # MASK_IOU_SCORE_WEIGHT x its predicted mask IoU.
    _C.D2DET.MASK_DECONV_DIM = 256
    _C.D2DET.MASK_NORM_GROUPS = 16
    _C.D2DET.MASK_IOU_FC_DIM = 1024
    _C.D2DET.MASK_LOSS_WEIGHT = 1.0
    _C.D2DET.MASK_IOU_LOSS_WEIGHT = 0.5
    _C.D2DET.MASK_IOU_SCORE_WEIGHT = 0.3
