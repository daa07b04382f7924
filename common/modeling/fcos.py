"""detectron2 v0.6's FCOS, made buildable from a yacs config.

v0.6 ships FCOS only for LazyConfig (``common/models/fcos.py`` in its model zoo); the engine
here uses yacs configs, so this adds ``MODEL.FCOS.*`` with the values of that LazyConfig and a
registered ``FCOS`` meta-architecture that reads them. The model code is detectron2's, except
that an image without objects no longer crashes its anchor labelling and that its head can
use GroupNorm (both fixed upstream after v0.6; ``vendored.py``).
"""

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.meta_arch import fcos

from .vendored import add_group_norm, fcos_label_anchors, resnet_fpn_p6p7

__all__ = ["add_fcos_config", "FCOS", "build_fcos_resnet_fpn_backbone"]


def add_fcos_config(cfg):
    cfg.MODEL.FCOS = CN()
    cfg.MODEL.FCOS.NUM_CLASSES = 80
    cfg.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    cfg.MODEL.FCOS.NUM_CONVS = 4
    cfg.MODEL.FCOS.NORM = "GN"
    cfg.MODEL.FCOS.PRIOR_PROB = 0.01
    cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    cfg.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    cfg.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    # Threshold on sqrt(cls score * centerness), as in detectron2's FCOS config.
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.6


@META_ARCH_REGISTRY.register()
class FCOS(fcos.FCOS):
    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        c = cfg.MODEL.FCOS
        head = fcos.FCOSHead(
            input_shape=[shapes[f] for f in c.IN_FEATURES],
            conv_dims=[shapes[c.IN_FEATURES[0]].channels] * c.NUM_CONVS,
            num_classes=c.NUM_CLASSES,
            prior_prob=c.PRIOR_PROB,
            norm="" if c.NORM == "GN" else c.NORM,
        )
        if c.NORM == "GN":
            add_group_norm(head)
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": c.IN_FEATURES,
            "num_classes": c.NUM_CLASSES,
            "center_sampling_radius": c.CENTER_SAMPLING_RADIUS,
            "focal_loss_alpha": c.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": c.FOCAL_LOSS_GAMMA,
            "test_score_thresh": c.SCORE_THRESH_TEST,
            "test_topk_candidates": c.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": c.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    label_anchors = fcos_label_anchors  # images without objects (upstream ef2c3abb)


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-FPN with P6/P7 computed from P5 rather than C5 (FCOS, Sec. 2.2 of its journal
    version; detectron2's FCOS LazyConfig does the same)."""
    return resnet_fpn_p6p7(cfg, input_shape, in_feature="p5")
