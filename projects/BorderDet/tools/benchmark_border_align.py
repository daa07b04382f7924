#!/usr/bin/env python
"""Speed of the compiled BorderAlign against the pure-PyTorch reference, forward and
forward + backward, on a P3-sized input (default: 1 x 256 x 100 x 152, pool_size 10; the
classification branch of an 800 x 1216 COCO image).

    python tools/benchmark_border_align.py [--shape 1 256 100 152] [--repeats 5] [--device cpu]
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from borderdet.layers import border_align, border_align_reference, load_extension  # noqa: E402


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 256, 100, 152],
                        metavar=("N", "4C", "H", "W"))
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if load_extension() is None:
        raise SystemExit("error: the compiled BorderAlign did not build; nothing to compare")
    n, c4, h, w = args.shape
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(n, c4, h, w, generator=g).to(args.device)
    xy = torch.rand(n, h * w, 2, generator=g) * torch.tensor([w, h])
    boxes = torch.cat([xy, xy + torch.rand(n, h * w, 2, generator=g) * 20], dim=2).to(args.device)
    grad = torch.randn_like(feat)
    rows = {}
    for name, op in (("reference", border_align_reference), ("compiled", border_align)):
        x = feat.clone().requires_grad_()
        fwd = timed(lambda: op(x, boxes, args.pool_size), args.repeats, args.device)  # noqa: B023
        both = timed(lambda: op(x, boxes, args.pool_size).backward(grad), args.repeats, args.device)  # noqa: B023
        rows[name] = {"forward_ms": 1e3 * fwd, "forward_backward_ms": 1e3 * both}
    rows["speedup"] = {k: rows["reference"][k] / rows["compiled"][k] for k in rows["compiled"]}
    print(json.dumps({"shape": args.shape, "pool_size": args.pool_size, "device": args.device,
                      "threads": torch.get_num_threads(), **rows}, indent=1))


if __name__ == "__main__":
    main()
