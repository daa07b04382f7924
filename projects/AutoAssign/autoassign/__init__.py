"""AutoAssign: Differentiable Label Assignment for Dense Object Detection (Zhu et al., 2020).

Importing the package registers ``AutoAssign`` (META_ARCH_REGISTRY). Its backbone is
detectron2's ``build_retinanet_resnet_fpn_backbone`` (P6 from C5, ReLU before P7), the
official neck.
"""

from .autoassign import AutoAssign
from .center_prior import CenterPrior
from .config import add_autoassign_config
from .head import AutoAssignHead
from .weighting import negative_loss, negative_weights, positive_loss, positive_weights

__all__ = [
    "add_autoassign_config", "AutoAssign", "AutoAssignHead", "CenterPrior", "negative_loss",
    "negative_weights", "positive_loss", "positive_weights",
]
