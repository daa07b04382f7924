"""How many positive training samples each ground-truth object gets from a dense detector's
label assignment, by object size, on the training set as training resizes it.

    python -m harness.assignment --configs common/configs/retinanet_R-18-FPN_toy.yaml \
        common/configs/fcos_R-18-FPN_toy.yaml
    python -m harness.assignment --configs CONFIG -- MODEL.ANCHOR_GENERATOR.SIZES ...

RetinaNet-style models (an ``anchor_matcher``) are labelled with their matcher on the IoU of
every anchor with every object, FCOS with its own ``match_anchors``. No training: the model is
built only for its anchor generator and assignment rule. Writes ``<out>/assignment.md``.
"""

import argparse
import math
import os

import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, pairwise_iou

from common.data import prepare
from common.projects import REPO
from harness.projects import load_config

SIZE_BINS = (0, 16, 32, 64, math.inf)  # sqrt(box area) in px, after the training resize


def _anchors(model, height, width):
    div = max(model.backbone.size_divisibility, 1)
    h, w = math.ceil(height / div) * div, math.ceil(width / div) * div
    strides = [model.backbone.output_shape()[f].stride for f in model.head_in_features]
    feats = [torch.zeros(1, 1, math.ceil(h / s), math.ceil(w / s)) for s in strides]
    return model.anchor_generator(feats)


def positives_per_object(model, boxes, height, width):
    """(positives of each object, its best anchor IoU) for one image's ``boxes`` (Nx4)."""
    anchors = _anchors(model, height, width)
    gt = Boxes(boxes)
    iou = pairwise_iou(gt, Boxes.cat(anchors))
    best_iou = iou.max(dim=1).values
    if hasattr(model, "anchor_matcher"):  # RetinaNet: IoU thresholds, low-quality matches
        matched, labels = model.anchor_matcher(iou)
        matched = matched[labels == 1]
    else:  # FCOS: inside the box, near its centre, in the level's size range
        inst = Instances((height, width), gt_boxes=gt)
        matched = model.match_anchors(anchors, [inst])[0]
        matched = matched[matched >= 0]
    return torch.bincount(matched, minlength=len(gt)), best_iou


def assignment_stats(cfg):
    model = build_model(cfg).eval()
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, "choice")
    sizes, counts, ious = [], [], []
    for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0]):
        boxes = [a["bbox"] for a in d["annotations"] if not a.get("iscrowd", 0)]
        if not boxes:
            continue
        xyxy = torch.tensor(boxes, dtype=torch.float32)
        xyxy[:, 2:] += xyxy[:, :2]  # toy and COCO boxes are XYWH_ABS
        t = resize.get_transform(torch.zeros(d["height"], d["width"]).numpy())
        xyxy = torch.as_tensor(t.apply_box(xyxy.numpy()), dtype=torch.float32)
        n, iou = positives_per_object(model, xyxy, t.new_h, t.new_w)
        sizes.append(Boxes(xyxy).area().sqrt())
        counts.append(n)
        ious.append(iou)
    sizes, counts, ious = torch.cat(sizes), torch.cat(counts).float(), torch.cat(ious)
    rows = []
    for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
        m = (sizes >= lo) & (sizes < hi)
        if m.any():
            rows.append({
                "size": f"{lo}-{hi}" if hi < math.inf else f">={lo}",
                "objects": int(m.sum()),
                "positives": counts[m].mean().item(),
                "one_or_none": (counts[m] <= 1).float().mean().item() * 100,
                "best_iou": ious[m].mean().item(),
                "best_below_0.5": (ious[m] < 0.5).float().mean().item() * 100,
            })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/assignment")
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every config")
    args = parser.parse_args(argv)
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    lines = []
    for path in args.configs:
        cfg = load_config(path, ["MODEL.DEVICE", "cpu", *args.opts])
        prepare(cfg.DATASETS.TRAIN[0])
        name = os.path.relpath(os.path.abspath(path), REPO)
        lines += [
            f"`{name}`" + (f" with `{' '.join(args.opts)}`" if args.opts else ""), "",
            "| object size (px) | objects | positives / object | objects with <= 1 positive (%) "
            "| best anchor IoU | best IoU < 0.5 (%) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in assignment_stats(cfg):
            lines.append(f"| {r['size']} | {r['objects']} | {r['positives']:.1f} "
                         f"| {r['one_or_none']:.0f} | {r['best_iou']:.2f} "
                         f"| {r['best_below_0.5']:.0f} |")
        lines.append("")
    print("\n".join(lines))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "assignment.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
