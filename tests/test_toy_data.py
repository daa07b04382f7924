"""The generated toy datasets: deterministic, valid boxes, the promised variety."""

import filecmp
import json
import os

import numpy as np
import pytest

from common.data import toy
from common.data.datasets import load_crowdhuman_odgt

SMALL = toy.SplitSpec(num_images=40, seed=123)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return toy.generate("toy_shapes", "train", root=str(tmp_path_factory.mktemp("a")), spec=SMALL)


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    return toy.generate("toy_crowd", "train", root=str(tmp_path_factory.mktemp("c")), spec=SMALL)


def _same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors
    for sub in cmp.common_dirs:
        _same_tree(os.path.join(a, sub), os.path.join(b, sub))


@pytest.mark.parametrize("dataset", ["toy_shapes", "toy_crowd"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, dataset):
    a = toy.generate(dataset, "val", root=str(tmp_path / "a"), spec=toy.SplitSpec(10, 7))
    b = toy.generate(dataset, "val", root=str(tmp_path / "b"), spec=toy.SplitSpec(10, 7))
    _same_tree(a, b)
    c = toy.generate(dataset, "val", root=str(tmp_path / "c"), spec=toy.SplitSpec(10, 8))
    ann = "annotations.json" if dataset == "toy_shapes" else "annotations.odgt"
    assert open(os.path.join(a, ann)).read() != open(os.path.join(c, ann)).read()


def test_generation_is_cached(tmp_path):
    a = toy.generate("toy_shapes", "val", root=str(tmp_path), spec=toy.SplitSpec(3, 1))
    stamp = os.path.getmtime(os.path.join(a, "annotations.json"))
    assert toy.generate("toy_shapes", "val", root=str(tmp_path), spec=toy.SplitSpec(3, 1)) == a
    assert os.path.getmtime(os.path.join(a, "annotations.json")) == stamp


def test_shapes_boxes_inside_images_and_variety(shapes):
    coco = json.load(open(os.path.join(shapes, "annotations.json")))
    assert [c["name"] for c in coco["categories"]] == toy.SHAPE_CLASSES
    assert len(toy.SHAPE_CLASSES) >= 6
    images = {im["id"]: im for im in coco["images"]}
    sides = []
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        im = images[a["image_id"]]
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= im["width"] and y + h <= im["height"]
        # An object's size (sqrt of its box area) is from 8 px to half the shorter image side.
        size = (w * h) ** 0.5
        assert 8 <= size <= min(im["width"], im["height"]) / 2 + 1
        sides.append(size)
    assert min(sides) <= 12 and max(sides) >= 40
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=41)[1:]
    assert (per_image == 0).any() and per_image.max() >= 4
    assert len({a["category_id"] for a in coco["annotations"]}) == len(toy.SHAPE_CLASSES)


def test_shapes_some_objects_overlap(shapes):
    coco = json.load(open(os.path.join(shapes, "annotations.json")))
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    overlaps = 0
    for boxes in by_image.values():
        for i in range(len(boxes)):
            for j in range(i):
                xa, ya, wa, ha = boxes[i]
                xb, yb, wb, hb = boxes[j]
                if min(xa + wa, xb + wb) > max(xa, xb) and min(ya + ha, yb + hb) > max(ya, yb):
                    overlaps += 1
    assert overlaps > 0


def test_image_pixels_match_annotation_sizes(shapes):
    from PIL import Image

    coco = json.load(open(os.path.join(shapes, "annotations.json")))
    for im in coco["images"][:5]:
        with Image.open(os.path.join(shapes, "images", im["file_name"])) as f:
            assert f.size == (im["width"], im["height"])


def test_crowd_visible_inside_full_inside_image(crowd):
    dicts = load_crowdhuman_odgt(os.path.join(crowd, "annotations.odgt"), os.path.join(crowd, "images"))
    assert len(dicts) == SMALL.num_images
    occluded = 0
    for d in dicts:
        for a in d["annotations"]:
            fx, fy, fw, fh = a["bbox"]
            vx, vy, vw, vh = a["vis_bbox"]
            assert 0 <= fx and 0 <= fy and fx + fw <= d["width"] and fy + fh <= d["height"]
            assert fx <= vx and fy <= vy and vx + vw <= fx + fw and vy + vh <= fy + fh
            assert vw > 0 and vh > 0
            occluded += (vw * vh) < 0.9 * (fw * fh)
    # Dense groups: several people per image on average, many of them partly hidden.
    n = sum(len(d["annotations"]) for d in dicts)
    assert n / len(dicts) >= 3 and occluded / n > 0.3


def _masks(coco):
    import pycocotools.mask as mask_util

    return {a["id"]: mask_util.decode(a["segmentation"]).astype(bool) for a in coco["annotations"]}


def test_shapes_masks_are_the_visible_pixels_of_each_shape(shapes):
    """Each mask is exact: inside its box, one solid colour in the image, disjoint from the
    other masks of its image, and, for a shape no other box touches, filling its box edge to
    edge (its tight box is the annotated box)."""
    from PIL import Image

    coco = json.load(open(os.path.join(shapes, "annotations.json")))
    masks = _masks(coco)
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    alone = occluded = 0
    for image_id, annos in by_image.items():
        img = np.asarray(Image.open(os.path.join(shapes, "images", files[image_id])).convert("RGB"))
        union = np.zeros(img.shape[:2], dtype=int)
        for a in annos:
            m = masks[a["id"]]
            assert a["segmentation"]["size"] == list(img.shape[:2]) and m.any()
            x, y, w, h = a["bbox"]
            outside = m.copy()
            outside[y:y + h, x:x + w] = False
            assert not outside.any()
            assert len(np.unique(img[m], axis=0)) == 1  # solid fill, no anti-aliasing
            union += m
            others = [b["bbox"] for b in annos if b is not a]
            if all(min(x + w, bx + bw) <= max(x, bx) or min(y + h, by + bh) <= max(y, by)
                   for bx, by, bw, bh in others):
                ys, xs = np.nonzero(m)
                assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == [x, y, w, h]
                alone += 1
            else:
                occluded += 1
        assert union.max() <= 1  # an occluded part belongs to the shape in front only
    assert alone > 20 and occluded > 5


def test_shapes_masks_loaded_for_mask_training(shapes):
    """detectron2's loader and mapper turn the RLE masks into the BitMasks a mask head trains on
    (INPUT.MASK_FORMAT "bitmask", as the toy mask configs set)."""
    import torch
    from detectron2.data import detection_utils as utils
    from detectron2.data.datasets import load_coco_json

    dicts = load_coco_json(os.path.join(shapes, "annotations.json"), os.path.join(shapes, "images"))
    coco = json.load(open(os.path.join(shapes, "annotations.json")))
    masks = _masks(coco)
    d = next(d for d in dicts if d["annotations"])
    inst = utils.annotations_to_instances(d["annotations"], (d["height"], d["width"]), mask_format="bitmask")
    ids = [a["id"] for a in coco["annotations"] if a["image_id"] == d["image_id"]]
    assert torch.equal(inst.gt_masks.tensor, torch.as_tensor(np.stack([masks[i] for i in ids])))
