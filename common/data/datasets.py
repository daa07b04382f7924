"""Dataset registration: the toy datasets, any COCO-format json, CrowdHuman-style .odgt files.

Toy datasets are registered on import (``toy_shapes_{train,val}``, ``toy_crowd_{train,val}``)
and generated on first use. Custom data registers from the command line
(``--register-coco NAME JSON IMAGE_DIR``, ``--register-crowdhuman NAME ODGT IMAGE_DIR``) with
no code edits; the class count comes from the dataset's metadata.
"""

import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from . import toy


class DatasetError(ValueError):
    """A dataset that cannot be used as given (missing file, bad format); one-line message."""


def _require_file(path, what):
    if not os.path.exists(path):
        raise DatasetError(f"{what} not found: {path}")


def register_coco(name, json_file, image_root, *, check=True):
    """Registers a COCO-format detection json; ``thing_classes`` is read from its categories."""
    if check:
        _require_file(json_file, f"dataset '{name}': annotation file")
        _require_file(image_root, f"dataset '{name}': image folder")
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    meta = MetadataCatalog.get(name)
    meta.set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    if check:
        meta.set(thing_classes=_coco_classes(json_file))


def _coco_classes(json_file):
    with open(json_file) as f:
        try:
            cats = json.load(f)["categories"]
        except (json.JSONDecodeError, KeyError) as e:
            raise DatasetError(f"{json_file} is not a COCO json with 'categories': {e}") from None
    return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]


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
    if check:
        _require_file(odgt_file, f"dataset '{name}': annotation file")
        _require_file(image_root, f"dataset '{name}': image folder")
    DatasetCatalog.register(name, lambda: load_crowdhuman_odgt(odgt_file, image_root, image_ext))
    MetadataCatalog.get(name).set(
        thing_classes=list(toy.CROWD_CLASSES),
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
    if name.startswith(("toy_shapes_", "toy_crowd_")):
        dataset, split = name.rsplit("_", 1)
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
