#!/usr/bin/env python
"""Speed of the PSConv layer: the official three convs, the fast form (one grouped conv for the
dense part, the FLOPs of a dense 3x3) and a dense 3x3 conv, forward and forward + backward, in
one process on the same inputs; at the sizes of ResNet-50's res3 and res4 PS layers of an
800 x 1333 image (batch 1). Then one train step of the toy Faster R-CNN with the plain,
the PS (three-conv) and the PS (fast) ResNet-18.

    python tools/benchmark_psconv.py [--repeats 5] [--device cpu] [--out output/bench]
"""

import argparse
import json
import os
import platform
import sys
import time

import torch
from torch import nn

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(PROJECT))
sys.path.insert(0, PROJECT)
sys.path.insert(0, REPO)
from psconv import PSConv2d  # noqa: E402

LAYERS = {"res3 (128 ch, 100 x 167)": (128, 100, 167), "res4 (256 ch, 50 x 84)": (256, 50, 84)}


def timed(fn, repeats, device):
    fn()
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


def layer_rows(args):
    rows = []
    for name, (ch, h, w) in LAYERS.items():
        torch.manual_seed(0)
        x = torch.randn(1, ch, h, w, device=args.device)
        three = PSConv2d(ch, ch, 3, 1, 1, 2).to(args.device)
        fast = PSConv2d(ch, ch, 3, 1, 1, 2, impl="fast").to(args.device)
        fast.load_state_dict(three.state_dict())
        dense = nn.Conv2d(ch, ch, 3, 1, 1, bias=False).to(args.device)
        for label, layer in (("dense 3x3", dense), ("PSConv, three convs", three), ("PSConv, fast", fast)):
            xg = x.clone().requires_grad_()

            def forward(layer=layer, x=x):
                layer(x)

            def train(layer=layer, xg=xg):
                layer(xg).sum().backward()

            rows.append({
                "layer": name, "impl": label,
                "forward_ms": 1e3 * timed(forward, args.repeats, args.device),
                "train_ms": 1e3 * timed(train, args.repeats, args.device),
                "params": sum(p.numel() for p in layer.parameters()),
            })
    return rows


def train_step_rows(args):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from harness.projects import load_config
    from harness.testing import make_instances

    toy = os.path.join(PROJECT, "configs", "toy", "psconv-faster_rcnn_R-18-FPN_toy.yaml")
    g = torch.Generator().manual_seed(0)
    batch = [{"image": torch.rand(3, 128, 160, generator=g) * 255,
              "instances": make_instances(128, 160, [[10, 12, 50, 60], [70, 30, 120, 100]], [1, 3])}
             for _ in range(args.images)]
    rows = []
    for label, opts in (("ResNet-18", ["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone"]),
                        ("PS-ResNet-18, three convs", []),
                        ("PS-ResNet-18, fast", ["MODEL.PSCONV.IMPL", "fast"])):
        torch.manual_seed(0)
        model = build_model(load_config(toy, ["MODEL.DEVICE", args.device, *opts])).train()

        def step(model=model):
            with EventStorage():
                sum(model(batch).values()).backward()

        rows.append({"model": label, "train_step_ms": 1e3 * timed(step, args.repeats, args.device)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=16, help="images per toy train step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="output/bench")
    args = parser.parse_args()
    layers, steps = layer_rows(args), train_step_rows(args)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU threads, {args.device}, "
               f"torch {torch.__version__}")
    lines = [f"PSConv speed (min of {args.repeats}). Machine: {machine}.", "",
             "| layer | implementation | forward ms | forward + backward ms | parameters |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['layer']} | {r['impl']} | {r['forward_ms']:.1f} | {r['train_ms']:.1f} "
              f"| {r['params']:,} |" for r in layers]
    lines += ["", f"| toy Faster R-CNN ({args.images} images, 128 x 160) | train step ms |", "|---|---:|"]
    lines += [f"| {r['model']} | {r['train_step_ms']:.0f} |" for r in steps]
    text = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "psconv.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "psconv.json"), "w") as f:
        json.dump({"machine": machine, "layers": layers, "train_steps": steps}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
