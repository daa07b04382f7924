"""Training data with the ignore regions (``gt_ignore``) and the visible box of every person
(``gt_vis_boxes``)."""

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.structures import Boxes


class CrowdDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper that keeps the ignore regions (``iscrowd``, which detectron2's
    mapper drops) as instances marked ``gt_ignore``: the RPN leaves them out and the R-CNN
    ignores the RoIs that lie in them (``pbm.pairing.ignored_by_regions``), as CrowdDet's
    baseline does. Boxes empty after the transforms are dropped. Masks and keypoints are
    dropped, as detectron2's mapper drops them for a model without those heads."""

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        unused = ("segmentation", "keypoints")
        annos = [{k: v for k, v in a.items() if k not in unused} for a in dataset_dict.pop("annotations")]
        instances = self.instances(annos, transforms, image_shape, dataset_dict.get("file_name"))
        keep = instances.gt_boxes.nonempty()
        if instances.has("gt_vis_boxes"):
            keep &= instances.gt_vis_boxes.nonempty()
        dataset_dict["instances"] = instances[keep]

    def instances(self, annos, transforms, image_shape, file_name=None):
        """The transformed annotations of one image as Instances."""
        full = [utils.transform_instance_annotations(dict(a), transforms, image_shape) for a in annos]
        instances = utils.annotations_to_instances(full, image_shape)
        instances.gt_ignore = torch.tensor([a.get("iscrowd", 0) == 1 for a in annos], dtype=torch.bool)
        return instances


class PairedDatasetMapper(CrowdDatasetMapper):
    """``CrowdDatasetMapper`` that also transforms each person's visible box (``vis_bbox``,
    as CrowdHuman-style datasets are loaded) with the image, into ``instances.gt_vis_boxes``
    (XYXY, treated as the full boxes are); an ignore region's visible box is itself. People
    whose full or visible box is empty after the transforms are dropped."""

    def instances(self, annos, transforms, image_shape, file_name=None):
        if any("vis_bbox" not in a and a.get("iscrowd", 0) == 0 for a in annos):
            raise ValueError(
                f"{file_name}: an annotation has no visible box ('vis_bbox'); PBM trains on "
                "CrowdHuman-style data (register it with --register-crowdhuman)"
            )
        instances = super().instances(annos, transforms, image_shape, file_name)
        vis = [
            utils.transform_instance_annotations(
                {"bbox": a.get("vis_bbox", a["bbox"]), "bbox_mode": a["bbox_mode"]}, transforms, image_shape
            )["bbox"]
            for a in annos
        ]
        instances.gt_vis_boxes = Boxes(torch.as_tensor(np.array(vis, dtype=np.float32).reshape(-1, 4)))
        return instances
