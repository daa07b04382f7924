"""yacs glue for detectron2 models the engine trains as baselines (registers on import)."""

from .fcos import FCOS, add_fcos_config, build_fcos_resnet_fpn_backbone
from .retinanet import RetinaNetGN

__all__ = ["FCOS", "RetinaNetGN", "add_fcos_config", "build_fcos_resnet_fpn_backbone"]
