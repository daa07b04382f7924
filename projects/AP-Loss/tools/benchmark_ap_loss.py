#!/usr/bin/env python
"""Speed of the vectorised AP-loss: one loss forward + backward on the scores of 2 images at
512 x 512 with 80 classes (2 x 32,736 anchors x 80 = 5.2 M entries, 100 positives per image,
scores around the initial prior where every negative is in reach of the positives: the worst
case), against the loop oracle (Algorithm 1 one positive at a time, as the official code) and
against RetinaNet's focal loss; the same for 8 images (the official per-GPU ranking set); then
the whole train step of the COCO R-50 model on 2 random 512 x 512 images, AP-loss against
focal loss (same detector, ``MODEL.AP_LOSS.CLS_LOSS focal``).

    python tools/benchmark_ap_loss.py [--repeats 3] [--device cpu] [--out output/bench]
"""

import argparse
import json
import os
import platform
import sys
import time

import torch

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)
sys.path.insert(0, os.path.join(PROJECT, "tests"))
from ap_loss import add_ap_loss_config, ap_loss  # noqa: E402
from ap_loss_oracle import ap_loss_loop  # noqa: E402

ANCHORS_512 = sum((512 // s) ** 2 for s in (8, 16, 32, 64, 128)) * 6  # 32,736 per image


def timed(fn, repeats, device):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def loss_only(args, images):
    from fvcore.nn import sigmoid_focal_loss_jit

    g = torch.Generator().manual_seed(0)
    n = images * ANCHORS_512 * args.classes
    logits = (torch.randn(n, generator=g) * 0.5 - 4.6).to(args.device)
    labels = torch.zeros(n, dtype=torch.int8)
    labels[torch.randperm(n, generator=g)[: args.positives * images]] = 1
    labels = labels.to(args.device)

    def ours():
        x = logits.clone().requires_grad_()
        ap_loss(x, labels).backward()

    def focal():
        x = logits.clone().requires_grad_()
        targets = (labels == 1).float()
        sigmoid_focal_loss_jit(x, targets, alpha=0.25, gamma=2.0, reduction="sum").backward()

    t = {"ap_loss": timed(ours, args.repeats, args.device),
         "focal_loss": timed(focal, args.repeats, args.device),
         "loop_oracle": timed(lambda: ap_loss_loop(logits, labels), 1, args.device)}
    return {"images": images, "entries": n, "positives": args.positives * images, "seconds": t}


def train_step(args):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(args.images):
        xy = torch.rand(7, 2, generator=g) * 400
        wh = torch.rand(7, 2, generator=g) * 200 + 12
        inst = Instances((512, 512), gt_boxes=Boxes((torch.cat([xy, xy + wh], 1)).clamp(max=511)),
                         gt_classes=torch.randint(0, args.classes, (7,), generator=g))
        batch.append({"image": torch.rand(3, 512, 512, generator=g) * 255, "instances": inst})
    out = {}
    for loss in ("ap", "focal"):
        cfg = get_cfg()
        add_ap_loss_config(cfg)
        cfg.merge_from_file(os.path.join(PROJECT, "configs", "Base-AP-Loss.yaml"))
        cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device, "MODEL.AP_LOSS.CLS_LOSS", loss,
                             "MODEL.RETINANET.NUM_CLASSES", str(args.classes)])
        torch.manual_seed(0)
        model = build_model(cfg).train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

        def step(model=model, opt=opt):
            with EventStorage():
                losses = model(batch)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()

        out[loss] = timed(step, args.repeats, args.device)
    return {"images": args.images, "seconds": out}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--positives", type=int, default=100, help="per image")
    parser.add_argument("--loss-images", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="output/bench")
    args = parser.parse_args(argv)
    machine = (torch.cuda.get_device_name() if args.device == "cuda"
               else f"{platform.machine()}, {os.cpu_count()} CPU threads")
    res = {"machine": machine, "torch": torch.__version__,
           "loss": [loss_only(args, n) for n in args.loss_images], "train_step": train_step(args)}
    lines = [
        f"Machine: {machine}; torch {torch.__version__}; command: `python {' '.join(sys.argv)}`",
        "",
        "| measurement (seconds) | AP-loss (ours) | loop oracle | focal loss | ours / oracle "
        "| ours / focal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["loss"]:
        t = r["seconds"]
        lines.append(
            f"| loss fwd+bwd, {r['images']} images: {r['entries'] / 1e6:.1f} M entries, "
            f"{r['positives']} positives | {t['ap_loss']:.3f} | {t['loop_oracle']:.3f} | "
            f"{t['focal_loss']:.3f} | {t['ap_loss'] / t['loop_oracle']:.3f} | "
            f"{t['ap_loss'] / t['focal_loss']:.2f} |")
    s = res["train_step"]["seconds"]
    lines.append(f"| R-50 train step (fwd, bwd, SGD), {args.images} images of 512 x 512 | {s['ap']:.2f} | | "
                 f"{s['focal']:.2f} | | {s['ap'] / s['focal']:.2f} |")
    os.makedirs(args.out, exist_ok=True)
    json.dump(res, open(os.path.join(args.out, "ap_loss.json"), "w"), indent=1)
    open(os.path.join(args.out, "ap_loss.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
