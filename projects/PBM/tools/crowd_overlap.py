#!/usr/bin/env python
"""How crowded is a CrowdHuman-style .odgt for NMS? Counts the people whose full box, and whose
visible box, overlaps another person's by IoU > thresh, and how many people greedy NMS (full
boxes) and R2NMS (visible boxes) would delete if every person were detected exactly (scored by
full-box area, nearer people first): what each NMS costs even a perfect detector.

    python tools/crowd_overlap.py ~/.cache/d2papers/toy/toy_crowd_val_n200_s3_v1/annotations.odgt
    python tools/crowd_overlap.py annotation_val.odgt --thresh 0.5          # CrowdHuman
"""

import argparse
import json

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, pairwise_iou


def xyxy(box):
    return [box[0], box[1], box[0] + box[2], box[1] + box[3]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("odgt")
    parser.add_argument("--thresh", type=float, default=0.5)
    args = parser.parse_args()
    people = 0
    over = {"fbox": 0, "vbox": 0}
    deleted = {"fbox": 0, "vbox": 0}
    with open(args.odgt) as f:
        for line in f:
            if not line.strip():
                continue
            gts = [g for g in json.loads(line).get("gtboxes", [])
                   if g.get("tag") == "person" and not g.get("extra", {}).get("ignore", 0)]
            people += len(gts)
            if len(gts) < 2:
                continue
            full = Boxes(torch.tensor([xyxy(g["fbox"]) for g in gts], dtype=torch.float64))
            for key in over:
                boxes = torch.tensor([xyxy(g[key]) for g in gts], dtype=torch.float64)
                iou = pairwise_iou(Boxes(boxes), Boxes(boxes)).fill_diagonal_(0)
                over[key] += int((iou.max(1).values > args.thresh).sum())
                kept = batched_nms(boxes, full.area(), torch.zeros(len(gts), dtype=torch.long), args.thresh)
                deleted[key] += len(gts) - len(kept)
    pct = {k: {"over": 100 * over[k] / people, "deleted": 100 * deleted[k] / people} for k in over}
    print(f"{args.odgt}: {people} people (IoU threshold {args.thresh})")
    print(f"full boxes overlapping another person's: {over['fbox']} ({pct['fbox']['over']:.1f} %); "
          f"visible boxes: {over['vbox']} ({pct['vbox']['over']:.1f} %)")
    print(f"exact detections deleted by greedy NMS: {deleted['fbox']} ({pct['fbox']['deleted']:.1f} %), "
          f"by R2NMS: {deleted['vbox']} ({pct['vbox']['deleted']:.1f} %)")


if __name__ == "__main__":
    main()
