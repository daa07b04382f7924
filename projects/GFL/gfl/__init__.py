"""Generalized Focal Loss (Li et al., NeurIPS 2020) for detectron2.

Importing the package registers ``GFL`` (META_ARCH_REGISTRY) and
``build_gfl_resnet_fpn_backbone`` (BACKBONE_REGISTRY).
"""

from .atss_assigner import atss_assign
from .backbone import build_gfl_resnet_fpn_backbone
from .config import add_gfl_config
from .distribution_focal_loss import distribution_focal_loss
from .gfl import GFL
from .head import GFLHead
from .integral import boxes_to_ltrb, distance_to_distribution, integral, ltrb_to_boxes
from .optimizer import gfl_optimizer_params
from .quality_focal_loss import quality_focal_loss

__all__ = [
    "add_gfl_config", "atss_assign", "build_gfl_resnet_fpn_backbone", "distribution_focal_loss",
    "GFL", "GFLHead", "gfl_optimizer_params", "integral", "distance_to_distribution",
    "ltrb_to_boxes", "boxes_to_ltrb", "quality_focal_loss",
]
