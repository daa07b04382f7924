"""ResNet-FPN with P3-P7 as GFL's official neck builds them: P6 = 3x3/2 conv of P5 (not C5),
P7 = 3x3/2 conv of P6 with no ReLU between them (mmdetection FPN with ``add_extra_convs=True,
extra_convs_on_inputs=False``, ``relu_before_extra_convs=False``). detectron2's
``LastLevelP6P7`` applies a ReLU before P7, as RetinaNet/FCOS do."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone

__all__ = ["GFLLastLevelP6P7", "build_gfl_resnet_fpn_backbone"]


class GFLLastLevelP6P7(LastLevelP6P7):
    def forward(self, p5):
        p6 = self.p6(p5)
        return [p6, self.p7(p6)]


@BACKBONE_REGISTRY.register()
def build_gfl_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    out = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=build_resnet_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out,
        norm=cfg.MODEL.FPN.NORM,
        top_block=GFLLastLevelP6P7(out, out, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
