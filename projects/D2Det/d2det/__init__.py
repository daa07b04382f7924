"""D2Det: Towards High Quality Object Detection and Instance Segmentation (Cao et al., CVPR 2020).

Importing the package registers ``D2DetROIHeads`` (ROI_HEADS_REGISTRY). With masks on, evaluate
with ``MaskScoreCOCOEvaluator`` (mask AP ranked by D2Det's mask scores; see train_net.py).
"""

from .config import add_d2det_config
from .dense_regression import DenseRegressionHead, average_cell_boxes, decode_dense, dense_targets
from .discriminative_pooling import AdaptiveWeightedPooling, DiscriminativeRoIPooler
from .instance_segmentation import D2DetMaskHead, MaskScoreCOCOEvaluator
from .layers import batched_soft_nms, deform_roi_pool, soft_nms
from .roi_heads import ClassificationOutputs, D2DetROIHeads

__all__ = [
    "add_d2det_config", "AdaptiveWeightedPooling", "average_cell_boxes", "batched_soft_nms",
    "ClassificationOutputs", "D2DetMaskHead", "D2DetROIHeads",
    "MaskScoreCOCOEvaluator", "decode_dense", "deform_roi_pool",
    "dense_targets", "DenseRegressionHead", "DiscriminativeRoIPooler", "soft_nms",
]
