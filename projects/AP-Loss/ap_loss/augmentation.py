"""The official training augmentation (``lib/dataloader/augmentations.py``, SSD's recipe) as
detectron2 augmentations: photometric distortion, zoom out (``Expand``), a crop that keeps at
least a given IoU with some object (``MinIoURandomCrop``), horizontal flip, and a resize to a
fixed square (512 x 512)."""

import copy

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from fvcore.transforms.transform import CropTransform, Transform

__all__ = [
    "BoxAwareDatasetMapper", "CenterKeepingCropTransform", "Expand", "ExpandTransform", "MinIoURandomCrop",
    "build_ssd_augmentation",
]


class ExpandTransform(Transform):
    """Places the image at (left, top) of a ``width x height`` canvas filled with ``fill``."""

    def __init__(self, left, top, width, height, fill):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img):
        out = np.empty((self.height, self.width) + img.shape[2:], dtype=img.dtype)
        out[...] = np.asarray(self.fill, dtype=img.dtype)
        out[self.top: self.top + img.shape[0], self.left: self.left + img.shape[1]] = img
        return out

    def apply_coords(self, coords):
        coords = coords.copy()
        coords[:, 0] += self.left
        coords[:, 1] += self.top
        return coords

    def apply_segmentation(self, segmentation):
        return ExpandTransform(self.left, self.top, self.width, self.height, 0).apply_image(segmentation)


class Expand(T.Augmentation):
    """SSD's zoom out: with probability ``prob``, a canvas ``ratio`` (uniform in
    ``[1, max_ratio]``) times the image size, filled with the pixel mean."""

    def __init__(self, fill, max_ratio=4.0, prob=0.5):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        if np.random.rand() >= self.prob:
            return T.NoOpTransform()
        ratio = np.random.uniform(1, self.max_ratio)
        width, height = int(w * ratio), int(h * ratio)
        left, top = int(np.random.uniform(0, width - w)), int(np.random.uniform(0, height - h))
        return ExpandTransform(left, top, width, height, self.fill)


class CenterKeepingCropTransform(CropTransform):
    """A crop after which a box whose centre lies outside the crop is dropped (made empty, so
    detectron2's ``filter_empty_instances`` removes it), as SSD's crop does; the others are
    clipped to the crop."""

    def apply_box(self, box):
        box = np.asarray(box, dtype=np.float64)
        centre = (box[:, :2] + box[:, 2:]) / 2
        inside = ((centre[:, 0] > self.x0) & (centre[:, 0] < self.x0 + self.w)
                  & (centre[:, 1] > self.y0) & (centre[:, 1] < self.y0 + self.h))
        out = super().apply_box(box)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.h)
        out[~inside] = 0
        return out


class MinIoURandomCrop(T.Augmentation):
    """SSD's crop: pick a mode among "keep the image" and "a crop whose best IoU with the
    boxes is at least 0.1 / 0.3 / 0.7 / 0.9 / any"; up to 50 tries of a crop with sides in
    [0.3, 1] of the image and aspect ratio in [0.5, 2] that keeps at least one box centre."""

    def __init__(self, min_ious=(0.1, 0.3, 0.7, 0.9), min_scale=0.3, tries=50):
        super().__init__()
        self._init(locals())

    def get_transform(self, image, boxes):
        h, w = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        modes = [None, *self.min_ious, float("-inf")]
        while True:
            mode = modes[np.random.randint(len(modes))]
            if mode is None or len(boxes) == 0:
                return T.NoOpTransform()
            for _ in range(self.tries):
                cw, ch = np.random.uniform(self.min_scale * w, w), np.random.uniform(self.min_scale * h, h)
                if not 0.5 <= ch / cw <= 2:
                    continue
                x0, y0 = int(np.random.uniform(0, w - cw)), int(np.random.uniform(0, h - ch))
                crop = np.array([x0, y0, x0 + int(cw), y0 + int(ch)], dtype=np.float64)
                lt, rb = np.maximum(boxes[:, :2], crop[:2]), np.minimum(boxes[:, 2:], crop[2:])
                inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
                area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
                iou = inter / (area + (crop[2] - crop[0]) * (crop[3] - crop[1]) - inter)
                if iou.max() < mode:
                    continue
                centre = (boxes[:, :2] + boxes[:, 2:]) / 2
                keep = (centre > crop[:2]).all(axis=1) & (centre < crop[2:]).all(axis=1)
                if not keep.any():
                    continue
                return CenterKeepingCropTransform(x0, y0, int(cw), int(ch))


def build_ssd_augmentation(cfg):
    """The official training pipeline, in its order: photometric distortion (detectron2's
    brightness / contrast / saturation / lighting; README), zoom out, IoU crop, flip, and the
    resize to ``INPUT.MIN_SIZE_TRAIN[0]`` squared."""
    size = cfg.INPUT.MIN_SIZE_TRAIN[0]
    return [
        T.RandomApply(T.RandomBrightness(0.875, 1.125), prob=0.5),
        T.RandomApply(T.RandomContrast(0.5, 1.5), prob=0.5),
        T.RandomApply(T.RandomSaturation(0.5, 1.5), prob=0.5),
        T.RandomApply(T.RandomLighting(0.1), prob=0.5),
        Expand(fill=cfg.MODEL.PIXEL_MEAN),
        MinIoURandomCrop(),
        T.RandomFlip(),
        T.Resize((size, size)),
    ]


class BoxAwareDatasetMapper(DatasetMapper):
    """detectron2's DatasetMapper for box detection whose augmentations also see the GT boxes
    (``MinIoURandomCrop`` needs them; v0.6's mapper passes only the image). Annotations then
    go through the parent's ``_transform_annotations``, which drops the masks and keypoints
    a model without those heads does not use (cropping COCO's polygons would need shapely)."""

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        annos = [a for a in dataset_dict.get("annotations", []) if a.get("iscrowd", 0) == 0]
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos])
        aug_input = T.AugInput(image, boxes=boxes.reshape(-1, 4))
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        return dataset_dict
