"""The crowd metrics (common/evaluation/crowd.py) on small cases worked out by hand."""

import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from common.evaluation import CrowdHumanEvaluator, evaluate_crowd
from common.evaluation.crowd import ap_mr_recall, caltech_match, clip_to_image, image_jaccard

# Image A (100 x 100): people P1, P2, P3 and an ignore region R.
P1, P2, P3, R = [0, 0, 10, 20], [50, 0, 60, 20], [20, 50, 30, 70], [80, 80, 100, 100]
DETS_A = [  # box, score
    ([0, 0, 10, 20], 0.9),    # d1: P1 exactly -> true positive
    ([0, 0, 10, 19], 0.8),    # d2: duplicate of P1 (IoU 0.95, P1 taken) -> false positive
    ([85, 85, 95, 95], 0.7),  # d3: inside R -> not counted
    ([50, 0, 60, 20], 0.6),   # d5: P2 -> true positive; P3 is missed
]
DET_B = ([10, 10, 20, 20], 0.85)  # image B has no people: a false positive; image C: nothing


def _images():
    def im(gt, ignore, dets):
        return {"height": 100, "width": 100,
                "gt_boxes": np.array(gt, float).reshape(-1, 4), "gt_ignore": np.array(ignore, bool),
                "dt_boxes": np.array([d[0] for d in dets], float).reshape(-1, 4),
                "dt_scores": np.array([d[1] for d in dets], float)}

    return [im([P1, P2, P3, R], [0, 0, 0, 1], DETS_A), im([], [], [DET_B]), im([], [], [])]


# By hand. Counted detections by score: .9 TP, .85 FP, .8 FP, .6 TP; 3 people, 3 images.
#   recall 1/3, 1/3, 1/3, 2/3; precision 1, 1/2, 1/3, 1/2
#   AP = trapezoids between consecutive points = (1/3 + 1/2) / 2 * (2/3 - 1/3) = 5/36
#   FPPI 0, 1/3, 2/3, 2/3 and miss rate 2/3, 2/3, 2/3, 1/3: the FPPI points 0.01 ... 0.3162
#   first reach 1/3 (miss 2/3), 0.5623 reaches 2/3 (miss 2/3), 1.0 is never reached (the last
#   detection: miss 1/3) -> MR^-2 = exp((8 ln 2/3 + ln 1/3) / 9)
#   JI at score thresholds 0 .. 0.5: image A k = 2 (d1-P1, d5-P2), m = 3, n = 4 - 1 (d3 in R)
#   -> 2 / 4; image B 0 (m = 0, n = 1); image C has m = n = 0, not counted -> (1/2 + 0) / 2.
#   Higher thresholds drop d5 first and are lower (0.125, 0.125, 1/6, 0).
EXPECTED = {
    "AP": 5 / 36,
    "MR": math.exp((8 * math.log(2 / 3) + math.log(1 / 3)) / 9),
    "recall": 2 / 3,
    "JI": 0.25,
}


def test_hand_worked_case():
    got = evaluate_crowd(_images())
    for k, v in EXPECTED.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k


def test_caltech_matching_duplicate_ignore_and_order():
    scores, is_tp = caltech_match(
        [d[0] for d in DETS_A[::-1]], [d[1] for d in DETS_A[::-1]], [R, P1, P2, P3], [1, 0, 0, 0]
    )
    assert scores.tolist() == [0.9, 0.8, 0.6]  # d3 (in R) is not counted
    assert is_tp.tolist() == [True, False, True]
    # A detection on a person that also lies in an ignore region is that person's match.
    _, is_tp = caltech_match([[0, 0, 10, 20]], [0.5], [[0, 0, 10, 20], [0, 0, 50, 50]], [0, 1])
    assert is_tp.tolist() == [True]
    # IoU must be > 0.5: a box with IoU exactly 0.5 (half of P1) is a false positive.
    _, is_tp = caltech_match([[0, 0, 10, 10]], [0.5], [P1], [0])
    assert is_tp.tolist() == [False]


def test_jaccard_uses_the_best_one_to_one_matching():
    # Two people X, Y; detection a overlaps X best (IoU 9/11) but also Y (7/13), b only X (8/12).
    # Score-ordered greedy matching gives a-X and leaves b unmatched; the maximum-weight
    # bipartite matching (a-Y + b-X = 1.205 > a-X = 0.818) matches both.
    X, Y, a, b = [10, 0, 20, 10], [14, 0, 24, 10], [11, 0, 21, 10], [8, 0, 18, 10]
    assert image_jaccard([a, b], [X, Y], [0, 0]) == (2, 2, 2)
    _, is_tp = caltech_match([a, b], [0.9, 0.8], [X, Y], [0, 0])
    assert is_tp.tolist() == [True, False]
    # An unmatched person inside an ignore region is not counted either.
    assert image_jaccard([], [X, [0, 0, 50, 50]], [0, 1]) == (0, 0, 0)


def test_empty_cases():
    # No detection at all: AP 0, recall 0, every miss rate 1, JI 0.
    imgs = _images()
    for im in imgs:
        im["dt_boxes"], im["dt_scores"] = np.zeros((0, 4)), np.zeros(0)
    assert evaluate_crowd(imgs) == {"AP": 0.0, "MR": 1.0, "recall": 0.0, "JI": 0.0}
    # Nothing to find: AP, MR^-2 and recall are undefined.
    got = evaluate_crowd([_images()[1]])
    assert math.isnan(got["AP"]) and math.isnan(got["MR"]) and math.isnan(got["recall"])
    # Every person found before any false positive: miss rate 0 at every point. AP is 1/2, not
    # 1: the toolkit's trapezoids start at the first detection (recall 1/2), not at recall 0.
    assert ap_mr_recall([0.9, 0.8], [True, True], 2, 1) == (0.5, 0.0, 1.0)


def test_clipping_as_the_toolkit():
    got = clip_to_image([[-5, -5, 120, 130], [99.5, 10, 101, 20]], 100, 100)
    assert got.tolist() == [[0, 0, 100, 100], [99, 10, 100, 20]]


# Visible boxes for the evaluator test: each person's upper half; the detections' visible boxes
# match d1 (P1), duplicate it (d2), lie in R (d3), and take P2's lower half (d5: no match).
VIS_GT = [[0, 0, 10, 10], [50, 0, 60, 10], [20, 50, 30, 60]]
VIS_A = [[0, 0, 10, 10], [0, 0, 10, 9], [85, 85, 95, 90], [50, 10, 60, 20]]
VIS_B = [10, 10, 20, 15]
# By hand: counted .9 TP, .85 FP, .8 FP, .6 FP of 3 people -> recall 1/3 at every point, so
# AP 0 (no trapezoid gains recall) and miss rate 2/3 at every FPPI point -> MR^-2 2/3. JI: at
# thresholds 0 .. 0.5 image A has k = 1, m = 3, n = 3 (d3 in R) -> 1/5, B 0 -> 0.1; 0.6 and 0.7
# drop d5 / d3 -> (1/4 + 0) / 2; 0.8 drops d2 -> (1/3 + 0) / 2 = 1/6 (the best); 0.9 -> 0.
EXPECTED_VISIBLE = {"AP": 0.0, "MR": 2 / 3, "recall": 1 / 3, "JI": 1 / 6}


def test_evaluator_on_a_registered_dataset(tmp_path):
    """The detectron2 evaluator: XYWH ground truth and iscrowd ignore regions from the dataset
    dicts, predictions as Instances, the same numbers in %, the visible boxes' metrics from
    ``vis_bbox`` and ``pred_vis_boxes`` (ignore regions kept), an .odgt file."""
    name = "crowd_eval_test"
    xywh = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in (P1, P2, P3, R)]
    vis_xywh = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in VIS_GT]
    dicts = [
        {"image_id": "A", "height": 100, "width": 100, "annotations": [
            {"bbox": b, "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": int(i == 3),
             **({"vis_bbox": vis_xywh[i]} if i < 3 else {})}
            for i, b in enumerate(xywh)]},
        {"image_id": "B", "height": 100, "width": 100, "annotations": []},
        {"image_id": "C", "height": 100, "width": 100, "annotations": []},
    ]
    if name not in DatasetCatalog:
        DatasetCatalog.register(name, lambda: dicts)
    ev = CrowdHumanEvaluator(name, output_dir=str(tmp_path), distributed=False)
    ev.reset()
    for image_id, dets, vis in (("A", DETS_A, VIS_A), ("B", [DET_B], [VIS_B]), ("C", [], [])):
        inst = Instances((100, 100))
        inst.pred_boxes = Boxes(torch.tensor([d[0] for d in dets], dtype=torch.float32).reshape(-1, 4))
        inst.pred_vis_boxes = Boxes(torch.tensor(vis, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor([d[1] for d in dets])
        inst.pred_classes = torch.zeros(len(dets), dtype=torch.long)
        ev.process([{"image_id": image_id}], [{"instances": inst}])
    results = ev.evaluate()
    for task, expected in (("crowd", EXPECTED), ("crowd_visible", EXPECTED_VISIBLE)):
        for k, v in expected.items():
            assert results[task][k] == pytest.approx(100 * v, abs=1e-4), (task, k)
    records = [json.loads(line) for line in open(tmp_path / "crowd_detections.odgt")]
    assert [r["ID"] for r in records] == ["A", "B", "C"]
    assert records[0]["dtboxes"][1]["box"] == [0, 0, 10, 19]
    assert records[0]["dtboxes"][1]["vbox"] == [0, 0, 10, 9] and records[2]["dtboxes"] == []
    # The ground truth of the same images, keyed "box" as the detections (the official
    # compute_APMR.py reads both with --target_key box), ignore regions tagged as such.
    gt = [json.loads(line) for line in open(tmp_path / "crowd_groundtruth.odgt")]
    assert [r["ID"] for r in gt] == ["A", "B", "C"] and gt[1]["gtboxes"] == []
    assert [g["box"] for g in gt[0]["gtboxes"]] == [g["fbox"] for g in gt[0]["gtboxes"]] == xywh
    assert [g["tag"] for g in gt[0]["gtboxes"]] == ["person"] * 3 + ["mask"]
    assert [g["extra"]["ignore"] for g in gt[0]["gtboxes"]] == [0, 0, 0, 1]
    assert [g.get("vbox") for g in gt[0]["gtboxes"]] == [*vis_xywh, None]
    # Without a prediction for an image (C), or without visible boxes, only the full boxes count.
    ev.reset()
    ev.process([{"image_id": "A"}], [{"instances": inst[:0]}])
    assert list(ev.evaluate()) == ["crowd"]


def test_matching_per_connected_component_equals_the_whole_graph():
    """JI matches each connected component of the IoU graph on its own (fast on crowds); the
    result must be the maximum-weight matching of the whole graph."""
    import networkx as nx

    from common.evaluation.crowd import _max_weight_matches, box_overlaps

    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(0, 200, (30, 2))
        gt = np.concatenate([xy, xy + rng.uniform(10, 40, (30, 2))], 1)
        dt = gt[rng.integers(0, 30, 80)] + rng.normal(0, 3, (80, 4))
        dt[:, 2:] = np.maximum(dt[:, 2:], dt[:, :2] + 1)
        iou = box_overlaps(dt, gt)
        k, dt_used, gt_used = _max_weight_matches(iou, 0.5)
        rows, cols = np.nonzero(iou > 0.5)
        graph = nx.Graph()
        graph.add_weighted_edges_from((("d", i), ("g", j), iou[i, j]) for i, j in zip(rows, cols))
        whole = nx.max_weight_matching(graph)
        assert k == len(whole) == dt_used.sum() == gt_used.sum()


def test_false_positive_kinds_by_hand():
    """Image A's d2 duplicates P1 (full IoU 190 / 200 with d1, which took P1; visible IoU 90 /
    100), image B's detection is on no one; d3 lies in R and does not count."""
    from common.evaluation.crowd_errors import false_positive_kinds

    imgs = _images()
    imgs[0]["dt_vis_boxes"] = np.array(VIS_A, float)
    imgs[1]["dt_vis_boxes"] = np.array([VIS_B], float)
    imgs[2]["dt_vis_boxes"] = np.zeros((0, 4))
    first, everything = false_positive_kinds(imgs, fppi_points=(1 / 3, 1.0))
    # FPPI 1/3 of 3 images = the first false positive by score: B's (0.85).
    assert (first["duplicates"], first["others"], first["score"]) == (0, 1, 0.85)
    assert (everything["duplicates"], everything["others"]) == (1, 1)
    assert everything["dup_full_iou"] == pytest.approx(0.95, abs=1e-6)
    assert everything["dup_vis_iou"] == pytest.approx(0.9, abs=1e-6)
