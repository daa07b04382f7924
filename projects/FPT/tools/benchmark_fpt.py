#!/usr/bin/env python
"""Time and peak memory of the FPT neck against detectron2's FPN at COCO size: forward +
backward of the neck alone (train mode) on the C2-C5 maps of R-50 for 2 images of 800 x 1333
(padded to 800 x 1344: C2 200 x 336 ... C5 25 x 42), 256 channels, GroupNorm laterals and
output convs as the COCO configs, float32.

Each neck runs in a fresh process (``--neck``): peak memory is that process's growth of its
peak resident set (CPU) or of ``torch.cuda.max_memory_allocated`` (CUDA) over its inputs.

    python tools/benchmark_fpt.py [--repeats 1] [--warmup 0] [--device cpu] [--images 2]

On a CPU one FPT step at this size takes minutes (the attention of P2's ~67k positions over
~17k keys, ST and GT(P2 <- P3)): no warm-up by default, whose effect is negligible there.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)
from fpt import FPT  # noqa: E402

LEVELS = {"res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}


class GivenMaps(Backbone):
    """A bottom-up "backbone" that returns the maps it is given (the neck's inputs)."""

    def forward(self, maps):
        return maps

    def output_shape(self):
        return {k: ShapeSpec(channels=c, stride=s) for k, (c, s) in LEVELS.items()}


def peak_bytes(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def one_neck(args):
    torch.manual_seed(0)
    kw = dict(in_features=list(LEVELS), out_channels=256, norm="GN", top_block=LastLevelMaxPool())
    neck = (FPT(GivenMaps(), chunk=args.chunk, **kw) if args.neck == "fpt" else FPN(GivenMaps(), **kw))
    neck = neck.to(args.device).train()
    h, w = 800, 1344
    maps = {k: torch.randn(args.images, c, h // s, w // s, device=args.device)
            for k, (c, s) in LEVELS.items()}

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    sync()
    before = peak_bytes(args.device)
    times = []
    for _ in range(args.warmup + args.repeats):
        sync()
        start = time.perf_counter()
        out = neck(maps)
        sum(o.float().square().mean() for o in out.values()).backward()
        sync()
        times.append(time.perf_counter() - start)
        neck.zero_grad(set_to_none=True)
        del out
    return {"neck": args.neck, "params_M": sum(p.numel() for p in neck.parameters()) / 1e6,
            "seconds": min(times[args.warmup:]),
            "peak_growth_mib": (peak_bytes(args.device) - before) / 2 ** 20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=4096, help="MODEL.FPT.ATTENTION_CHUNK")
    parser.add_argument("--out", default="output/bench")
    parser.add_argument("--neck", choices=("fpn", "fpt"), help="run one neck in this process")
    args = parser.parse_args()
    if args.neck:
        print(json.dumps(one_neck(args)))
        return
    rows = []
    for neck in ("fpn", "fpt"):
        r = subprocess.run([sys.executable, __file__, "--neck", neck, "--repeats", str(args.repeats),
                            "--warmup", str(args.warmup),
                            "--device", args.device, "--images", str(args.images),
                            "--chunk", str(args.chunk)],
                           capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    machine = f"{platform.machine()}, {os.cpu_count()} CPU threads, {args.device}, torch {torch.__version__}"
    lines = [f"FPT vs FPN neck, forward + backward, {args.images} images at 800 x 1333 (R-50 C2-C5, 256 "
             f"channels, attention chunk {args.chunk}). Machine: {machine}.", "",
             f"| neck | params (M) | seconds (min of {args.repeats}) | peak memory growth (MiB) |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['neck']} | {r['params_M']:.2f} | {r['seconds']:.2f} | {r['peak_growth_mib']:.0f} |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fpt.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "fpt.json"), "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
