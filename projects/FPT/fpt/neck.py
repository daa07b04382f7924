"""The Feature Pyramid Transformer neck (paper Sec. 3, Fig. 2), registered as a detectron2
backbone builder.

Official: ``lib/modeling/FPT_a.py`` ("all": every transformer, as in the paper) of
ZHANGDONG-NJUST/FPT. Each backbone stage C_i gets a 1x1 lateral conv to ``out_channels``
(no top-down pathway); level i then concatenates, in this order,
[ST(P_i), RT(P_i <- P_j) for every finer j (nearest first), GT(P_i <- P_j) for every coarser j
(nearest first), P_i] and fuses them with a 3x3 conv to the output level. P6 is P5
max-pooled with stride 2 (detectron2's Faster R-CNN FPN, the official Detectron FPN).
"""

import math

import torch
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import Backbone, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import nn

from .grounding_transformer import GroundingTransformer
from .rendering_transformer import RenderingTransformer
from .self_transformer import SelfTransformer

__all__ = ["FPT", "build_fpt_resnet_backbone"]


class FPT(Backbone):
    """Args:
        bottom_up: a detectron2 backbone giving ``in_features`` (strides 2^k, fine to coarse).
        out_channels: channels of every level (the transformers' d_model).
        norm: of the lateral and fusion convs (official: GroupNorm with ``USE_GN``).
        self_transformer, grounding_transformer, rendering_transformer: which transformers run
            (the paper's ablation); with none, each level is a 3x3 conv of its lateral.
        transformer_norm: the transformers' own norm layers (official: BatchNorm).
        mixtures, dropout: of the Self-Transformer's Mixture of Softmaxes.
        similarity, window, inter_channels: of the Grounding Transformer.
        chunk: queries per chunk of the softmax attentions (memory, see attention.py).
        top_block: extra levels from the last output (P6 by max-pooling), or None.
    """

    def __init__(self, bottom_up, in_features, out_channels, norm="", self_transformer=True,
                 grounding_transformer=True, rendering_transformer=True, transformer_norm="BN",
                 mixtures=2, dropout=0.1, similarity="euclidean", window=0, inter_channels=None,
                 chunk=4096, top_block=None):
        super().__init__()
        shapes = bottom_up.output_shape()
        strides = [shapes[f].stride for f in in_features]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"FPT needs levels that halve in size, got strides {strides}")
        self.bottom_up, self.in_features, self.top_block = bottom_up, list(in_features), top_block
        stages = [int(math.log2(s)) for s in strides]
        levels = range(len(in_features))
        self.lateral_convs = nn.ModuleList(
            Conv2d(shapes[f].channels, out_channels, 1, bias=not norm, norm=get_norm(norm, out_channels))
            for f in in_features)
        c = out_channels
        self.self_transformers = nn.ModuleList(
            SelfTransformer(c, mixtures, dropout, transformer_norm, chunk) for _ in levels
        ) if self_transformer else None
        # keys "<query level>_<key/value level>", e.g. "p2_p4": P2's positions ground P4's
        self.grounding_transformers = nn.ModuleDict({
            f"p{stages[i]}_p{stages[j]}": GroundingTransformer(
                c, inter_channels, similarity, window, 2 ** (j - i), transformer_norm, chunk)
            for i in levels for j in levels if j > i}) if grounding_transformer else None
        self.rendering_transformers = nn.ModuleDict({
            f"p{stages[i]}_p{stages[j]}": RenderingTransformer(c, 2 ** (i - j), transformer_norm)
            for i in levels for j in levels if j < i}) if rendering_transformer else None
        n = len(in_features)
        inputs = [1 + bool(self_transformer) + bool(rendering_transformer) * i
                  + bool(grounding_transformer) * (n - 1 - i) for i in levels]
        self.fusion_convs = nn.ModuleList(
            Conv2d(k * c, c, 3, padding=1, bias=not norm, norm=get_norm(norm, c)) for k in inputs)
        # Official initialize(): every conv of the neck (those of the transformers too)
        # kaiming-uniform with a = 1, bias 0; norms keep theirs (GT's output norm stays 0).
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("bottom_up."):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self._stages = stages
        self._out_feature_strides = {f"p{s}": 2 ** s for s in stages}
        if top_block is not None:
            last = stages[-1]
            for k in range(top_block.num_levels):
                self._out_feature_strides[f"p{last + k + 1}"] = 2 ** (last + k + 1)
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {k: c for k in self._out_features}
        self._size_divisibility = strides[-1]

    @property
    def size_divisibility(self):
        return self._size_divisibility

    def forward(self, x):
        feats = self.bottom_up(x)
        lateral = [conv(feats[f]) for conv, f in zip(self.lateral_convs, self.in_features)]
        p = [f"p{s}" for s in self._stages]
        outs = []
        for i, x_i in enumerate(lateral):
            parts = [self.self_transformers[i](x_i)] if self.self_transformers is not None else []
            if self.rendering_transformers is not None:
                parts += [self.rendering_transformers[f"{p[i]}_{p[j]}"](x_i, lateral[j])
                          for j in range(i - 1, -1, -1)]
            if self.grounding_transformers is not None:
                parts += [self.grounding_transformers[f"{p[i]}_{p[j]}"](x_i, lateral[j])
                          for j in range(i + 1, len(lateral))]
            outs.append(self.fusion_convs[i](torch.cat(parts + [x_i], dim=1)))
        if self.top_block is not None:
            outs.extend(self.top_block(outs[-1]))
        return dict(zip(self._out_features, outs))

    def output_shape(self):
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}


@BACKBONE_REGISTRY.register()
def build_fpt_resnet_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + FPT: P2-P5 from ``MODEL.FPN.IN_FEATURES`` (``MODEL.FPN.OUT_CHANNELS``,
    ``MODEL.FPN.NORM``) and P6 by max-pooling P5, with ``MODEL.FPT``'s transformers."""
    c = cfg.MODEL.FPT
    return FPT(
        bottom_up=build_resnet_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        self_transformer=c.SELF_TRANSFORMER,
        grounding_transformer=c.GROUNDING_TRANSFORMER,
        rendering_transformer=c.RENDERING_TRANSFORMER,
        transformer_norm=c.NORM,
        mixtures=c.ST_MIXTURES,
        dropout=c.ST_DROPOUT,
        similarity=c.GT_SIMILARITY,
        window=c.GT_WINDOW,
        inter_channels=c.GT_CHANNELS or None,
        chunk=c.ATTENTION_CHUNK,
        top_block=LastLevelMaxPool(),
    )
