#!/usr/bin/env python
"""The paper's Fig. 3 idea on a trained model: the predicted distribution of each box side is
sharp where the object's edge is clear and flatter where it is ambiguous (here: covered by an
object drawn on top of it).

    python tools/visualize_distribution.py --config-file configs/toy/gfl_R-18-FPN_toy.yaml \\
        MODEL.WEIGHTS output/gfl_R-18-FPN_toy/model_final.pth

For every GT box of the test set it takes the location that detects it best (highest score of
the GT class among locations whose decoded box has IoU >= 0.5 with it) and that location's four
side distributions. Writes ``<out>/distribution.png`` (examples), ``<out>/distribution.md`` (the
spread of clear vs covered sides) and ``<out>/distribution.json``.
"""

import argparse
import json
import os
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.structures import Boxes, pairwise_iou

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Config, dataset registration and checks go through the project's entry point, the one file
# that uses the repo's shared engine; the package itself stays copyable alone.
import train_net  # noqa: E402
from gfl.integral import integral, ltrb_to_boxes  # noqa: E402

SIDES = "ltrb"


def covered_sides(boxes):
    """For toy_shapes, where annotation order is drawing order: side s of box i is covered if a
    later box crosses that edge."""
    out = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        edges = {"l": (x0, y0, x0, y1), "t": (x0, y0, x1, y0), "r": (x1, y0, x1, y1), "b": (x0, y1, x1, y1)}
        covered = set()
        for s, (ex0, ey0, ex1, ey1) in edges.items():
            for bx0, by0, bx1, by1 in boxes[i + 1:]:
                if bx0 <= ex1 and ex0 <= bx1 and by0 <= ey1 and ey0 <= by1:
                    covered.add(s)
        out.append(covered)
    return out


@torch.no_grad()
def side_distributions(model, inputs, gt_boxes, gt_classes):
    """(num_gt, 4, n+1) distributions, their strides and scores, for the best location per GT
    (None where no location reaches IoU 0.5)."""
    images = model.preprocess_image([inputs])
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    anchors, logits, reg = model._dense(features, model.head(features))
    strides = model._strides(anchors)
    points = Boxes.cat(anchors).get_centers()
    logits, reg = torch.cat(logits, dim=1)[0], torch.cat(reg, dim=1)[0]
    boxes = ltrb_to_boxes(points, integral(reg) * strides[:, None])
    ious = pairwise_iou(Boxes(boxes), Boxes(gt_boxes))  # (A, G)
    out = []
    for g, c in enumerate(gt_classes.tolist()):
        score = logits[:, c].sigmoid() * (ious[:, g] >= 0.5)
        best = int(score.argmax())
        if score[best] <= 0:
            out.append(None)
            continue
        out.append({"probs": reg[best].softmax(dim=-1), "stride": float(strides[best]),
                    "score": float(score[best]), "box": boxes[best].tolist()})
    return out


def spread_px(probs, stride):
    """Standard deviation of each side's distribution, in pixels."""
    bins = torch.arange(probs.shape[-1], dtype=probs.dtype)
    mean = (probs * bins).sum(-1, keepdim=True)
    return (((bins - mean) ** 2 * probs).sum(-1).sqrt() * stride).tolist()


def plot(examples, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(examples), 5, figsize=(13, 2.4 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        img = Image.open(ex["file_name"]).convert("RGB")
        x0, y0, x1, y1 = ex["gt"]
        pad = 0.4 * max(x1 - x0, y1 - y0)
        crop = (max(0, x0 - pad), max(0, y0 - pad), min(img.width, x1 + pad), min(img.height, y1 + pad))
        row[0].imshow(img.crop([int(v) for v in crop]))
        for box, colour in ((ex["gt"], "lime"), (ex["box"], "red")):
            bx0, by0 = box[0] - int(crop[0]), box[1] - int(crop[1])
            row[0].add_patch(plt.Rectangle((bx0, by0), box[2] - box[0], box[3] - box[1],
                                           fill=False, color=colour, lw=1.5))
        row[0].set_title(f"score {ex['score']:.2f}; covered: {''.join(sorted(ex['covered'])) or '-'}",
                         fontsize=8)
        row[0].axis("off")
        for k, ax in enumerate(row[1:]):
            p = ex["probs"][k]
            ax.bar(range(len(p)), p, color="tab:orange" if SIDES[k] in ex["covered"] else "tab:blue")
            ax.set_ylim(0, 1)
            ax.set_title(f"{SIDES[k]}: std {ex['spread'][k]:.1f} px", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--out", default="output/gfl_distribution")
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    setup_args = train_net.default_argument_parser().parse_args(
        ["--config-file", args.config_file, "--eval-only", *args.opts, "MODEL.DEVICE", "cpu",
         "OUTPUT_DIR", args.out]
    )
    cfg = train_net.setup(setup_args, train_net.add_gfl_config)
    dataset = cfg.DATASETS.TEST[0]
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    mapper = DatasetMapper(cfg, is_train=False)

    records = []
    for d in DatasetCatalog.get(dataset):
        if not d["annotations"]:
            continue
        inputs = mapper(d)
        gt = torch.tensor([a["bbox"] for a in d["annotations"]], dtype=torch.float32)
        gt[:, 2:] += gt[:, :2]  # XYWH -> XYXY, original image pixels
        scale = inputs["image"].shape[1] / d["height"]
        classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        found = side_distributions(model, inputs, gt * scale, classes)
        for box, covered, f in zip(gt.tolist(), covered_sides(gt.tolist()), found):
            if f is None:
                continue
            spread = [s / scale for s in spread_px(f["probs"], f["stride"])]
            records.append({"file_name": d["file_name"], "gt": box, "covered": covered,
                            "box": [v / scale for v in f["box"]], "score": f["score"],
                            "probs": f["probs"].tolist(), "spread": spread})

    if not records:
        raise SystemExit("error: no object was found with IoU >= 0.5; is MODEL.WEIGHTS a trained model?")
    os.makedirs(args.out, exist_ok=True)
    clear = [r["spread"][k] for r in records for k in range(4) if SIDES[k] not in r["covered"]]
    covered = [r["spread"][k] for r in records for k in range(4) if SIDES[k] in r["covered"]]
    summary = {
        "objects": len(records),
        "clear_sides": len(clear), "clear_mean_std_px": sum(clear) / max(len(clear), 1),
        "covered_sides": len(covered), "covered_mean_std_px": sum(covered) / max(len(covered), 1),
    }
    json.dump({"summary": summary, "config": args.config_file, "weights": cfg.MODEL.WEIGHTS},
              open(os.path.join(args.out, "distribution.json"), "w"), indent=1)
    with open(os.path.join(args.out, "distribution.md"), "w") as f:
        f.write("| sides | count | mean std of the distribution (px) |\n|---|---:|---:|\n")
        f.write(f"| clear | {len(clear)} | {summary['clear_mean_std_px']:.2f} |\n")
        f.write(f"| covered by a later object | {len(covered)} | {summary['covered_mean_std_px']:.2f} |\n")
    # Examples: the objects with the sharpest and with the flattest side distributions.
    ranked = sorted(records, key=lambda r: max(r["spread"]))
    half = args.examples // 2
    examples = ranked[:half] + ranked[len(ranked) - (args.examples - half):]
    plot(examples, os.path.join(args.out, "distribution.png"))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
