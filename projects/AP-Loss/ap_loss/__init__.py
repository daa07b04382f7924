"""AP-loss: Towards Accurate One-Stage Object Detection with AP-Loss (Chen et al., CVPR 2019).

Importing the package registers ``APLossRetinaNet`` (META_ARCH_REGISTRY). Its backbone is
detectron2's ``build_retinanet_resnet_fpn_backbone`` (P6 from C5, ReLU before P7), the
official neck.
"""

from .augmentation import BoxAwareDatasetMapper, build_ssd_augmentation
from .config import add_ap_loss_config
from .ranking import ap_loss, ap_loss_and_grad
from .retinanet import APLossRetinaNet, PositiveLowQualityMatcher

__all__ = [
    "add_ap_loss_config", "ap_loss", "ap_loss_and_grad", "APLossRetinaNet", "BoxAwareDatasetMapper",
    "build_ssd_augmentation", "PositiveLowQualityMatcher",
]
