"""The official (SSD-style) training augmentation: zoom out, the centre-keeping IoU crop, and
the box-aware mapper that resizes to a fixed square."""

import numpy as np
import pytest
import torch
from ap_loss.augmentation import (
    BoxAwareDatasetMapper,
    CenterKeepingCropTransform,
    Expand,
    ExpandTransform,
    MinIoURandomCrop,
    PhotometricDistort,
    PhotometricDistortTransform,
    bgr_to_hsv,
    build_ssd_augmentation,
    hsv_to_bgr,
)
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

# ---- photometric distortion (official PhotometricDistort) ---------------------------------------

# The official RandomLightingNoise (lib/dataloader/augmentations.py), typed in again here.
EIGVAL = np.array([55.46, 4.794, 1.148])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def test_lighting_noise_moves_every_pixel_by_the_official_pca_shift():
    """alpha = (0.1, 0, 0): every pixel moves by 0.1 x 55.46 x the first eigenvector, about
    -3.2 on each channel (detectron2's RandomLighting(0.1), made for [0, 1] images, moves
    0-255 pixels by at most 0.02)."""
    img = np.full((4, 5, 3), 100, np.uint8)
    out = PhotometricDistortTransform(lighting=(0.1, 0.0, 0.0)).apply_image(img)
    expected = 100 + 0.1 * EIGVAL[0] * EIGVEC[:, 0]
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-3)


def test_random_lighting_shift_has_the_official_spread():
    # Per channel: shift_c = sum_k eigvec[c, k] alpha_k eigval_k with alpha_k ~ N(0, 0.1), so
    # its std is 0.1 sqrt(sum_k (eigvec[c, k] eigval_k)^2), about 3.2 px; applied with p 1/2.
    np.random.seed(0)
    aug = PhotometricDistort()
    draws = [aug.get_transform(np.zeros((1, 1, 3), np.uint8)).lighting for _ in range(4000)]
    shifts = np.array([(EIGVEC * np.array(a)) @ EIGVAL for a in draws if any(a)])
    assert 1800 < len(shifts) < 2200
    expected = 0.1 * np.sqrt((EIGVEC**2) @ EIGVAL**2)
    np.testing.assert_allclose(shifts.std(axis=0), expected, rtol=0.06)


def test_hsv_conversion_is_opencvs_on_hand_worked_colours():
    # BGR (0, 0, 200): pure red, H 0, S 1, V 200. (50, 100, 200): V 200, S 0.75,
    # H = 60 (G - B) / (max - min) = 60 x 50 / 150 = 20.
    bgr = np.array([[[0.0, 0, 200], [50, 100, 200]]], np.float32)
    np.testing.assert_allclose(bgr_to_hsv(bgr), [[[0, 1, 200], [20, 0.75, 200]]], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(hsv_to_bgr(bgr_to_hsv(bgr)), bgr, atol=1e-3)


def test_saturation_and_hue_act_in_hsv_on_bgr_images():
    red = np.array([[[0, 0, 200]]], np.uint8)  # BGR
    # Saturation x0.5: S 1 -> 0.5, so min = V (1 - S) = 100 on B and G; red stays 200.
    np.testing.assert_allclose(PhotometricDistortTransform(saturation=0.5).apply_image(red),
                               [[[100, 100, 200]]], atol=1e-3)
    # Hue +120 degrees: red -> green.
    np.testing.assert_allclose(PhotometricDistortTransform(hue=120.0).apply_image(red),
                               [[[0, 200, 0]]], atol=1e-3)


def test_brightness_and_contrast_are_unclipped_float_and_ordered():
    img = np.array([[[10, 100, 250]]], np.uint8)
    first = PhotometricDistortTransform(brightness=-20.0, contrast=1.5).apply_image(img)
    np.testing.assert_allclose(first, [[[-15, 120, 345]]], atol=1e-3)  # (x - 20) x 1.5, unclipped
    assert first.dtype == np.float32
    # Contrast after the HSV round trip gives the same here (it is linear; only the order of
    # the draws differs).
    last = PhotometricDistortTransform(brightness=-20.0, contrast=1.5, contrast_first=False)
    np.testing.assert_allclose(last.apply_image(img), first, atol=1e-2)


def test_expand_places_the_image_on_a_mean_filled_canvas():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) + 100
    t = ExpandTransform(left=2, top=1, width=6, height=4, fill=(1, 2, 3))
    out = t.apply_image(img)
    assert out.shape == (4, 6, 3)
    np.testing.assert_array_equal(out[1:3, 2:5], img)
    np.testing.assert_array_equal(out[0, 0], [1, 2, 3])
    np.testing.assert_array_equal(out[3, 5], [1, 2, 3])
    np.testing.assert_allclose(t.apply_box(np.array([[0.0, 0, 3, 2]])), [[2, 1, 5, 3]])


def test_expand_ratio_is_between_1_and_4():
    np.random.seed(0)
    aug = Expand(fill=(0, 0, 0), prob=1.0)
    for _ in range(50):
        t = aug.get_transform(np.zeros((10, 20, 3), np.uint8))
        assert 20 <= t.width < 80 and 10 <= t.height < 40
        assert 0 <= t.left <= t.width - 20 and 0 <= t.top <= t.height - 10


def test_crop_drops_boxes_whose_centre_is_outside_and_clips_the_others():
    t = CenterKeepingCropTransform(10, 10, 20, 20)  # crop [10, 30] x [10, 30]
    boxes = np.array([[12.0, 12, 18, 18], [5, 5, 25, 25], [25, 25, 45, 45], [0, 0, 8, 8]])
    out = t.apply_box(boxes)
    # centres (15, 15) in; (15, 15) in, clipped; (35, 35) out -> empty; (4, 4) out -> empty.
    np.testing.assert_allclose(out, [[2, 2, 8, 8], [0, 0, 15, 15], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_min_iou_crop_keeps_the_ssd_constraints():
    np.random.seed(0)
    aug = MinIoURandomCrop()
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[20.0, 20, 60, 70], [120, 10, 190, 90]])
    crops = 0
    for _ in range(200):
        t = aug.get_transform(image, boxes)
        if isinstance(t, T.NoOpTransform):
            continue
        crops += 1
        assert 0 <= t.x0 and t.x0 + t.w <= 200 and 0 <= t.y0 and t.y0 + t.h <= 100
        assert t.w >= 0.3 * 200 - 1 and t.h >= 0.3 * 100 - 1 and 0.5 <= t.h / t.w <= 2 + 0.05
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert ((centre[:, 0] > t.x0) & (centre[:, 0] < t.x0 + t.w)
                 & (centre[:, 1] > t.y0) & (centre[:, 1] < t.y0 + t.h)).any()
    assert 100 < crops < 200  # "keep the whole image" is one of the six modes
    assert isinstance(aug.get_transform(image, np.zeros((0, 4))), T.NoOpTransform)


def test_mapper_gives_a_square_image_and_boxes_inside_it(tmp_path):
    path = str(tmp_path / "img.png")
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    annos = [{"bbox": [10, 20, 50, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 3},
             {"bbox": [100, 60, 40, 50], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1}]
    mapper = BoxAwareDatasetMapper(cfg, is_train=True, augmentations=build_ssd_augmentation(cfg))
    np.random.seed(1)
    for _ in range(20):
        out = mapper({"file_name": path, "height": 120, "width": 160, "annotations": annos})
        assert out["image"].shape == (3, 64, 64)
        b = out["instances"].gt_boxes.tensor
        assert ((b >= 0) & (b <= 64)).all() and ((b[:, 2:] - b[:, :2]) > 0).all()
        assert set(out["instances"].gt_classes.tolist()) <= {1, 3} and len(b) >= 1
    # Without the crop, zoom out, photometric changes and flip, only the resize remains.
    plain = BoxAwareDatasetMapper(cfg, is_train=True, augmentations=[T.Resize((60, 80))])
    out = plain({"file_name": path, "height": 120, "width": 160, "annotations": annos})
    expected = torch.tensor([[5.0, 10, 30, 30], [50, 30, 70, 55]])  # XYXY / 2
    torch.testing.assert_close(out["instances"].gt_boxes.tensor, expected)
    assert out["image"].shape == (3, 60, 80)
    with pytest.raises(KeyError):
        out["annotations"]


def test_mapper_drops_masks_and_keypoints_the_model_does_not_use(tmp_path, monkeypatch):
    """COCO annotations carry polygons (and keypoints for people): a box model must not
    transform them. Cropping polygons would need shapely; flipping keypoints, flip indices."""
    from fvcore.transforms.transform import CropTransform

    def no_polygons(self, polygons):
        raise AssertionError("a box-only mapper transformed segmentation polygons")

    monkeypatch.setattr(CropTransform, "apply_polygons", no_polygons)
    path = str(tmp_path / "img.png")
    Image.fromarray(np.zeros((120, 160, 3), dtype=np.uint8)).save(path)
    cfg = get_cfg()
    annos = [
        {"bbox": [10, 20, 50, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0,
         "segmentation": [[10, 20, 60, 20, 60, 60, 10, 60]], "keypoints": [30.0, 30.0, 2.0] * 17},
        {"bbox": [0, 0, 80, 60], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1,
         "segmentation": {"counts": [0, 4800, 14400], "size": [120, 160]}},
    ]
    mapper = BoxAwareDatasetMapper(cfg, is_train=True,
                                   augmentations=[CropTransform(5, 10, 100, 100), T.RandomFlip(prob=1.0)])
    out = mapper({"file_name": path, "height": 120, "width": 160, "annotations": annos})
    inst = out["instances"]
    assert len(inst) == 1 and not inst.has("gt_masks") and not inst.has("gt_keypoints")
    # The person's box [10, 20, 60, 60], cropped at (5, 10) and flipped in the 100 px crop.
    torch.testing.assert_close(inst.gt_boxes.tensor, torch.tensor([[45.0, 10.0, 95.0, 50.0]]))
    assert out["image"].shape == (3, 100, 100)
