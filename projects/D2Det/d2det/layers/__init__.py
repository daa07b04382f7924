from .deform_roi_pool import deform_roi_pool
from .soft_nms import batched_soft_nms, soft_nms

__all__ = ["deform_roi_pool", "soft_nms", "batched_soft_nms"]
