"""BorderDet: Border Feature for Dense Object Detection (Qiu et al., ECCV 2020).

Importing the package registers ``BorderDet`` (META_ARCH_REGISTRY) and
``build_borderdet_resnet_fpn_backbone`` (BACKBONE_REGISTRY).
"""

from .border_branch import BorderBranch
from .border_targets import apply_border_deltas, border_targets
from .borderdet import BorderDet, BorderDetHead, build_borderdet_resnet_fpn_backbone
from .config import add_borderdet_config
from .layers import border_align, border_align_reference

__all__ = [
    "add_borderdet_config", "apply_border_deltas", "border_align", "border_align_reference",
    "border_targets", "BorderBranch", "BorderDet", "BorderDetHead", "build_borderdet_resnet_fpn_backbone",
]
