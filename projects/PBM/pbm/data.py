"""Training data with the visible box of every person (``gt_vis_boxes``)."""

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.structures import Boxes


class PairedDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper that also transforms each annotation's visible box
    (``vis_bbox``, as CrowdHuman-style datasets are loaded) with the image, into
    ``instances.gt_vis_boxes`` (XYXY, treated as the full boxes are). Ignore regions
    (``iscrowd``) are left out of training, and so are people whose full or visible box is
    empty after the transforms. Masks and keypoints are dropped, as detectron2's mapper drops
    them for a model without those heads."""

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        unused = ("segmentation", "keypoints")
        annos = [{k: v for k, v in a.items() if k not in unused}
                 for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        missing = [a for a in annos if "vis_bbox" not in a]
        if missing:
            raise ValueError(
                f"{dataset_dict.get('file_name')}: an annotation has no visible box ('vis_bbox'); "
                "PBM trains on CrowdHuman-style data (register it with --register-crowdhuman)"
            )
        full = [utils.transform_instance_annotations(dict(a), transforms, image_shape) for a in annos]
        vis = [
            utils.transform_instance_annotations(
                {"bbox": a["vis_bbox"], "bbox_mode": a["bbox_mode"]}, transforms, image_shape
            )["bbox"]
            for a in annos
        ]
        instances = utils.annotations_to_instances(full, image_shape)
        instances.gt_vis_boxes = Boxes(torch.as_tensor(np.array(vis, dtype=np.float32).reshape(-1, 4)))
        keep = instances.gt_boxes.nonempty() & instances.gt_vis_boxes.nonempty()
        dataset_dict["instances"] = instances[keep]
