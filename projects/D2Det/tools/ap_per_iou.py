#!/usr/bin/env python
"""Box AP at each IoU threshold 0.50, 0.55, ..., 0.95 (all areas, 100 detections), the ten
numbers whose mean is COCO's AP, for one or more detectors' ``coco_instances_results.json``
(written by detectron2's COCOEvaluator under ``<OUTPUT_DIR>/inference/``).

    python tools/ap_per_iou.py GT.json NAME=RESULTS.json [NAME=RESULTS.json ...]
"""

import argparse
import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def ap_per_iou(gt, results):
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes(results), "bbox")
        e.evaluate()
        e.accumulate()
    precision = e.eval["precision"][:, :, :, 0, -1]  # IoU x recall x class, all areas, 100 dets
    return [100 * float(np.mean(p[p > -1])) for p in precision]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gt", help="COCO-format ground truth json")
    parser.add_argument("results", nargs="+", help="NAME=coco_instances_results.json")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(args.gt)
    thresholds = " | ".join(f"AP{int(round(100 * t))}" for t in np.linspace(0.5, 0.95, 10))
    print(f"| detector | {thresholds} | AP |")
    print("|---|" + "---:|" * 11)
    for item in args.results:
        name, path = item.split("=", 1)
        ap = ap_per_iou(gt, path)
        print(f"| {name} | " + " | ".join(f"{a:.1f}" for a in ap) + f" | {np.mean(ap):.1f} |")


if __name__ == "__main__":
    main()
