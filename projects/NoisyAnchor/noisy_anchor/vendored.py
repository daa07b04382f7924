"""Mechanisms shared by several packages of this repo (detectron2 fixes made after v0.6, and
layers several papers use), copied here so that this package stands alone. Every copy is kept
identical by the repo's ``tests/test_vendored.py``: change them all together."""

from detectron2.layers import get_norm
from torch import nn

__all__ = ["add_group_norm", "retinanet_from_config"]


def add_group_norm(head):
    """Puts GroupNorm(32, C) after every conv of a head's ``cls_subnet`` and ``bbox_subnet``.
    detectron2 v0.6's ``RetinaNetHead`` (and so ``FCOSHead``) probes its norm's type with
    ``get_norm(norm, 1)``, and GroupNorm(32, 1) raises (fixed upstream in 330dd329, after
    v0.6): a "GN" head is built with ``norm=""`` and given its norms by this function, which
    gives the modules, parameter names and random initialisation (norms draw no random
    numbers) of the head detectron2 builds with ``norm="GN"``."""
    for name in ("cls_subnet", "bbox_subnet"):
        layers = []
        for layer in getattr(head, name):
            layers.append(layer)
            if isinstance(layer, nn.Conv2d):
                layers.append(get_norm("GN", layer.out_channels))
        setattr(head, name, nn.Sequential(*layers))
    return head


def retinanet_from_config(from_config, cfg):
    """``from_config(cfg)`` for a detectron2 ``RetinaNet`` (pass ``super().from_config``), whose
    head may use "GN": built without norm, then given its GroupNorms (see add_group_norm)."""
    if cfg.MODEL.RETINANET.NORM != "GN":
        return from_config(cfg)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RETINANET.NORM = ""
    ret = from_config(cfg)
    add_group_norm(ret["head"])
    return ret
