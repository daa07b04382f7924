"""ResNet-FPN with P3-P7 as GFL's official neck builds them: P6 = 3x3/2 conv of P5 (not C5),
P7 = 3x3/2 conv of P6 with no ReLU between them (mmdetection FPN with ``add_extra_convs=True,
extra_convs_on_inputs=False``, ``relu_before_extra_convs=False``). detectron2's
``LastLevelP6P7`` applies a ReLU before P7, as RetinaNet/FCOS do."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY

from .vendored import resnet_fpn_p6p7

__all__ = ["build_gfl_resnet_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_gfl_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    return resnet_fpn_p6p7(cfg, input_shape, in_feature="p5", relu_before_p7=False)
