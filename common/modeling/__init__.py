"""yacs glue for detectron2 models the engine trains as baselines (registers on import)."""

from .fcos import FCOS, add_fcos_config, build_fcos_resnet_fpn_backbone

__all__ = ["FCOS", "add_fcos_config", "build_fcos_resnet_fpn_backbone"]
