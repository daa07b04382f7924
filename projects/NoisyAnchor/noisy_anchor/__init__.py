"""Learning from Noisy Anchors for One-stage Object Detection (Li et al., CVPR 2020).

Importing the package registers ``NoisyAnchorRetinaNet`` (META_ARCH_REGISTRY).
"""

from .cleanliness import reweighting, soft_focal_loss, soft_labels
from .config import add_noisy_anchor_config
from .matcher import TopNMatcher
from .retinanet import NoisyAnchorRetinaNet, matched_iou

__all__ = [
    "add_noisy_anchor_config", "matched_iou", "NoisyAnchorRetinaNet", "reweighting", "soft_focal_loss",
    "soft_labels", "TopNMatcher",
]
