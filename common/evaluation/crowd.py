"""Crowd-detection metrics as the CrowdHuman toolkit computes them (CrowdDet's ``evaluate/``:
``APMRToolkits`` for AP, MR^-2 and recall, ``compute_JI.py`` for JI), on full-body boxes.

Conventions kept from the toolkit:
- boxes of both sides are clipped to the image first (x0 to [0, w - 1], x1 to [0, w]);
- overlaps have no +1 in the areas and an eps of 1e-6 in the denominator;
- a detection matches an unmatched non-ignored ground truth with IoU > 0.5 (strictly), the
  highest-scoring detection first, the best IoU wins (Caltech matching). A detection that matches
  no ground truth but covers an ignore region (intersection / its own area > 0.5) is dropped;
  an ignore region can absorb any number of detections;
- AP: trapezoids under the precision-recall points, from the first detection on (no point at
  recall 0); recall: the recall after all detections;
- MR^-2: at 9 FPPI points log-spaced in [1e-2, 1] (the toolkit's rounded values), the miss rate
  at the first detection whose FPPI reaches the point (the last detection if none does), then
  the geometric mean;
- JI: per image and score threshold t in {0, 0.1, ..., 0.9}, detections with score > t and the
  non-ignored ground truth are matched one-to-one (maximum-weight bipartite matching on IoU,
  edges with IoU > 0.5); unmatched detections and unmatched ground truth that lie in an ignore
  region (intersection / own area > 0.5) are left out; JI = k / (m + n - k) with k matches, m
  ground truth, n detections. The mean over the images that have m or n > 0; the best t.

Where the toolkit fails (no detection at all, an image without ground truth boxes) we define
the value: no detection gives AP 0, recall 0, MR^-2 1; no counted ground truth at all gives NaN
for AP, recall and MR^-2.
"""

import itertools
import json
import logging
import os
from collections import OrderedDict

import networkx as nx
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

__all__ = [
    "CrowdHumanEvaluator", "MR_FPPI_POINTS", "ap_mr_recall", "box_overlaps", "caltech_match",
    "clip_to_image", "crowd_images", "evaluate_crowd", "image_jaccard", "jaccard_index",
]

# The toolkit's CALTECH_-2 reference points (rounded 10^(-2 + k/4)).
MR_FPPI_POINTS = (0.0100, 0.0178, 0.03160, 0.0562, 0.1000, 0.1778, 0.3162, 0.5623, 1.000)
JI_SCORE_THRESHOLDS = tuple(0.1 * i for i in range(10))
_EPS = 1e-6


def clip_to_image(boxes, height, width):
    """XYXY boxes clipped as the toolkit does: x0 in [0, w - 1], x1 in [0, w] (same for y)."""
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    b[:, 0] = np.clip(b[:, 0], 0, width - 1)
    b[:, 1] = np.clip(b[:, 1], 0, height - 1)
    b[:, 2] = np.clip(b[:, 2], 0, width)
    b[:, 3] = np.clip(b[:, 3], 0, height)
    return b


def box_overlaps(a, b, mode="iou"):
    """N x K overlaps of XYXY boxes: "iou", or "ioa" (intersection / area of the box in ``a``)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area_a = (np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0))[:, None]
    if mode == "ioa":
        return inter / (area_a + _EPS)
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    return inter / (area_a + area_b - inter + _EPS)


def caltech_match(dt_boxes, dt_scores, gt_boxes, gt_ignore, thresh=0.5, return_indices=False):
    """Matches one image's detections (highest score first) to its ground truth.

    Returns ``(scores, is_tp)`` of the detections that count: true positives and false
    positives, in descending score order; detections absorbed by an ignore region are left out.
    With ``return_indices``, also the index of each counted detection in ``dt_boxes`` and of
    the ground truth it matched in ``gt_boxes`` (-1 for a false positive).
    """
    dt_scores = np.asarray(dt_scores, np.float64).reshape(-1)
    order = np.argsort(-dt_scores, kind="stable")
    dt_boxes, dt_scores = np.asarray(dt_boxes, np.float64).reshape(-1, 4)[order], dt_scores[order]
    gt_ignore = np.asarray(gt_ignore, bool).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    people = np.nonzero(~gt_ignore)[0]
    iou = box_overlaps(dt_boxes, gt_boxes[people])
    ioa = box_overlaps(dt_boxes, gt_boxes[gt_ignore], mode="ioa")
    matched = np.zeros(len(people), bool)
    keep, gt_index = [], []
    for i in range(len(dt_boxes)):
        cand = np.where(matched, -1.0, iou[i])
        j = int(np.argmax(cand)) if len(people) else -1
        if j >= 0 and cand[j] > thresh:
            matched[j] = True
            keep.append(i)
            gt_index.append(people[j])
        elif ioa.shape[1] and ioa[i].max() > thresh:
            continue  # inside an ignore region: not counted
        else:
            keep.append(i)
            gt_index.append(-1)
    gt_index = np.array(gt_index, int)
    if return_indices:
        return dt_scores[keep], gt_index >= 0, order[keep], gt_index
    return dt_scores[keep], gt_index >= 0


def ap_mr_recall(scores, is_tp, num_gt, num_images):
    """AP, MR^-2 and recall from the counted detections of all images (toolkit formulas)."""
    if num_gt == 0:
        return float("nan"), float("nan"), float("nan")
    if len(scores) == 0:
        return 0.0, 1.0, 0.0
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    is_tp = np.asarray(is_tp, bool)[order]
    tp, fp = np.cumsum(is_tp), np.cumsum(~is_tp)
    recall = tp / num_gt
    precision = tp / (tp + fp)
    ap = float(np.sum((precision[1:] + precision[:-1]) / 2 * np.diff(recall)))
    fppi, miss = fp / num_images, 1.0 - recall
    picks = []
    for ref in MR_FPPI_POINTS:
        reached = np.nonzero(fppi >= ref)[0]
        picks.append(miss[reached[0]] if len(reached) else miss[-1])
    with np.errstate(divide="ignore"):
        mr = float(np.exp(np.log(np.array(picks)).mean()))
    return ap, mr, float(recall[-1])


def _max_weight_matches(iou, thresh):
    """Number of pairs of a maximum-weight one-to-one matching on the edges with IoU > thresh."""
    rows, cols = np.nonzero(iou > thresh)
    if len(rows) == 0:
        return 0, np.zeros(iou.shape[0], bool), np.zeros(iou.shape[1], bool)
    graph = nx.Graph()
    graph.add_weighted_edges_from((("d", i), ("g", j), iou[i, j]) for i, j in zip(rows, cols))
    dt_used, gt_used = np.zeros(iou.shape[0], bool), np.zeros(iou.shape[1], bool)
    pairs = []
    # A maximum-weight matching is one per connected component (crowds give many small ones;
    # the matching is cubic in the nodes it sees).
    for nodes in nx.connected_components(graph):
        sub = graph.subgraph(nodes)
        pairs += list(sub.edges) if len(nodes) == 2 else nx.max_weight_matching(sub, maxcardinality=False)
    for u, v in pairs:
        (_, i), (_, j) = sorted((u, v))  # ("d", i) sorts before ("g", j)
        dt_used[i], gt_used[j] = True, True
    return len(pairs), dt_used, gt_used


def image_jaccard(dt_boxes, gt_boxes, gt_ignore, thresh=0.5):
    """``(k, m, n)`` of one image: matches, counted ground truth, counted detections."""
    dt_boxes = np.asarray(dt_boxes, np.float64).reshape(-1, 4)
    gt_ignore = np.asarray(gt_ignore, bool).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    people, ignore = gt_boxes[~gt_ignore], gt_boxes[gt_ignore]
    k, dt_used, gt_used = _max_weight_matches(box_overlaps(dt_boxes, people), thresh)

    def in_ignore(boxes):
        if len(boxes) == 0 or len(ignore) == 0:
            return 0
        return int((box_overlaps(boxes, ignore, mode="ioa").max(1) > thresh).sum())

    m = len(people) - in_ignore(people[~gt_used])
    n = len(dt_boxes) - in_ignore(dt_boxes[~dt_used])
    return k, m, n


def jaccard_index(images, thresh=0.5, score_thresholds=JI_SCORE_THRESHOLDS):
    """JI over ``images`` (dicts with dt_boxes, dt_scores, gt_boxes, gt_ignore): the best over
    the score thresholds of the per-image mean of k / (m + n - k)."""
    best = 0.0
    for t in score_thresholds:
        ratios, counted = [], 0
        for im in images:
            keep = np.asarray(im["dt_scores"]).reshape(-1) > t
            k, m, n = image_jaccard(np.asarray(im["dt_boxes"]).reshape(-1, 4)[keep],
                                    im["gt_boxes"], im["gt_ignore"], thresh)
            ratios.append(k / (m + n - k + _EPS))
            counted += int(m != 0 or n != 0)
        if counted:
            best = max(best, sum(ratios) / counted)
    return best


def evaluate_crowd(images, thresh=0.5):
    """AP, MR^-2, recall and JI (fractions in [0, 1]) of ``images``: dicts with ``dt_boxes``,
    ``dt_scores``, ``gt_boxes`` (XYXY), ``gt_ignore`` and ``height``/``width`` (to clip)."""
    clipped, scores, is_tp, num_gt = [], [], [], 0
    for im in images:
        h, w = im["height"], im["width"]
        im = {**im, "dt_boxes": clip_to_image(im["dt_boxes"], h, w),
              "gt_boxes": clip_to_image(im["gt_boxes"], h, w)}
        clipped.append(im)
        s, tp = caltech_match(im["dt_boxes"], im["dt_scores"], im["gt_boxes"], im["gt_ignore"], thresh)
        scores.append(s)
        is_tp.append(tp)
        num_gt += int((~np.asarray(im["gt_ignore"], bool)).sum())
    ap, mr, recall = ap_mr_recall(
        np.concatenate(scores) if scores else np.zeros(0),
        np.concatenate(is_tp) if is_tp else np.zeros(0, bool), num_gt, len(images),
    )
    return {"AP": ap, "MR": mr, "recall": recall, "JI": jaccard_index(clipped, thresh)}


# ----------------------------------------------------------------------------- detectron2
class CrowdHumanEvaluator(DatasetEvaluator):
    """AP, MR^-2, recall and JI (in %) of a CrowdHuman-style dataset's full-body boxes
    (task "crowd"), and of the visible boxes (task "crowd_visible") where the model predicts
    them (``pred_vis_boxes``) and the dataset has them (``vis_bbox``).

    Ground truth comes from the dataset's dicts (``bbox`` full box; ``iscrowd`` 1 = ignore
    region). Images without a prediction count as images without detections. With an
    ``output_dir``, the detections are also written as ``crowd_detections.odgt`` (CrowdHuman's
    ``dtboxes`` format, with ``vbox`` where the model predicts visible boxes) and the ground
    truth of the same images as ``crowd_groundtruth.odgt`` (``gtboxes``; the full box under
    ``box`` and ``fbox``, ``vbox`` and ``hbox`` where the dataset has them, ignore regions as
    tag "mask" with ``extra.ignore`` 1), the pair the official toolkit's
    ``compute_APMR.py --target_key box`` reads (it takes the gt and the detections by the same
    key, so CrowdHuman's own ``annotation_val.odgt``, which has ``fbox``, does not work there).
    """

    def __init__(self, dataset_name, output_dir=None, iou_thresh=0.5, distributed=True):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._thresh = iou_thresh
        self._distributed = distributed
        self._logger = logging.getLogger("detectron2").getChild(__name__)

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            pred = {"image_id": inp["image_id"], "boxes": inst.pred_boxes.tensor.numpy(),
                    "scores": inst.scores.numpy()}
            if inst.has("pred_vis_boxes"):
                pred["vis_boxes"] = inst.pred_vis_boxes.tensor.numpy()
            self._predictions.append(pred)

    def evaluate(self):
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        dataset_dicts = DatasetCatalog.get(self._dataset_name)
        images, visible = crowd_images(dataset_dicts, predictions)
        if self._output_dir:
            self._write_odgt(images, os.path.join(self._output_dir, "crowd_detections.odgt"))
            self._write_gt_odgt(dataset_dicts, os.path.join(self._output_dir, "crowd_groundtruth.odgt"))
        results = OrderedDict(crowd=_percent(evaluate_crowd(images, self._thresh)))
        if visible is not None:
            results["crowd_visible"] = _percent(evaluate_crowd(visible, self._thresh))
        for task, res in results.items():
            self._logger.info(
                f"Evaluation results for {task} ({len(images)} images; MR is MR^-2, lower is "
                "better):\n" + " | ".join(f"{k} {v:.2f}" for k, v in res.items())
            )
        return results

    @staticmethod
    def _write_odgt(images, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            for im in images:
                boxes = np.asarray(im["dt_boxes"], np.float64).reshape(-1, 4)
                vis = im["dt_vis_boxes"]
                dts = []
                for i, (b, s) in enumerate(zip(boxes, np.asarray(im["dt_scores"]).reshape(-1))):
                    dt = {"box": _xywh(b), "score": float(s), "tag": 1}
                    if vis is not None:
                        dt["vbox"] = _xywh(vis[i])
                    dts.append(dt)
                f.write(json.dumps({"ID": im["image_id"], "height": im["height"],
                                    "width": im["width"], "dtboxes": dts}) + "\n")


    @staticmethod
    def _write_gt_odgt(dataset_dicts, path):
        with open(path, "w") as f:
            for d in dataset_dicts:
                gts = []
                for a in d.get("annotations", []):
                    box = _xywh(_xyxy([a], "bbox")[0])
                    ignore = int(a.get("iscrowd", 0) == 1)
                    gt = {"box": box, "fbox": box, "tag": "mask" if ignore else "person",
                          "extra": {"ignore": ignore}}
                    for key, odgt_key in (("vis_bbox", "vbox"), ("head_bbox", "hbox")):
                        if key in a:
                            gt[odgt_key] = _xywh(_xyxy([a], key)[0])
                    gts.append(gt)
                f.write(json.dumps({"ID": d["image_id"], "height": d["height"], "width": d["width"],
                                    "gtboxes": gts}) + "\n")


def crowd_images(dataset_dicts, predictions):
    """The records ``evaluate_crowd`` takes, from detectron2 dataset dicts and predictions
    (dicts with image_id, XYXY ``boxes``, ``scores``, optional ``vis_boxes``; an image without
    one has no detections). Returns ``(full, visible)``: ``visible`` scores the visible boxes
    (people's ``vis_bbox``, ignore regions unchanged) and is None unless every image has
    predicted and annotated visible boxes."""
    by_id = {p["image_id"]: p for p in predictions}
    images, visible = [], []
    for d in dataset_dicts:
        annos = d.get("annotations", [])
        ignore = np.array([a.get("iscrowd", 0) == 1 for a in annos], bool)
        pred = by_id.get(d["image_id"], {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)})
        im = {
            "image_id": d["image_id"], "height": d["height"], "width": d["width"],
            "gt_boxes": _xyxy(annos, "bbox"), "gt_ignore": ignore,
            "dt_boxes": pred["boxes"], "dt_scores": pred["scores"],
            "dt_vis_boxes": pred.get("vis_boxes"),
        }
        images.append(im)
        if im["dt_vis_boxes"] is not None and all("vis_bbox" in a or ig for a, ig in zip(annos, ignore)):
            key = ["bbox" if ig else "vis_bbox" for ig in ignore]
            visible.append({**im, "gt_boxes": _xyxy(annos, key), "dt_boxes": im["dt_vis_boxes"]})
    return images, (visible if len(visible) == len(images) else None)


def _percent(metrics):
    return {k: 100.0 * v for k, v in metrics.items()}


def _xyxy(annos, keys):
    """XYXY boxes of ``annos`` from the key ``keys`` (one key, or one per annotation)."""
    keys = [keys] * len(annos) if isinstance(keys, str) else keys
    boxes = [BoxMode.convert(a[k], a["bbox_mode"], BoxMode.XYXY_ABS) for a, k in zip(annos, keys)]
    return np.array(boxes, np.float64).reshape(-1, 4)


def _xywh(b):
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
