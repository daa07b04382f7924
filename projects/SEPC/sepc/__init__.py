"""SEPC: Scale-Equalizing Pyramid Convolution for Object Detection (Wang et al., CVPR 2020).

Importing the package registers ``SEPCRetinaNet`` (META_ARCH_REGISTRY) and
``build_sepc_resnet_fpn_backbone`` (BACKBONE_REGISTRY).
"""

from .config import add_sepc_config
from .head import SEPCHead
from .pconv import PConv, SEPCConv, integrated_bn
from .sepc_retinanet import GTBestAnchorMatcher, SEPCRetinaNet, build_sepc_resnet_fpn_backbone

__all__ = [
    "add_sepc_config", "build_sepc_resnet_fpn_backbone", "GTBestAnchorMatcher", "integrated_bn", "PConv",
    "SEPCConv", "SEPCHead", "SEPCRetinaNet",
]
