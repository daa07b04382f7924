"""DR Loss: Improving Object Detection by Distributional Ranking (Qian et al., CVPR 2020).

Importing the package registers ``DRLossRetinaNet`` (META_ARCH_REGISTRY).
"""

from .config import add_dr_loss_config
from .loss import dr_loss
from .retinanet import DRLossRetinaNet, dr_targets

__all__ = ["add_dr_loss_config", "dr_loss", "DRLossRetinaNet", "dr_targets"]
