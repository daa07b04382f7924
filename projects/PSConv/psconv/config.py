from detectron2.config import CfgNode as CN


def add_psconv_config(cfg):
    """Adds ``cfg.MODEL.PSCONV`` with the official defaults (d-li14/PSConv at 9afde67:
    ``dilation=2, parts=4`` in mmdet/models/backbones/resnet.py and resnext.py); see the
    project README."""
    _C = cfg.MODEL
    _C.PSCONV = CN()
    _C.PSCONV.DILATION = 2       # d: the diagonal blocks' dilation; the half-shifted ones 2d
    _C.PSCONV.PARTS = 4          # channel blocks per (cardinal) group; the dilations cycle d, 1, 2d, 1
    # The dense conv's mask in grouped (ResNeXt) layers: "official" as the official PSGConv2d
    # builds it (most groups left unmasked, see README; needed to use its checkpoints) or
    # "intended" (every group's blocks). The same for ResNet (groups 1).
    _C.PSCONV.MASK = "official"
    # "three_conv": the official three convs; "fast": the same layer at the FLOPs of one dense
    # 3x3 conv (needs a complete mask).
    _C.PSCONV.IMPL = "three_conv"
    # Zero the masked weights when a checkpoint is loaded (the layer's definition); False keeps
    # whatever the checkpoint holds there, as the official forward would use it.
    _C.PSCONV.ZERO_MASKED_ON_LOAD = True
