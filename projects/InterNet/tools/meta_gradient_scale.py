#!/usr/bin/env python
"""How strongly the meta-loss pulls on the shared network, at initialisation: the norm of the
gradient that the unweighted meta-loss sends to the backbone (ResNet + FPN), divided by the
detection losses' one, averaged over a few random batches (images of noise, random boxes).
Multiplied by a weight, it says how much that weight lets the meta-loss dominate training.

    python tools/meta_gradient_scale.py                       # the toy L2 and OT configs
    python tools/meta_gradient_scale.py --config-file configs/internet_R-50-FPN_1x_coco.yaml \
        --image-size 800 1088 --box-sizes 16 400 --images 2
"""

import argparse
import os
import sys

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
from internet import add_internet_config  # noqa: E402

TOY = [os.path.join(HERE, "configs", "toy", f)
       for f in ("internet-l2_R-18-FPN_toy.yaml", "internet_R-18-FPN_toy.yaml")]


def random_batch(n, h, w, sizes, num_classes, objects=6):
    batch = []
    for _ in range(n):
        s = torch.empty(objects).uniform_(*sizes)
        x0, y0 = torch.rand(objects) * (w - s), torch.rand(objects) * (h - s)
        gt = Instances((h, w))
        gt.gt_boxes = Boxes(torch.stack([x0, y0, x0 + s, y0 + s], dim=1))
        gt.gt_classes = torch.randint(0, num_classes, (objects,))
        batch.append({"image": torch.rand(3, h, w) * 255, "instances": gt})
    return batch


def gradient_ratio(model, batch):
    shared = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    with EventStorage():
        losses = model(batch)
    heads = model.roi_heads
    meta = losses.pop("loss_meta") / heads.meta_weight
    norms = []
    for loss in (sum(losses.values()), meta):
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        norms.append(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)))
    return (norms[1] / norms[0]).item(), meta.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", nargs="*", default=TOY)
    parser.add_argument("--image-size", type=int, nargs=2, default=(128, 160))
    parser.add_argument("--box-sizes", type=float, nargs=2, default=(8, 64), help="square GT box sides, px")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=6)
    args = parser.parse_args()
    print("| config | weight | meta-loss (unweighted) | grad ratio meta/detection (unweighted) | x weight |")
    print("|---|---:|---:|---:|---:|")
    for path in args.config_file:
        cfg = get_cfg()
        add_internet_config(cfg)
        cfg.set_new_allowed(True)  # the toy configs carry the training engine's keys (SOLVER.OPTIMIZER)
        cfg.merge_from_file(path)
        cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES",
                             str(args.num_classes)])
        torch.manual_seed(0)
        model = build_model(cfg).train()
        ratios, metas = [], []
        for _ in range(args.batches):
            r, m = gradient_ratio(model, random_batch(args.images, *args.image_size, args.box_sizes,
                                                      args.num_classes))
            ratios.append(r)
            metas.append(m)
        ratio, weight = sum(ratios) / len(ratios), model.roi_heads.meta_weight
        print(f"| {os.path.basename(path)} | {weight:g} | {sum(metas) / len(metas):.4f} | {ratio:.3g} | "
              f"{ratio * weight:.3g} |")


if __name__ == "__main__":
    main()
