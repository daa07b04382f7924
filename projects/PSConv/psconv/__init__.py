"""PSConv: Squeezing Feature Pyramid into One Compact Poly-Scale Convolutional Layer (Li et al.,
ECCV 2020).

Importing the package registers ``build_ps_resnet_backbone``, ``build_ps_resnet_fpn_backbone``
and ``build_ps_retinanet_resnet_fpn_backbone`` (BACKBONE_REGISTRY).
"""

from .backbone import (
                       build_ps_resnet_backbone,
                       build_ps_resnet_fpn_backbone,
                       build_ps_retinanet_resnet_fpn_backbone,
                       convert_to_ps_,
                       ps_conv_like,
)
from .config import add_psconv_config
from .layers import PSConv2d, ps_mask, swap_halves

__all__ = [
    "add_psconv_config", "build_ps_resnet_backbone", "build_ps_resnet_fpn_backbone",
    "build_ps_retinanet_resnet_fpn_backbone", "convert_to_ps_", "ps_conv_like", "ps_mask", "PSConv2d",
    "swap_halves",
]
