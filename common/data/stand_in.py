"""Small stand-ins for the real datasets' folder trees, to run the COCO and CrowdHuman configs
end to end where the real data is not available (tests, a first check on a new machine).

``write_coco_tree(root)`` writes ``root/coco/`` as detectron2's builtin ``coco_2017_{train,val}``
read it (``$DETECTRON2_DATASETS=root``): the 80 real COCO category ids and names, JPEG images,
polygon masks, a crowd region stored as uncompressed RLE (as COCO stores them), and an image
with no objects. ``write_crowdhuman_tree(root)`` writes ``root/crowdhuman/`` as CrowdHuman ships:
``annotation_{train,val}.odgt`` (full, visible and head boxes, full boxes reaching outside the
image, a ``mask`` ignore region, no image sizes) and ``Images/<ID>.jpg``.

The content is random and means nothing; only the formats are the real ones.
"""

import json
import os

import numpy as np
from PIL import Image, ImageDraw

from . import toy

__all__ = ["write_coco_tree", "write_crowdhuman_tree"]


def _coco_categories():
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return [{"id": c["id"], "name": c["name"], "supercategory": ""} for c in COCO_CATEGORIES if c["isthing"]]


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE of a bool (h, w) mask: run lengths in column-major order,
    starting with a run of zeros."""
    flat = mask.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": list(mask.shape)}


def _coco_image(rng, h, w, num_objects, crowd, categories):
    """An image with ``num_objects`` polygon objects (and a crowd region if ``crowd``) and
    their COCO annotations (without ids)."""
    img = toy._texture(rng, h, w)
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)
    annos = []
    for _ in range(num_objects):
        bw, bh = int(rng.integers(w // 6, w // 2)), int(rng.integers(h // 6, h // 2))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        # A quadrilateral touching each side of its box once.
        t = rng.uniform(0.2, 0.8, size=4)
        poly = [x0 + t[0] * bw, y0, x0 + bw, y0 + t[1] * bh, x0 + t[2] * bw, y0 + bh, x0, y0 + t[3] * bh]
        draw.polygon(list(zip(poly[0::2], poly[1::2])), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        xs, ys = np.array(poly[0::2]), np.array(poly[1::2])
        area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
        annos.append({
            "category_id": categories[int(rng.integers(len(categories)))]["id"],
            "segmentation": [[round(float(v), 2) for v in poly]],
            "area": round(float(area), 2),
            "bbox": [x0, y0, bw, bh],
            "iscrowd": 0,
        })
    if crowd:
        mask = np.zeros((h, w), dtype=bool)
        mask[h // 2:, : w // 3] = True
        annos.append({
            "category_id": 1,  # a crowd of people, as most of COCO's crowd regions
            "segmentation": _uncompressed_rle(mask),
            "area": int(mask.sum()),
            "bbox": [0, h // 2, w // 3, h - h // 2],
            "iscrowd": 1,
        })
    return np.asarray(canvas), annos


def write_coco_tree(root, num_train=3, num_val=2, size=(320, 240), seed=0):
    """Writes ``root/coco/{annotations,train2017,val2017}``; returns ``root``.

    Each split's first image holds a crowd region, its last image no object at all (so
    ``num_*`` >= 2); the others hold 1-3 objects.
    """
    rng = np.random.default_rng(seed)
    categories = _coco_categories()
    w, h = size
    os.makedirs(os.path.join(root, "coco", "annotations"), exist_ok=True)
    for split, num, first_id in (("train2017", num_train, 1), ("val2017", num_val, 1000)):
        folder = os.path.join(root, "coco", split)
        os.makedirs(folder, exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            image_id = first_id + i
            num_objects = 0 if i == num - 1 else int(rng.integers(1, 4))
            img, annos = _coco_image(rng, h, w, num_objects, crowd=i == 0, categories=categories)
            name = f"{image_id:012d}.jpg"
            Image.fromarray(img).save(os.path.join(folder, name), quality=90)
            images.append({"id": image_id, "file_name": name, "height": h, "width": w})
            for a in annos:
                annotations.append({"id": 100 * image_id + len(annotations), "image_id": image_id, **a})
        data = {
            "info": {"description": "stand-in for COCO 2017 (random content)"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        with open(os.path.join(root, "coco", "annotations", f"instances_{split}.json"), "w") as f:
            json.dump(data, f)
    return root


def write_crowdhuman_tree(root, num_train=3, num_val=2, seed=0):
    """Writes ``root/crowdhuman/{annotation_train.odgt, annotation_val.odgt, Images/}``; returns
    the ``root/crowdhuman`` folder.

    People come from the toy crowd renderer; in each split the first image also gets an ignore
    region (``tag: mask``) and a person whose full box reaches past the image's left and top
    edges (CrowdHuman annotates the whole body even where the image cuts it), and the last
    image holds only an ignore region.
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "crowdhuman")
    os.makedirs(os.path.join(folder, "Images"), exist_ok=True)
    for split, num in (("train", num_train), ("val", num_val)):
        with open(os.path.join(folder, f"annotation_{split}.odgt"), "w") as f:
            for i in range(num):
                img, people = toy.render_crowd_image(rng)
                h, w = img.shape[:2]
                image_id = f"{273271 + i},{split}{i:04x}"  # CrowdHuman's "<n>,<hex>" ids
                gtboxes = [] if i == num - 1 else [
                    {"tag": "person", **p, "extra": {"box_id": k, "occ": 0}} for k, p in enumerate(people)
                ]
                if i == 0:
                    gtboxes.append({
                        "tag": "person", "fbox": [-12, -20, 40, 90], "vbox": [0, 0, 28, 70],
                        "hbox": [0, -20, 14, 16], "extra": {"box_id": len(gtboxes), "occ": 1},
                    })
                box = [w // 2, h // 4, w // 4, h // 2]
                gtboxes.append({"tag": "mask", "fbox": box, "vbox": box, "hbox": box,
                                "extra": {"box_id": len(gtboxes), "ignore": 1}})
                Image.fromarray(img).save(os.path.join(folder, "Images", image_id + ".jpg"), quality=90)
                f.write(json.dumps({"ID": image_id, "gtboxes": gtboxes}) + "\n")
    return folder
