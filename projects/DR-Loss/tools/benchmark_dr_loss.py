#!/usr/bin/env python
"""Time and peak memory of the DR loss against RetinaNet's focal loss, both forward + backward
on the classification logits of a COCO batch: 2 images at 800 x 1333, 9 anchors per position
on P3-P7 (2 x 200,700 anchors) x 80 classes = 32.1 M entries, 2 x 100 positive entries, logits
at the DR prior (0.5; focal: 0.01), in float32.

Each loss runs in a fresh process (``--loss``): peak memory is that process's growth of its
peak resident set (CPU) or of ``torch.cuda.max_memory_allocated`` (CUDA) over the inputs.

    python tools/benchmark_dr_loss.py [--repeats 3] [--device cpu] [--out output/bench]
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

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)
from dr_loss import dr_loss  # noqa: E402

# anchors per image at 800 x 1333: ceil(800 / s) x ceil(1333 / s) positions on P3-P7, 9 each
ANCHORS_COCO = 9 * sum(-(-800 // s) * -(-1333 // s) for s in (8, 16, 32, 64, 128))


def peak_bytes(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def one_loss(args):
    from fvcore.nn import sigmoid_focal_loss_jit

    g = torch.Generator().manual_seed(0)
    n = args.images * ANCHORS_COCO * args.classes
    prior = 0.0 if args.loss == "dr" else -4.595  # logit of 0.5 / 0.01
    logits = (torch.randn(n, generator=g) * 0.1 + prior).to(args.device)
    targets = torch.zeros(n, dtype=torch.int8)
    targets[torch.randperm(n, generator=g)[: args.positives * args.images]] = 1
    targets = targets.to(args.device)

    def step():
        x = logits.clone().requires_grad_()
        if args.loss == "dr":
            dr_loss(x, targets).backward()
        else:
            sigmoid_focal_loss_jit(x, targets.float(), alpha=0.25, gamma=2.0, reduction="sum").backward()

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    sync()
    before = peak_bytes(args.device)
    times = []
    for _ in range(args.repeats + 1):  # the first is a warm-up
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return {"loss": args.loss, "entries": n, "seconds": min(times[1:]),
            "peak_growth_mib": (peak_bytes(args.device) - before) / 2 ** 20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--positives", type=int, default=100, help="per image")
    parser.add_argument("--out", default="output/bench")
    parser.add_argument("--loss", choices=("dr", "focal"), help="run one loss in this process")
    args = parser.parse_args()
    if args.loss:
        print(json.dumps(one_loss(args)))
        return
    rows = []
    for loss in ("focal", "dr"):
        r = subprocess.run([sys.executable, __file__, "--loss", loss, "--repeats", str(args.repeats),
                            "--device", args.device, "--images", str(args.images),
                            "--classes", str(args.classes), "--positives", str(args.positives)],
                           capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    machine = f"{platform.machine()}, {os.cpu_count()} CPU threads, {args.device}, torch {torch.__version__}"
    lines = [f"DR loss vs focal loss, forward + backward on {rows[0]['entries']:,} logits "
             f"({args.images} images at 800 x 1333, {args.classes} classes). Machine: {machine}.", "",
             f"| loss | seconds (min of {args.repeats}) | peak memory growth (MiB) |", "|---|---:|---:|"]
    lines += [f"| {r['loss']} | {r['seconds']:.3f} | {r['peak_growth_mib']:.0f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "dr_loss.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "dr_loss.json"), "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
