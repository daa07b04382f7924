"""AugFPN: Improving Multi-scale Feature Learning for Object Detection (Guo et al., CVPR 2020).

Importing the package registers ``build_augfpn_resnet_backbone`` (BACKBONE_REGISTRY) and
``AugFPNROIHeads`` (ROI_HEADS_REGISTRY).
"""

from .config import add_augfpn_config
from .neck import AugFPN, ResidualFeatureAugmentation, build_augfpn_resnet_backbone, ratio_invariant_pool_size
from .roi_heads import AugFPNROIHeads
from .soft_roi_selection import SoftRoISelection

__all__ = [
    "add_augfpn_config", "AugFPN", "AugFPNROIHeads", "build_augfpn_resnet_backbone",
    "ratio_invariant_pool_size", "ResidualFeatureAugmentation", "SoftRoISelection",
]
