"""FPT: Feature Pyramid Transformer (Zhang et al., ECCV 2020).

Importing the package registers ``build_fpt_resnet_backbone`` (BACKBONE_REGISTRY).
"""

from .attention import chunked_softmax_attention
from .config import add_fpt_config
from .grounding_transformer import GroundingTransformer
from .neck import FPT, build_fpt_resnet_backbone
from .rendering_transformer import RenderingTransformer
from .self_transformer import SelfTransformer

__all__ = [
    "add_fpt_config", "build_fpt_resnet_backbone", "chunked_softmax_attention", "FPT", "GroundingTransformer",
    "RenderingTransformer", "SelfTransformer",
]
