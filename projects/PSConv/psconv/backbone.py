"""PS-ResNet and PS-ResNeXt (official: ``conv2`` of every Bottleneck in mmdet/models/backbones/
resnet.py and resnext.py of d-li14/PSConv is a ``PSConv`` / ``PSGConv`` with dilation 2 and 4
parts, in all four stages), registered as detectron2 backbones.

detectron2's ResNet is built as usual and each block's 3x3 conv is replaced by a ``PSConv2d``
with the same channels, stride, groups and norm; BasicBlock (ResNet-18/34, used by the toy
configs; not in the official code) gets both its 3x3 convs replaced."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, build_resnet_backbone
from fvcore.nn import weight_init

from .layers import PSConv2d


def ps_conv_like(conv, dilation=2, parts=4, mask="official", impl="three_conv", zero_masked_on_load=True):
    """A ``PSConv2d`` in place of detectron2's 3x3 ``Conv2d`` ``conv`` (its channels, stride,
    groups and norm module), initialised as detectron2 initialises ResNet convs (MSRA fill:
    the official mmdet ``kaiming_init``), masked entries zero."""
    ps = PSConv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1, dilation, conv.groups, parts,
                  bias=conv.bias is not None, norm=conv.norm, mask=mask, impl=impl,
                  zero_masked_on_load=zero_masked_on_load)
    for c in (ps.gwconv, ps.gwconv_shift, ps.conv):
        weight_init.c2_msra_fill(c)
    ps.zero_masked_()
    return ps


def convert_to_ps_(resnet, cfg):
    """Replaces the 3x3 convs of every block of a detectron2 ResNet in place, then freezes
    again what ``MODEL.BACKBONE.FREEZE_AT`` freezes. Returns the ResNet."""
    c = cfg.MODEL.PSCONV
    args = dict(dilation=c.DILATION, parts=c.PARTS, mask=c.MASK, impl=c.IMPL,
                zero_masked_on_load=c.ZERO_MASKED_ON_LOAD)
    for stage in resnet.stages:
        for block in stage.children():
            if isinstance(block, BottleneckBlock):
                block.conv2 = ps_conv_like(block.conv2, **args)
            elif isinstance(block, BasicBlock):
                block.conv1 = ps_conv_like(block.conv1, **args)
                block.conv2 = ps_conv_like(block.conv2, **args)
            else:
                raise TypeError(f"no PSConv version of {type(block).__name__}")
    return resnet.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_ps_resnet_backbone(cfg, input_shape: ShapeSpec):
    """PS-ResNet / PS-ResNeXt (``MODEL.RESNETS``: depth, groups, width as for detectron2)."""
    return convert_to_ps_(build_resnet_backbone(cfg, input_shape), cfg)


@BACKBONE_REGISTRY.register()
def build_ps_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """PS-ResNet + FPN (P2-P6), detectron2's ``build_resnet_fpn_backbone`` with the PS bottom-up."""
    return FPN(bottom_up=build_ps_resnet_backbone(cfg, input_shape), in_features=cfg.MODEL.FPN.IN_FEATURES,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_ps_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """PS-ResNet + FPN (P3-P7, P6 from C5), detectron2's ``build_retinanet_resnet_fpn_backbone``."""
    bottom_up = build_ps_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=out_channels,
               norm=cfg.MODEL.FPN.NORM,
               top_block=LastLevelP6P7(bottom_up.output_shape()["res5"].channels, out_channels),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
