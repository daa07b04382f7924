#!/usr/bin/env python
"""What a trained AutoAssign model learned to assign (the paper's Fig. 1 and 4 ideas):

1. ``center_prior.png``: the learned centre prior G of every class over the offset from the
   box centre (in strides), against its initialisation (mu = 0, sigma = 1).
2. ``positive_weights.png``: for one image, per FPN level, the centre prior G and the
   positive weight w+ of each location inside a GT box (w+ sums to 1 over all levels for
   each GT), and the negative side's probability of being a positive.

    python tools/visualize_assignment.py --config-file configs/toy/autoassign_R-18-FPN_toy.yaml \\
        MODEL.WEIGHTS output/autoassign_R-18-FPN_toy/model_final.pth

Without ``MODEL.WEIGHTS`` it draws the untrained model's initial assignment. Also writes
``assignment.json``: mu and sigma per class, and for the image the share of each
GT's positive weight on each level.
"""

import argparse
import json
import os
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.layers import cat
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, pairwise_iou

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Config, dataset registration and checks go through the project's entry point, the one file
# that uses the repo's shared engine; the package itself stays copyable alone.
import train_net  # noqa: E402
from autoassign import negative_weights, positive_weights  # noqa: E402


@torch.no_grad()
def assignment_maps(model, inputs, gt):
    """Per level ``(H_l, W_l)`` maps of the centre prior, w+ and the negative side's
    probability of being a positive, for the GTs ``gt`` (input-image pixels) of ``inputs``;
    and each GT's share of w+ per level."""
    images = model.preprocess_image([inputs])
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    anchors, logits, reg, obj = model._dense(features, model.head(features))
    boxes = Boxes.cat(anchors)
    scores = (cat(logits, dim=1).sigmoid() * cat(obj, dim=1).sigmoid())[0]
    pred_boxes = model.box2box_transform.apply_deltas(cat(reg, dim=1)[0], boxes.tensor)
    locations, strides = boxes.get_centers(), model._strides(anchors)
    a, g, prior, p_pos = model.candidates(locations, strides, scores, pred_boxes, gt)
    w = positive_weights(p_pos, prior, g, len(gt), model.tau)
    v = negative_weights(pairwise_iou(gt.gt_boxes, Boxes(pred_boxes)), a, g)

    sizes = [f.shape[-2:] for f in features]
    level = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor([h * w for h, w in sizes]))
    share = torch.zeros(len(gt), len(sizes)).index_put_((g, level[a]), w, accumulate=True)
    maps = {}
    for name, values in (("prior", prior), ("w+", w), ("P(positive)", v)):
        # A location in two boxes shows the larger value.
        flat = torch.zeros(len(boxes)).scatter_reduce(0, a, values, "amax")
        maps[name] = [m.view(h, w_) for m, (h, w_) in zip(flat.split([h * w_ for h, w_ in sizes]), sizes)]
    return maps, share


def plot_priors(model, class_names, path, extent=3.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = torch.linspace(-extent, extent, 121)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    mu, sigma = model.center_prior.mu.detach(), model.center_prior.sigma.detach()
    fig, axes = plt.subplots(1, len(class_names), figsize=(2.3 * len(class_names), 2.6), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], class_names)):
        gx = torch.exp(-((dx - mu[k, 0]) ** 2) / (2 * sigma[k, 0] ** 2))
        g = gx * torch.exp(-((dy - mu[k, 1]) ** 2) / (2 * sigma[k, 1] ** 2))
        ax.imshow(g, extent=(-extent, extent, extent, -extent), cmap="viridis", vmin=0, vmax=1)
        init = torch.exp(-(dx**2 + dy**2) / 2)
        ax.contour(d, d, init, levels=[0.5], colors="white", linestyles="dashed", linewidths=0.8)
        ax.contour(d, d, g, levels=[0.5], colors="red", linewidths=1.0)
        ax.plot([mu[k, 0]], [mu[k, 1]], "r+")
        ax.set_title(f"{name}\nmu ({mu[k, 0]:.2f}, {mu[k, 1]:.2f})\n"
                     f"sigma ({sigma[k, 0]:.2f}, {sigma[k, 1]:.2f})", fontsize=8)
        ax.set_xlabel("x offset (strides)", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("y offset (strides), down", fontsize=7)
    fig.suptitle("learned centre prior G (red: G = 0.5; dashed white: initial G = 0.5)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_maps(image, gt, maps, strides, path, levels=3):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(maps)
    size = (2.6 * (levels + 1), 2.5 * len(rows))
    fig, axes = plt.subplots(len(rows), levels + 1, figsize=size, squeeze=False)
    for r, name in enumerate(rows):
        ax = axes[r][0]
        ax.imshow(image)
        for x0, y0, x1, y1 in gt.gt_boxes.tensor.tolist():
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.2))
        ax.set_title("image and GT boxes" if r == 0 else "", fontsize=8)
        ax.axis("off")
        vmax = max(float(m.max()) for m in maps[name][:levels]) or 1.0
        for lvl in range(levels):
            ax = axes[r][lvl + 1]
            m, s = maps[name][lvl], strides[lvl]
            h, w = m.shape
            # Location (i, j) lies at (j * s, i * s): its cell spans half a stride around it.
            extent = (-s / 2, w * s - s / 2, h * s - s / 2, -s / 2)
            ax.imshow(m, extent=extent, cmap="magma", vmin=0, vmax=vmax)
            for x0, y0, x1, y1 in gt.gt_boxes.tensor.tolist():
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=0.8))
            ax.set_xlim(0, image.shape[1])
            ax.set_ylim(image.shape[0], 0)
            ax.set_title(f"{name}, P{lvl + 3} (stride {s}); max {vmax:.2f}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--out", default="output/autoassign_assignment")
    parser.add_argument("--image", type=int, default=None,
                        help="index in the test set (default: the first image with 3 or more objects)")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    # With MODEL.WEIGHTS, set up as --eval-only (which requires them); without, the untrained
    # model's initial assignment is drawn (mu 0, sigma 1: what the tests check).
    mode = ["--eval-only"] if "MODEL.WEIGHTS" in args.opts[0::2] else []
    setup_args = train_net.default_argument_parser().parse_args(
        ["--config-file", args.config_file, *mode, *args.opts, "MODEL.DEVICE", "cpu",
         "OUTPUT_DIR", args.out]
    )
    cfg = train_net.setup(setup_args, train_net.add_autoassign_config)
    dataset = cfg.DATASETS.TEST[0]
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    records = DatasetCatalog.get(dataset)
    if args.image is None:
        args.image = next((i for i, d in enumerate(records) if len(d["annotations"]) >= 3), 0)
    d = records[args.image]
    if not d["annotations"]:
        raise SystemExit(f"error: image {args.image} of {dataset} has no object")
    inputs = DatasetMapper(cfg, is_train=False)(d)
    h, w = inputs["image"].shape[1:]
    box = torch.tensor([a["bbox"] for a in d["annotations"]], dtype=torch.float32)
    box[:, 2:] += box[:, :2]  # XYWH -> XYXY
    box *= torch.tensor([w / d["width"], h / d["height"]]).repeat(2)
    gt = Instances((h, w), gt_boxes=Boxes(box),
                   gt_classes=torch.tensor([a["category_id"] for a in d["annotations"]]))
    maps, share = assignment_maps(model, inputs, gt)

    os.makedirs(args.out, exist_ok=True)
    names = MetadataCatalog.get(dataset).thing_classes
    plot_priors(model, names, os.path.join(args.out, "center_prior.png"))
    image = inputs["image"].permute(1, 2, 0).numpy()
    if cfg.INPUT.FORMAT == "BGR":
        image = image[:, :, ::-1]
    plot_maps(image, gt, maps, model.anchor_generator.strides, os.path.join(args.out, "positive_weights.png"))
    summary = {
        "config": args.config_file, "weights": cfg.MODEL.WEIGHTS, "image": d["file_name"],
        "mu": {n: v for n, v in zip(names, model.center_prior.mu.tolist())},
        "sigma": {n: v for n, v in zip(names, model.center_prior.sigma.tolist())},
        "gts": [{"class": names[c], "box": b, "w+ per level": s}
                for c, b, s in zip(gt.gt_classes.tolist(), box.tolist(), share.tolist())],
    }
    json.dump(summary, open(os.path.join(args.out, "assignment.json"), "w"), indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
