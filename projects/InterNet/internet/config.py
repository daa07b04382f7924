from detectron2.config import CfgNode as CN


def add_internet_config(cfg):
    """Adds ``cfg.MODEL.INTERNET`` with the official defaults (hli2020/feature_intertwiner,
    lib/config.py, configs/104/meta_104_conv.yaml (OT), configs/105/meta_105_quick_1.yaml (L2),
    lib/sub_module.py ``Dev``, lib/model.py ``meta_loss``, lib/OT_module.py); see the project
    README. ``MAKEUP_LAYER False`` + ``META_LOSS "none"`` is detectron2's Faster R-CNN FPN."""
    _C = cfg.MODEL
    _C.INTERNET = CN()
    # Make-up layer: conv 3x3 + norm + ReLU (DEV.UPSAMPLE_FAC 1), one module shared by all
    # levels, applied to every map the box head pools from ("upsample" in Dev).
    _C.INTERNET.MAKEUP_LAYER = True
    # Norm of the make-up layer (official: BatchNorm2d), trained; "SyncBN" on several GPUs. The
    # critic's BatchNorm is always in eval mode, a learned affine layer, as the official's.
    _C.INTERNET.NORM = "BN"
    # The divergence between the less reliable and the reliable set: "none" (make-up layer only),
    # "l2" (sigmoid critic, mse; configs/105) or "ot" (optimal transport; configs/104, the
    # paper's best).
    _C.INTERNET.META_LOSS = "ot"
    # Levels l with a meta-loss: the less reliable set is the RoIs assigned to l, pooled from the
    # make-up output; the reliable set is the RoIs assigned above l, pooled from P_l itself.
    _C.INTERNET.META_LEVELS = [2, 3, 4]
    # RoIAlign size of the critic's input (DEV.FEAT_BRANCH_POOL_SIZE).
    _C.INTERNET.POOLER_RESOLUTION = 14
    # Critic: conv 3x3 stride 2 -> CRITIC_CHANNELS[0], conv (RES/2)x(RES/2) -> CRITIC_CHANNELS[1],
    # conv 1x1; each + norm + ReLU.
    _C.INTERNET.CRITIC_CHANNELS = [512, 1024]
    # RoI-to-level assignment of the box head and of the sets: detectron2's
    # floor(4 + log2(sqrt(wh) / CANONICAL_BOX_SIZE)), clamped to the head's levels. The
    # official rounds, round(4 + log2(sqrt(wh) / 224)) (lib/sub_module.py), which is the floor
    # with a canonical size of 224 / sqrt(2): level 4 holds sides in [158.4, 316.8) px.
    _C.INTERNET.CANONICAL_BOX_SIZE = 224 / 2 ** 0.5
    # Meta-loss weights (DEV.LOSS_FAC). L2: 10 (configs/105). OT: 0.1, ours (configs/104 has
    # 1000 for a formulation whose gradient is ~0; with the centroids as the transported samples
    # 1000 would make the meta-loss's gradient ~10^4 x the detection loss's, see README).
    _C.INTERNET.L2_WEIGHT = 10.0
    _C.INTERNET.OT_WEIGHT = 0.1
    # OT: generator Conv1d(k3) + ReLU, critic Conv1d(k3, -> OT_CRITIC_DIM) + ReLU, cosine cost,
    # Sinkhorn with OT_EPSILON and OT_ITERS iterations (OptTrans defaults: 1 and 5).
    _C.INTERNET.OT_CRITIC_DIM = 256
    # How the OT critic learns: "adversarial" (ours: it maximises the divergence the generator
    # minimises, by gradient reversal), "fixed" (initial weights) or "joint" (the official
    # optimiser setup: it minimises it too, and can collapse to a zero divergence; see README).
    _C.INTERNET.OT_CRITIC = "adversarial"
    _C.INTERNET.OT_EPSILON = 1.0
    _C.INTERNET.OT_ITERS = 5
