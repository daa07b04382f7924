"""The official training augmentation (``lib/dataloader/augmentations.py``, SSD's recipe) as
detectron2 augmentations: photometric distortion (``PhotometricDistort``), zoom out
(``Expand``), a crop that keeps at least a given IoU with some object (``MinIoURandomCrop``),
horizontal flip, and a resize to a fixed square (512 x 512)."""

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
    "PhotometricDistort", "PhotometricDistortTransform", "build_ssd_augmentation", "bgr_to_hsv", "hsv_to_bgr",
]

# The official lighting noise: ImageNet's RGB PCA (AlexNet) with eigenvalues for 0-255 pixels,
# added as is to the BGR image (``RandomLightingNoise``).
LIGHTING_EIGVAL = np.array([55.46, 4.794, 1.148])
LIGHTING_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]])
_EPS = np.finfo(np.float32).eps


def bgr_to_hsv(img):
    """OpenCV's float ``COLOR_BGR2HSV``: H in degrees [0, 360), S = (max - min) / |max|,
    V = max, with its epsilons; any range of values (the official pipeline feeds unclipped
    floats)."""
    b, g, r = img[..., 0], img[..., 1], img[..., 2]
    v, vmin = img.max(axis=-1), img.min(axis=-1)
    diff = v - vmin
    s = diff / (np.abs(v) + _EPS)
    k = 60.0 / (diff + _EPS)
    h = np.where(v == r, (g - b) * k, np.where(v == g, (b - r) * k + 120, (r - g) * k + 240))
    h = np.where(h < 0, h + 360, h)
    return np.stack([h, s, v], axis=-1).astype(img.dtype)


def hsv_to_bgr(img):
    """OpenCV's float ``COLOR_HSV2BGR`` (hue taken modulo 360; S may exceed 1 or be negative:
    no clipping, as OpenCV)."""
    h, s, v = img[..., 0] / 60.0, img[..., 1], img[..., 2]
    sector = np.floor(h)
    f = h - sector
    sector = sector.astype(np.int64) % 6
    tab = np.stack([v, v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))], axis=-1)
    # (b, g, r) indices into tab per sector, OpenCV's sector_data.
    order = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])
    out = np.take_along_axis(tab, order[sector], axis=-1)
    return np.where((s == 0)[..., None], v[..., None], out).astype(img.dtype)


class PhotometricDistortTransform(Transform):
    """The official ``PhotometricDistort`` with its random draws fixed, on a float32 BGR image,
    unclipped: add ``brightness``; if ``contrast_first``, multiply by ``contrast``; in HSV,
    multiply S by ``saturation`` and add ``hue`` degrees (wrapped into [0, 360)); back to BGR;
    otherwise multiply by ``contrast`` now; add the lighting noise ``eigvec * lighting @
    eigval``. A draw that did not happen is its identity (0 or 1). Boxes are unchanged."""

    def __init__(self, brightness=0.0, contrast=1.0, contrast_first=True, saturation=1.0, hue=0.0,
                 lighting=(0.0, 0.0, 0.0)):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img):
        img = img.astype(np.float32) + np.float32(self.brightness)
        if self.contrast_first:
            img = img * np.float32(self.contrast)
        hsv = bgr_to_hsv(img)
        hsv[..., 1] *= np.float32(self.saturation)
        hsv[..., 0] += np.float32(self.hue)
        hsv[..., 0] = np.where(hsv[..., 0] > 360.0, hsv[..., 0] - 360.0, hsv[..., 0])
        hsv[..., 0] = np.where(hsv[..., 0] < 0.0, hsv[..., 0] + 360.0, hsv[..., 0])
        img = hsv_to_bgr(hsv)
        if not self.contrast_first:
            img = img * np.float32(self.contrast)
        shift = (LIGHTING_EIGVEC * np.asarray(self.lighting)) @ LIGHTING_EIGVAL
        return (img + shift.astype(np.float32)).astype(np.float32)

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation


class PhotometricDistort(T.Augmentation):
    """SSD's photometric distortion as the official code draws it: brightness +-32 (p 1/2);
    with p 1/2 contrast before the HSV steps, else after; contrast x[0.5, 1.5], saturation
    x[0.5, 1.5], hue +-18 degrees (each p 1/2); lighting noise with alpha ~ N(0, 0.1) per
    component (p 1/2). The image becomes float32 and is not clipped (official)."""

    def __init__(self, brightness=32.0, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=18.0,
                 lighting_std=0.1):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        coin = lambda: np.random.randint(2) == 1  # noqa: E731
        return PhotometricDistortTransform(
            brightness=np.random.uniform(-self.brightness, self.brightness) if coin() else 0.0,
            contrast_first=coin(),
            contrast=np.random.uniform(*self.contrast) if coin() else 1.0,
            saturation=np.random.uniform(*self.saturation) if coin() else 1.0,
            hue=np.random.uniform(-self.hue, self.hue) if coin() else 0.0,
            lighting=tuple(np.random.normal(0, self.lighting_std, 3)) if coin() else (0.0, 0.0, 0.0),
        )


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
    """The official training pipeline, in its order: photometric distortion, zoom out, IoU
    crop, flip, and the resize to ``INPUT.MIN_SIZE_TRAIN[0]`` squared. From the photometric
    step on, the image is float32 (unclipped, as the official)."""
    size = cfg.INPUT.MIN_SIZE_TRAIN[0]
    return [
        PhotometricDistort(),
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
