"""Dataset registration: the toy datasets, any COCO-format json, CrowdHuman-style .odgt files.

Toy datasets are registered on import (``toy_shapes_{train,val}``, ``toy_crowd_{train,val}``)
and generated on first use. Custom data registers from the command line
(``--register-coco NAME JSON IMAGE_DIR``, ``--register-crowdhuman NAME ODGT IMAGE_DIR``) with
no code edits; the class count comes from the dataset's metadata.
"""

import hashlib
import json
import logging
import os
import re

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from . import toy

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset that cannot be used as given (missing file, bad format); one-line message."""


def _require_file(path, what):
    if not os.path.exists(path):
        raise DatasetError(f"{what} not found: {path}")


def _registered_before(name, **files):
    """Whether ``name`` is registered with these same files already (setup() run twice in one
    process, e.g. the demo): then registering is a no-op. Other files under a taken name are an
    error."""
    if name not in DatasetCatalog.list():
        return False
    meta = MetadataCatalog.get(name)
    if all(meta.get(k, None) == v for k, v in files.items()):
        return True
    raise DatasetError(f"dataset '{name}' is already registered, with other files")


def register_coco(name, json_file, image_root, *, check=True):
    """Registers a COCO-format detection json; ``thing_classes`` is read from its categories.
    With ``check`` (``--register-coco``) the json is checked first (:func:`checked_coco_json`)
    and what is read, and evaluated against, is the checked json."""
    if _registered_before(name, source_json=json_file, image_root=image_root):
        return
    source = json_file
    if check:
        _require_file(json_file, f"dataset '{name}': annotation file")
        _require_file(image_root, f"dataset '{name}': image folder")
        json_file = checked_coco_json(name, json_file, image_root)
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    meta = MetadataCatalog.get(name)
    meta.set(json_file=json_file, source_json=source, image_root=image_root, evaluator_type="coco")
    if check:
        meta.set(thing_classes=[c["name"] for c in coco_categories(json_file)])


def checked_coco_json(name, json_file, image_root):
    """Checks a COCO json before anything trains on it, in one pass over the file.

    One-line DatasetError for what would crash later (a KeyError in detectron2's loader, a
    missing file when first sampled): an image without ``height``/``width``, an image file
    that does not exist, an annotation whose ``category_id`` is not in ``categories``. What
    can be repaired is, with a warning that counts it: boxes with non-positive width or height
    are dropped (detectron2 would drop them silently), a missing ``iscrowd`` becomes 0 and a
    missing ``area`` the box's area (pycocotools' evaluation reads both). Returns
    ``json_file``, or the path of a repaired copy in the user's cache folder."""
    with open(json_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"dataset '{name}': {json_file} is not valid json ({e})") from None
    images, annotations = data.get("images", []), data.get("annotations", [])
    where = f"dataset '{name}' ({json_file})"
    no_size = [im.get("id") for im in images if not {"height", "width"} <= set(im)]
    if no_size:
        raise DatasetError(f"{where}: {len(no_size)} images have no height/width, e.g. image id "
                           f"{no_size[0]}; COCO's format needs both")
    missing = [im["file_name"] for im in images
               if not os.path.isfile(os.path.join(image_root, im.get("file_name", "")))]
    if missing:
        raise DatasetError(f"{where}: {len(missing)} of {len(images)} image files are not under "
                           f"{image_root}, e.g. {missing[0]!r}")
    known = {c["id"] for c in coco_categories(json_file)}
    unknown = sorted({a.get("category_id") for a in annotations} - known, key=str)
    if unknown:
        raise DatasetError(f"{where}: annotations with category ids not in 'categories': {unknown[:5]}")
    if not annotations:
        logger.warning(f"{where}: no annotations at all (every image is background)")
    kept = [a for a in annotations if len(a.get("bbox", ())) == 4 and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    dropped = len(annotations) - len(kept)
    no_crowd = sum("iscrowd" not in a for a in kept)
    no_area = sum("area" not in a for a in kept)
    if not (dropped or no_crowd or no_area):
        return json_file
    for a in kept:
        a.setdefault("iscrowd", 0)
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
    data["annotations"] = kept
    stat = os.stat(json_file)
    key = f"{os.path.abspath(json_file)}:{stat.st_size}:{stat.st_mtime_ns}"
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                         "detection-papers", "checked-coco")
    os.makedirs(cache, exist_ok=True)
    out = os.path.join(cache, f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json")
    tmp = f"{out}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, out)
    logger.warning(f"{where}: dropped {dropped} boxes of non-positive width or height; set iscrowd 0 "
                   f"on {no_crowd} and area to the box area on {no_area} annotations without them "
                   f"(training and evaluation read the repaired copy {out})")
    return out


def coco_categories(json_file):
    """The ``categories`` of a COCO json, sorted by id, as ``load_coco_json`` orders them.

    Read from the file's end where they are its last key, as in COCO's own files (fast on a
    500 MB json); any other layout is parsed whole.
    """
    cats = _last_key_categories(json_file)
    if cats is None:
        with open(json_file) as f:
            try:
                cats = json.load(f)["categories"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DatasetError(f"{json_file} is not a COCO json with 'categories': {e}") from None
    if not isinstance(cats, list) or not all(isinstance(c, dict) and {"id", "name"} <= set(c) for c in cats):
        raise DatasetError(f"{json_file}: 'categories' must be a list of {{'id': ..., 'name': ...}}")
    return sorted(cats, key=lambda c: c["id"])


def _last_key_categories(json_file, tail_bytes=1 << 20):
    """``"categories": [...]`` followed by nothing but the closing brace is the top-level key
    (inside a string the quotes would be escaped); None if the file does not end so."""
    with open(json_file, "rb") as f:
        f.seek(max(0, os.path.getsize(json_file) - tail_bytes))
        tail = f.read().decode("utf-8", errors="replace")
    key = tail.rfind('"categories"')
    colon = re.compile(r"\s*:\s*").match(tail, key + len('"categories"')) if key >= 0 else None
    if colon is None:
        return None
    try:
        cats, end = json.JSONDecoder().raw_decode(tail, colon.end())
    except json.JSONDecodeError:
        return None
    return cats if tail[end:].strip() == "}" else None


def _check_categories(name, meta):
    """A json read under a name whose metadata is fixed (detectron2's builtin COCO datasets:
    classes and category ids) must have that metadata's categories; detectron2 would fail deep
    inside loading it."""
    known = meta.as_dict()
    if not {"json_file", "thing_classes", "thing_dataset_id_to_contiguous_id"} <= known.keys():
        return
    found = [(c["id"], c["name"]) for c in coco_categories(meta.json_file)]
    expected = list(zip(sorted(meta.thing_dataset_id_to_contiguous_id), meta.thing_classes))
    if found == expected:
        return
    first = next((f"{a} instead of {b}" for a, b in zip(found, expected) if a != b), "")
    raise DatasetError(
        f"dataset '{name}': the {len(found)} categories of {meta.json_file} are not the "
        f"{len(expected)} of its metadata (id, name: {first or 'a different count'}); "
        "register your json under a name of your own with --register-coco NAME JSON IMAGE_DIR"
    )


def load_crowdhuman_odgt(odgt_file, image_root, image_ext=None):
    """Loads a CrowdHuman-style ``.odgt`` file (one json object per line) as detectron2 dicts.

    Each record has ``ID`` and ``gtboxes``; a gt box has ``tag`` ("person", or "mask" for an
    ignore region), ``fbox`` (full body), ``vbox`` (visible part), ``hbox`` (head), all
    ``[x, y, w, h]`` in pixels, and ``extra.ignore``. ``bbox`` is the full box (XYWH_ABS);
    ``vis_bbox`` and ``head_bbox`` carry the others. Ignored boxes get ``iscrowd=1``. Image
    files are ``image_root/<ID><image_ext>``; without ``image_ext``, the extension of the first
    record's file (.jpg as CrowdHuman, .png as the toy data, .jpeg) is used for all.
    """
    from PIL import Image

    dicts = []
    with open(odgt_file) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            if image_ext is None:
                image_ext = _image_ext(image_root, rec["ID"])
            file_name = os.path.join(image_root, rec["ID"] + image_ext)
            if "height" in rec and "width" in rec:
                h, w = rec["height"], rec["width"]
            else:
                with Image.open(file_name) as im:
                    w, h = im.size
            annos = []
            for gt in rec.get("gtboxes", []):
                ignore = gt.get("tag") != "person" or gt.get("extra", {}).get("ignore", 0) == 1
                anno = {
                    "bbox": gt["fbox"],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": 0,
                    "iscrowd": int(ignore),
                }
                if "vbox" in gt:
                    anno["vis_bbox"] = gt["vbox"]
                if "hbox" in gt:
                    anno["head_bbox"] = gt["hbox"]
                annos.append(anno)
            dicts.append(
                {
                    "file_name": file_name,
                    "image_id": rec["ID"],
                    "height": h,
                    "width": w,
                    "annotations": annos,
                }
            )
    return dicts


def _image_ext(image_root, image_id):
    for ext in (".jpg", ".png", ".jpeg"):
        if os.path.exists(os.path.join(image_root, image_id + ext)):
            return ext
    raise DatasetError(f"no image {image_id}.jpg/.png/.jpeg in {image_root}")


def register_crowdhuman(name, odgt_file, image_root, *, image_ext=None, check=True):
    """Registers a CrowdHuman-style dataset (one class, "person"), evaluated with the crowd
    metrics (AP, MR^-2, recall, JI: ``common.evaluation.CrowdHumanEvaluator``) on full boxes."""
    if _registered_before(name, odgt_file=odgt_file, image_root=image_root):
        return
    if check:
        _require_file(odgt_file, f"dataset '{name}': annotation file")
        _require_file(image_root, f"dataset '{name}': image folder")
    DatasetCatalog.register(name, lambda: load_crowdhuman_odgt(odgt_file, image_root, image_ext))
    MetadataCatalog.get(name).set(
        thing_classes=list(toy.CROWD_CLASSES),
        odgt_file=odgt_file,
        image_root=image_root,
        evaluator_type="crowdhuman",
    )


# ----------------------------------------------------------------------------- toy datasets
def _toy_paths(dataset, split):
    spec = (toy.SHAPES_SPLITS if dataset == "toy_shapes" else toy.CROWD_SPLITS)[split]
    folder = os.path.join(
        toy.toy_root(), f"{dataset}_{split}_n{spec.num_images}_s{spec.seed}_v{toy.VERSION}"
    )
    return folder


def register_toy_datasets():
    for split in ("train", "val"):
        name = f"toy_shapes_{split}"
        if name not in DatasetCatalog:
            folder = _toy_paths("toy_shapes", split)

            def load(split=split, name=name):
                folder = toy.generate("toy_shapes", split)
                return load_coco_json(
                    os.path.join(folder, "annotations.json"), os.path.join(folder, "images"), name
                )

            DatasetCatalog.register(name, load)
            MetadataCatalog.get(name).set(
                thing_classes=list(toy.SHAPE_CLASSES),
                json_file=os.path.join(folder, "annotations.json"),
                image_root=os.path.join(folder, "images"),
                evaluator_type="coco",
            )
        name = f"toy_crowd_{split}"
        if name not in DatasetCatalog:
            folder = _toy_paths("toy_crowd", split)

            def load(split=split):
                folder = toy.generate("toy_crowd", split)
                return load_crowdhuman_odgt(
                    os.path.join(folder, "annotations.odgt"), os.path.join(folder, "images")
                )

            DatasetCatalog.register(name, load)
            MetadataCatalog.get(name).set(
                thing_classes=list(toy.CROWD_CLASSES),
                image_root=os.path.join(folder, "images"),
                evaluator_type="crowdhuman",
            )


def prepare(name):
    """Makes dataset ``name`` ready to read: generates a toy dataset, checks files of others.

    Raises DatasetError with a one-line message for an unknown name or a missing file.
    """
    if name not in DatasetCatalog:
        raise DatasetError(
            f"dataset '{name}' is not registered. Toy datasets: toy_shapes_{{train,val}}, "
            "toy_crowd_{train,val}; register your own with --register-coco NAME JSON IMAGE_DIR "
            "or --register-crowdhuman NAME ODGT IMAGE_DIR"
        )
    dataset, _, split = name.rpartition("_")
    if dataset in ("toy_shapes", "toy_crowd") and split in ("train", "val"):
        toy.generate(dataset, split)
        return
    meta = MetadataCatalog.get(name)
    for key in ("json_file", "image_root"):
        path = getattr(meta, key, None) if key in meta.as_dict() else None
        if path is not None and not os.path.exists(path):
            raise DatasetError(
                f"dataset '{name}': {key} {path} not found (builtin datasets live under "
                "$DETECTRON2_DATASETS, default ./datasets)"
            )
    _check_categories(name, meta)
