"""Double-Head R-CNN: Rethinking Classification and Localization for Object Detection
(Wu et al., CVPR 2020).

Importing the package registers ``DoubleHeadROIHeads`` (ROI_HEADS_REGISTRY).
"""

from .config import add_double_head_config
from .conv_head import Bottleneck, DoubleHeadConvHead, GroupNonLocal2d, UpChannelBlock
from .roi_heads import DoubleHeadROIHeads, enlarge_boxes, pool_at_levels_of

__all__ = [
    "add_double_head_config", "Bottleneck", "DoubleHeadConvHead", "DoubleHeadROIHeads",
    "enlarge_boxes", "GroupNonLocal2d", "pool_at_levels_of", "UpChannelBlock",
]
