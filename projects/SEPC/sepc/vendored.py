"""Mechanisms shared by several packages of this repo (detectron2 fixes made after v0.6, and
layers several papers use), copied here so that this package stands alone. Every copy is kept
identical by the repo's ``tests/test_vendored.py``: change them all together."""

from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone

__all__ = ["LastLevelP6P7NoReLU", "resnet_fpn_p6p7"]


class LastLevelP6P7NoReLU(LastLevelP6P7):
    """detectron2's ``LastLevelP6P7`` (P6 = 3x3/2 conv of its input, P7 = 3x3/2 conv of P6)
    without the ReLU before P7, as mmdetection's FPN with ``relu_before_extra_convs=False``."""

    def forward(self, x):
        p6 = self.p6(x)
        return [p6, self.p7(p6)]


def resnet_fpn_p6p7(cfg, input_shape, in_feature="p5", relu_before_p7=True):
    """ResNet-FPN whose P6/P7 are 3x3/2 convs of ``in_feature`` ("p5" as FCOS, "res5" as
    RetinaNet), with or without a ReLU before P7."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out = cfg.MODEL.FPN.OUT_CHANNELS
    top = LastLevelP6P7 if relu_before_p7 else LastLevelP6P7NoReLU
    in_channels = out if in_feature.startswith("p") else bottom_up.output_shape()[in_feature].channels
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top(in_channels, out, in_feature=in_feature),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
