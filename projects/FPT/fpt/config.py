from detectron2.config import CfgNode as CN


def add_fpt_config(cfg):
    """Adds ``cfg.MODEL.FPT`` with the official defaults (ZHANGDONG-NJUST/FPT,
    lib/modeling/FPT_a.py and the modules it builds); see the project README. The lateral and
    fusion convs take ``MODEL.FPN.OUT_CHANNELS`` and ``MODEL.FPN.NORM``."""
    _C = cfg.MODEL
    _C.FPT = CN()
    # Which transformers each level concatenates (the paper's ablation). All off: every level
    # is a 3x3 conv of its 1x1 lateral (no top-down pathway).
    _C.FPT.SELF_TRANSFORMER = True
    _C.FPT.GROUNDING_TRANSFORMER = True
    _C.FPT.RENDERING_TRANSFORMER = True
    # The transformers' own norm layers (official: nn.BatchNorm2d, statistics per GPU). The
    # Rendering Transformer normalises a globally pooled map: plain BN needs 2+ images per
    # process in training ("naiveSyncBN" or "GN" do not).
    _C.FPT.NORM = "BN"
    # Self-Transformer: parts of the Mixture of Softmaxes ("n_mix"), attention dropout.
    _C.FPT.ST_MIXTURES = 2
    _C.FPT.ST_DROPOUT = 0.1
    # Grounding Transformer: "euclidean" (paper, softmax of -|q - k|^2) or "dot" (the released
    # code: q . k / number of keys, no softmax); WINDOW 0 attends to the whole coarser level,
    # an odd w > 0 to the w x w positions around each query's (the locality-constrained GT);
    # CHANNELS of queries, keys and values (0: half of the level's, as the official).
    _C.FPT.GT_SIMILARITY = "euclidean"
    _C.FPT.GT_WINDOW = 0
    _C.FPT.GT_CHANNELS = 0
    # Queries per chunk of the softmax attentions (ST, global GT): bounds their memory, see
    # fpt/attention.py. Not a model setting: the result is the same for any value.
    _C.FPT.ATTENTION_CHUNK = 4096
