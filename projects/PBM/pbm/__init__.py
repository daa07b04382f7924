"""PBM: NMS by Representative Region, Crowded Pedestrian Detection by Proposal Pairing
(Huang et al., CVPR 2020). Importing the package registers its modules."""

from .config import add_pbm_config
from .data import PairedDatasetMapper
from .meta_arch import PBMRCNN
from .pairing import match_pairs, pairwise_iof, r2nms
from .ppfe import PPFE, visible_mask
from .roi_heads import PairedOutputLayers, PBMROIHeads, paired_inference_single_image
from .rpn import PairedRPN, PairedRPNHead

__all__ = [
    "PBMRCNN", "PBMROIHeads", "PPFE", "PairedDatasetMapper", "PairedOutputLayers", "PairedRPN",
    "PairedRPNHead", "add_pbm_config", "match_pairs", "paired_inference_single_image",
    "pairwise_iof", "r2nms", "visible_mask",
]
