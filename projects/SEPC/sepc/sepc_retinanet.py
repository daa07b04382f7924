"""RetinaNet with the SEPC head, and the official neck (P6 from C5, no ReLU before P7)."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.retinanet import RetinaNet

from .head import SEPCHead
from .vendored import resnet_fpn_p6p7

__all__ = ["SEPCRetinaNet", "build_sepc_resnet_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_sepc_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-FPN with P3-P7 as the official neck builds them (mmdetection 1.1 FPN with
    ``add_extra_convs=True``: P6 = 3x3/2 conv of C5, P7 = 3x3/2 conv of P6 without a ReLU in
    between; detectron2's RetinaNet neck has that ReLU)."""
    return resnet_fpn_p6p7(cfg, input_shape, in_feature="res5", relu_before_p7=False)


@META_ARCH_REGISTRY.register()
class SEPCRetinaNet(RetinaNet):
    """detectron2's RetinaNet (assignment, focal + SmoothL1 losses, inference) with the SEPC
    head. Anchors are laid on the head's output maps, which with unpadded final convs are
    2 px smaller than the pyramid (the official behaviour)."""

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        shapes = ret["backbone"].output_shape()
        ret["head"] = SEPCHead(cfg, [shapes[f] for f in cfg.MODEL.RETINANET.IN_FEATURES])
        return ret

    # The anchor generator only reads the maps' sizes: give it the head's outputs.
    def forward_training(self, images, features, predictions, gt_instances):
        return super().forward_training(images, predictions[0], predictions, gt_instances)

    def forward_inference(self, images, features, predictions):
        return super().forward_inference(images, predictions[0], predictions)
