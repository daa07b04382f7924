"""Feature Intertwiner for Object Detection (Li et al., ICLR 2019): InterNet.

Importing the package registers ``InterNetROIHeads`` (ROI_HEADS_REGISTRY).
"""

from .config import add_internet_config
from .divergence import OTMetaLoss, cosine_cost, l2_meta_loss, sinkhorn, sinkhorn_divergence, transport_cost
from .intertwiner import ClassBuffer, Critic, MakeUpLayer, class_sums, intertwiner_sets
from .roi_heads import InterNetROIHeads

__all__ = [
    "add_internet_config", "ClassBuffer", "class_sums", "cosine_cost", "Critic", "InterNetROIHeads",
    "intertwiner_sets", "l2_meta_loss", "MakeUpLayer", "OTMetaLoss", "sinkhorn", "sinkhorn_divergence",
    "transport_cost",
]
