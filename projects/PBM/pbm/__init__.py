"""PBM: NMS by Representative Region, Crowded Pedestrian Detection by Proposal Pairing
(Huang et al., CVPR 2020). Importing the package registers its modules."""

from .config import add_pbm_config
from .data import CrowdDatasetMapper, PairedDatasetMapper
from .meta_arch import PBMRCNN
from .pairing import ignored_by_regions, match_pairs, pairwise_iof, r2nms, split_ignore
from .ppfe import PPFE, visible_mask
from .roi_heads import CrowdROIHeads, PairedOutputLayers, PBMROIHeads, paired_inference_single_image
from .rpn import CrowdRPN, PairedRPN, PairedRPNHead

__all__ = [
    "CrowdDatasetMapper", "CrowdROIHeads", "CrowdRPN", "PBMRCNN", "PBMROIHeads", "PPFE",
    "PairedDatasetMapper", "PairedOutputLayers", "PairedRPN", "PairedRPNHead", "add_pbm_config",
    "ignored_by_regions", "match_pairs", "paired_inference_single_image", "pairwise_iof", "r2nms",
    "split_ignore", "visible_mask",
]
