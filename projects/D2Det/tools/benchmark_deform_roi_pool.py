#!/usr/bin/env python
"""Speed of the pure-PyTorch deformable RoI pooling (``d2det.layers.deform_roi_pool``, the
only op of D2Det without a torchvision kernel) against torchvision's compiled ``roi_align``
taking the same samples (14 x 14 bins, 2 x 2 samples each), forward + backward, at the toy
training size and at the COCO training size. This is the measurement that decides whether a
C++/CUDA kernel is worth writing (project README).

    python tools/benchmark_deform_roi_pool.py [--repeats 5] [--device cpu] [--out output/bench]
"""

import argparse
import json
import os
import platform
import sys
import time

import torch
from torchvision.ops import roi_align

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)
from d2det.layers import deform_roi_pool  # noqa: E402

# name: (images, RoIs per image, channels, feature height, width, stride). One level holds
# all RoIs (the worst case for one call). Toy: batch 16, 32 sampled RoIs per image, 64-channel
# FPN, P2 of a 128 x 192 input. COCO: 2 images per GPU, 512 RoIs each, 256 channels, P2 of
# 800 x 1216.
SIZES = {"toy": (16, 32, 64, 32, 48, 4), "coco": (2, 512, 256, 200, 304, 4)}


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


def measure(name, repeats, device):
    n, per_image, c, h, w, stride = SIZES[name]
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(n, c, h, w, generator=g).to(device)
    xy = torch.rand(n * per_image, 2, generator=g) * torch.tensor([w, h]) * stride * 0.8
    wh = torch.rand(n * per_image, 2, generator=g) * 100 + 8
    batch = torch.arange(n).repeat_interleave(per_image)[:, None].float()
    rois = torch.cat([batch, xy, xy + wh], dim=1).to(device)
    offset = (torch.randn(len(rois), 2, 14, 14, generator=g) * 0.1).to(device)

    def ours():
        f, o = feats.clone().requires_grad_(), offset.clone().requires_grad_()
        deform_roi_pool(f, rois, o, 14, 1 / stride, 2, 0.1).sum().backward()

    def torchvision():
        f = feats.clone().requires_grad_()
        roi_align(f, rois, 14, 1 / stride, 2, aligned=True).sum().backward()

    return {"rois": len(rois), "channels": c, "feature": [h, w],
            "seconds": {"ours": timed(ours, repeats, device),
                        "roi_align": timed(torchvision, repeats, device)}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="output/bench")
    args = parser.parse_args(argv)
    machine = (torch.cuda.get_device_name() if args.device == "cuda"
               else f"{platform.machine()}, {os.cpu_count()} CPU threads")
    res = {"machine": machine, "torch": torch.__version__,
           "sizes": {name: measure(name, args.repeats, args.device) for name in SIZES}}
    lines = [
        f"Machine: {machine}; torch {torch.__version__}; command: `python {' '.join(sys.argv)}`",
        "",
        "| size | RoIs | channels | deform_roi_pool fwd+bwd (ms) | roi_align fwd+bwd (ms) | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["sizes"].items():
        t = r["seconds"]
        lines.append(f"| {name} | {r['rois']} | {r['channels']} | {1000 * t['ours']:.1f} | "
                     f"{1000 * t['roi_align']:.1f} | {t['ours'] / t['roi_align']:.2f} |")
    os.makedirs(args.out, exist_ok=True)
    json.dump(res, open(os.path.join(args.out, "deform_roi_pool.json"), "w"), indent=1)
    open(os.path.join(args.out, "deform_roi_pool.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
