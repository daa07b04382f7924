"""Two generated toy datasets, deterministic from a seed, small enough to learn on a CPU.

toy_shapes: six shape classes in random colours on textured backgrounds, 8 px to half the
    image, 0-6 objects per image, partial occlusion allowed. Stored as COCO json + PNGs; each
    object has its full box and the exact mask of its visible pixels (compressed RLE).
toy_crowd: one pedestrian-like class in dense, mutually occluding groups. Every person has a
    full box (whole body), a visible box (its unoccluded part, inside the full box) and a head
    box, stored CrowdHuman-style (.odgt) + PNGs.

Generation happens on first use into ``$TOY_DATA_ROOT`` (default ``~/.cache/d2papers/toy``),
one folder per (dataset, split, seed, version), written atomically so concurrent processes
never see a half-written folder.
"""

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageDraw

# Bump when the generator's output changes, so caches are rebuilt. 2: toy_shapes gained
# instance masks (images and boxes are those of version 1, byte for byte).
VERSION = 2

SHAPE_CLASSES = ["circle", "square", "triangle", "cross", "ring", "diamond"]
CROWD_CLASSES = ["person"]


@dataclass(frozen=True)
class SplitSpec:
    num_images: int
    seed: int


SHAPES_SPLITS = {"train": SplitSpec(2000, 0), "val": SplitSpec(300, 1)}
CROWD_SPLITS = {"train": SplitSpec(1000, 2), "val": SplitSpec(200, 3)}


def toy_root():
    return os.path.expanduser(os.environ.get("TOY_DATA_ROOT", "~/.cache/d2papers/toy"))


# ----------------------------------------------------------------------------- rendering
def _texture(rng, h, w):
    """A textured background: low-frequency colour noise, faint stripes and pixel noise."""
    base = rng.uniform(40, 215, size=3)
    coarse = rng.normal(0, 28, size=(5, 5, 3))
    coarse = np.asarray(
        Image.fromarray(np.uint8(np.clip(coarse + 128, 0, 255))).resize((w, h), Image.BICUBIC),
        dtype=np.float32,
    ) - 128.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta, period = rng.uniform(0, math.pi), rng.uniform(4, 16)
    stripes = 12 * np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period)
    img = base + coarse + stripes[..., None] + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _contrasting_colour(rng, background_rgb):
    """A random colour far enough (L1 > 150) from the background under the object."""
    for _ in range(100):
        c = rng.integers(0, 256, size=3)
        if np.abs(c - background_rgb).sum() > 150:
            return tuple(int(v) for v in c)
    return tuple(int(255 - v) for v in background_rgb)


def _draw_shape(draw, cls, box, colour):
    """Draws one shape filling the box ``(x0, y0, x1, y1)`` (exclusive end, pixel units)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    xy = [x0, y0, x1 - 1, y1 - 1]
    if cls == "circle":
        draw.ellipse(xy, fill=colour)
    elif cls == "square":
        draw.rectangle(xy, fill=colour)
    elif cls == "triangle":
        draw.polygon([(x0 + (w - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour)
    elif cls == "cross":
        t = max(2, round(w / 3))
        cx0 = x0 + (w - t) // 2
        cy0 = y0 + (h - t) // 2
        draw.rectangle([cx0, y0, cx0 + t - 1, y1 - 1], fill=colour)
        draw.rectangle([x0, cy0, x1 - 1, cy0 + t - 1], fill=colour)
    elif cls == "ring":
        draw.ellipse(xy, outline=colour, width=max(2, round(w / 5)))
    elif cls == "diamond":
        cx, cy = x0 + (w - 1) / 2, y0 + (h - 1) / 2
        draw.polygon([(cx, y0), (x1 - 1, cy), (cx, y1 - 1), (x0, cy)], fill=colour)
    else:
        raise ValueError(f"unknown shape {cls}")


def _overlap_fraction(a, b):
    """Intersection over the smaller box's area, for XYXY boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / small


def render_shapes_image(rng):
    """Returns (HxWx3 uint8 image, list of (class_index, [x, y, w, h], visible HxW bool mask)).

    The box is the whole shape's (occluded parts included). The mask is exact: each shape is
    drawn a second time, by the same call, on a layer of its own, and what later shapes paint
    over is removed. The masks take nothing from ``rng``, so images and boxes do not depend on
    them."""
    h, w = int(rng.integers(112, 161)), int(rng.integers(112, 161))
    img = _texture(rng, h, w)
    canvas = Image.fromarray(img)
    draw = ImageDraw.Draw(canvas)
    # ~7% of the images have no object at all.
    num = 0 if rng.random() < 0.07 else int(rng.integers(1, 7))
    max_side = min(h, w) // 2
    boxes, annos, masks = [], [], []
    for _ in range(num):
        for _attempt in range(20):
            side = int(round(math.exp(rng.uniform(math.log(8), math.log(max_side)))))
            aspect = 1.0 if rng.random() < 0.5 else rng.uniform(0.75, 1.33)
            bw = max(8, min(w, int(round(side * math.sqrt(aspect)))))
            bh = max(8, min(h, int(round(side / math.sqrt(aspect)))))
            x0 = int(rng.integers(0, w - bw + 1))
            y0 = int(rng.integers(0, h - bh + 1))
            box = (x0, y0, x0 + bw, y0 + bh)
            # Partial occlusion only: no box may hide more than 40% of a smaller one.
            if all(_overlap_fraction(box, b) < 0.4 for b in boxes):
                break
        else:
            continue
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        centre = img[(y0 + y0 + bh) // 2, (x0 + x0 + bw) // 2].astype(np.int64)
        _draw_shape(draw, SHAPE_CLASSES[cls], box, _contrasting_colour(rng, centre))
        layer = Image.new("L", (w, h), 0)
        _draw_shape(ImageDraw.Draw(layer), SHAPE_CLASSES[cls], box, 1)
        boxes.append(box)
        annos.append((cls, [x0, y0, bw, bh]))
        masks.append(np.asarray(layer, dtype=bool))
    covered = np.zeros((h, w), dtype=bool)
    for i in range(len(masks) - 1, -1, -1):  # front to back: later shapes are drawn on top
        masks[i], covered = masks[i] & ~covered, covered | masks[i]
    return np.asarray(canvas), [(c, b, m) for (c, b), m in zip(annos, masks)]


def _person_mask(h, w, box, rng):
    """A pedestrian-like silhouette (head, torso, two legs) filling ``box``; bool mask + head box."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    layer = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(layer)
    head_h = max(3, round(bh * 0.18))
    head_w = max(3, round(bw * 0.5))
    hx0 = x0 + (bw - head_w) // 2
    d.ellipse([hx0, y0, hx0 + head_w - 1, y0 + head_h - 1], fill=1)
    torso_y1 = y0 + round(bh * 0.6)
    d.rectangle([x0, y0 + head_h, x1 - 1, torso_y1], fill=1)
    leg_w = max(2, round(bw * 0.38))
    stride = rng.uniform(0.0, 0.1) * bw
    d.rectangle([x0 + stride, torso_y1, x0 + stride + leg_w - 1, y1 - 1], fill=1)
    d.rectangle([x1 - stride - leg_w, torso_y1, x1 - 1 - stride, y1 - 1], fill=1)
    head = [hx0, y0, head_w, head_h]
    return np.asarray(layer, dtype=bool), head


def _mask_box(mask):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]


def render_crowd_image(rng):
    """Returns (image, list of dicts with fbox, vbox, hbox in [x, y, w, h])."""
    h, w = int(rng.integers(128, 161)), int(rng.integers(160, 209))
    img = _texture(rng, h, w)
    people = []
    for _group in range(int(rng.integers(1, 4))):
        ph = int(rng.integers(28, min(96, h) + 1))  # people in a group stand at one depth
        pw = max(8, round(ph * rng.uniform(0.36, 0.46)))
        gx = rng.uniform(0, w - pw)
        gy = int(rng.integers(0, h - ph + 1))
        for _ in range(int(rng.integers(2, 8))):
            # Dense: neighbours are at most ~0.7 of a width apart, so they overlap heavily.
            x0 = int(np.clip(gx + rng.normal(0, 0.7 * pw), 0, w - pw))
            y0 = int(np.clip(gy + rng.normal(0, 0.08 * ph), 0, h - ph))
            people.append((x0, y0, x0 + pw, y0 + ph))
    # Paint back to front: a lower foot line is nearer the camera.
    people.sort(key=lambda b: b[3])
    masks, heads, colours = [], [], []
    for box in people:
        m, head = _person_mask(h, w, box, rng)
        masks.append(m)
        heads.append(head)
        colours.append(_contrasting_colour(rng, img[box[1] : box[3], box[0] : box[2]].mean((0, 1))))
    for m, c in zip(masks, colours):
        img[m] = c
    annos = []
    covered = np.zeros((h, w), dtype=bool)
    for i in range(len(people) - 1, -1, -1):  # front to back
        visible = masks[i] & ~covered
        covered |= masks[i]
        if visible.sum() < 0.05 * masks[i].sum():
            continue  # (almost) fully hidden: not annotated, like an unlabelled person
        annos.append(
            {"fbox": _mask_box(masks[i]), "vbox": _mask_box(visible), "hbox": heads[i]}
        )
    annos.reverse()
    return img, annos


# ----------------------------------------------------------------------------- writing
def _write_shapes(folder, spec):
    rng = np.random.default_rng(spec.seed)
    images, annotations = [], []
    for i in range(spec.num_images):
        img, annos = render_shapes_image(rng)
        name = f"{i:05d}.png"
        Image.fromarray(img).save(os.path.join(folder, "images", name))
        images.append({"id": i + 1, "file_name": name, "height": img.shape[0], "width": img.shape[1]})
        for cls, bbox, mask in annos:
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": bbox,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    # The box's area (version 1's), not the mask's: COCO's small / medium / large
                    # split of box AP stays what it was; segm AP uses the same split.
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(SHAPE_CLASSES)]
    with open(os.path.join(folder, "annotations.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def _write_crowd(folder, spec):
    rng = np.random.default_rng(spec.seed)
    with open(os.path.join(folder, "annotations.odgt"), "w") as f:
        for i in range(spec.num_images):
            img, annos = render_crowd_image(rng)
            name = f"{i:05d}"
            Image.fromarray(img).save(os.path.join(folder, "images", name + ".png"))
            gtboxes = [
                {"tag": "person", **a, "extra": {"box_id": k, "ignore": 0}}
                for k, a in enumerate(annos)
            ]
            f.write(json.dumps({"ID": name, "gtboxes": gtboxes}) + "\n")


_WRITERS = {"toy_shapes": (_write_shapes, SHAPES_SPLITS), "toy_crowd": (_write_crowd, CROWD_SPLITS)}


def generate(dataset, split, root=None, spec=None):
    """Generates ``dataset``/``split`` under ``root`` unless already there; returns its folder.

    The folder name holds the seed and generator version, so a changed generator never reads
    a stale cache. Writing goes to a temporary folder renamed into place at the end.
    """
    writer, splits = _WRITERS[dataset]
    spec = spec or splits[split]
    root = root or toy_root()
    folder = os.path.join(root, f"{dataset}_{split}_n{spec.num_images}_s{spec.seed}_v{VERSION}")
    if os.path.isdir(folder):
        return folder
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{dataset}_{split}.", dir=root)
    try:
        os.makedirs(os.path.join(tmp, "images"))
        writer(tmp, spec)
        os.rename(tmp, folder)
    except OSError:
        # Another process finished first: its folder is complete, ours is redundant.
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(folder):
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
