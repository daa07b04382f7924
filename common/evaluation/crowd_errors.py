"""What the false positives of a crowd detector are, at the FPPI points MR^-2 looks at.

    python -m common.evaluation.crowd_errors GT.odgt IMAGE_DIR DETECTIONS.odgt

``DETECTIONS.odgt`` is what ``CrowdHumanEvaluator`` writes (``inference/crowd_detections.odgt``).
Detections are matched as the CrowdHuman toolkit does (``crowd.caltech_match``); a false
positive is a **duplicate** when its full box overlaps a person by IoU > 0.5 (that person was
already taken by a higher-scoring detection: the ones NMS should have removed), else **other**
(background, or a box too poor to match). For duplicates, the median IoU of their full box,
and of their visible box where there is one, with the detection that took the person shows
why NMS kept them.
"""

import argparse
import json
import warnings

import numpy as np

from common.data import load_crowdhuman_odgt
from common.evaluation.crowd import box_overlaps, caltech_match, clip_to_image, crowd_images

__all__ = ["false_positive_kinds"]


def _xyxy(boxes):
    b = np.array(boxes, np.float64).reshape(-1, 4)
    b[:, 2:] += b[:, :2]
    return b


def false_positive_kinds(images, fppi_points=(0.01, 0.1, 1.0), thresh=0.5):
    """``images``: ``crowd.crowd_images`` records (gt_boxes, gt_ignore, dt_boxes, dt_scores,
    optional dt_vis_boxes, height, width; boxes are clipped here as ``evaluate_crowd`` does).
    Returns, per FPPI point, the score reached there, the number of
    duplicate and other false positives up to it, and the median full / visible IoU of those
    duplicates with the detection that took their person."""
    fps = []  # (score, is_duplicate, full IoU with the taker, visible IoU with the taker)
    for im in images:
        h, w = im["height"], im["width"]
        im = {**im, "dt_boxes": clip_to_image(im["dt_boxes"], h, w),
              "gt_boxes": clip_to_image(im["gt_boxes"], h, w)}
        scores, is_tp, dt_idx, gt_idx = caltech_match(
            im["dt_boxes"], im["dt_scores"], im["gt_boxes"], im["gt_ignore"], thresh, return_indices=True
        )
        people = np.nonzero(~np.asarray(im["gt_ignore"], bool))[0]
        taker = {g: d for d, g in zip(dt_idx[is_tp], gt_idx[is_tp])}
        iou = box_overlaps(im["dt_boxes"], im["gt_boxes"][people])
        vis = im.get("dt_vis_boxes")
        for s, d in zip(scores[~is_tp], dt_idx[~is_tp]):
            if len(people) == 0 or iou[d].max() <= thresh:
                fps.append((s, False, np.nan, np.nan))
                continue
            t = taker[people[int(np.argmax(iou[d]))]]
            full = box_overlaps(im["dt_boxes"][d], im["dt_boxes"][t])[0, 0]
            v = box_overlaps(vis[d], vis[t])[0, 0] if vis is not None else np.nan
            fps.append((s, True, full, v))
    fps.sort(key=lambda f: -f[0])
    rows = []
    for point in fppi_points:
        upto = fps[: max(int(round(point * len(images))), 1)]
        dups = np.array([f[2:] for f in upto if f[1]], np.float64).reshape(-1, 2)
        with warnings.catch_warnings():  # the median of nothing (or of NaNs only) is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            full_iou, vis_iou = np.nanmedian(dups, axis=0) if len(dups) else (np.nan, np.nan)
        rows.append({
            "fppi": point, "score": upto[-1][0] if upto else float("nan"),
            "duplicates": len(dups), "others": len(upto) - len(dups),
            "dup_full_iou": float(full_iou), "dup_vis_iou": float(vis_iou),
        })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gt", help="ground truth .odgt")
    parser.add_argument("images", help="its image folder (for the image sizes)")
    parser.add_argument("detections", help="crowd_detections.odgt")
    args = parser.parse_args(argv)
    predictions = []
    with open(args.detections) as f:
        for line in f:
            rec = json.loads(line)
            dts = rec["dtboxes"]
            predictions.append({
                "image_id": rec["ID"], "boxes": _xyxy([b["box"] for b in dts]),
                "scores": np.array([b["score"] for b in dts]),
                "vis_boxes": _xyxy([b["vbox"] for b in dts]) if dts and "vbox" in dts[0] else None,
            })
    images, _ = crowd_images(load_crowdhuman_odgt(args.gt, args.images), predictions)
    print("| FPPI | score there | duplicate FPs | other FPs | duplicates' full IoU with the kept "
          "detection (median) | visible IoU (median) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in false_positive_kinds(images):
        print(f"| {r['fppi']} | {r['score']:.3f} | {r['duplicates']} | {r['others']} | "
              f"{r['dup_full_iou']:.2f} | {r['dup_vis_iou']:.2f} |")


if __name__ == "__main__":
    main()
