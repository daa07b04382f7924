"""detectron2's RetinaNet, whose head may use GroupNorm on v0.6 (fixed upstream in 330dd329)."""

from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.retinanet import RetinaNet

from .vendored import retinanet_from_config

__all__ = ["RetinaNetGN"]


@META_ARCH_REGISTRY.register()
class RetinaNetGN(RetinaNet):
    """detectron2's RetinaNet, except that it can be built with ``MODEL.RETINANET.NORM "GN"``,
    which detectron2 v0.6's RetinaNetHead refuses (see ``vendored.add_group_norm``)."""

    @classmethod
    def from_config(cls, cfg):
        return retinanet_from_config(super().from_config, cfg)
