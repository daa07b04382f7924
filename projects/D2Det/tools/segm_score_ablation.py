#!/usr/bin/env python
"""Mask AP of a D2Det mask model's detections ranked two ways: by D2Det's mask scores (box
score + 0.3 x predicted mask IoU, as trained and evaluated) and by the box scores alone, from
the two result files ``train_net.py`` writes (``<OUTPUT_DIR>/inference/coco_instances_results.json``,
box scores; ``.../inference/segm/coco_instances_results.json``, masks with mask scores).

    python tools/segm_score_ablation.py GT.json OUTPUT_DIR/inference
"""

import argparse
import contextlib
import io
import json
import os

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def segm_ap(gt, detections):
    """COCO mask AP, AP50, AP75 (in %)."""
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes(detections), "segm")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return [100 * float(v) for v in e.stats[:3]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gt", help="COCO-format ground truth json with masks")
    parser.add_argument("inference", help="the inference folder of a D2Det mask model's run")
    args = parser.parse_args(argv)
    boxes = json.load(open(os.path.join(args.inference, "coco_instances_results.json")))
    masks = json.load(open(os.path.join(args.inference, "segm", "coco_instances_results.json")))
    # Both evaluators see the same detections in the same order.
    if len(boxes) != len(masks) or any(b["image_id"] != m["image_id"] or b["category_id"] != m["category_id"]
                                       for b, m in zip(boxes, masks)):
        raise SystemExit("the two result files do not hold the same detections")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(args.gt)
    rankings = {"mask score": [m["score"] for m in masks], "box score": [b["score"] for b in boxes]}
    for name, scores in rankings.items():
        ap, ap50, ap75 = segm_ap(gt, [dict(m, score=s) for m, s in zip(masks, scores)])
        print(f"masks ranked by {name}: AP {ap:.1f}  AP50 {ap50:.1f}  AP75 {ap75:.1f}")


if __name__ == "__main__":
    main()
