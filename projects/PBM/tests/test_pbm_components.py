"""PBM's mechanisms on constructed boxes and features, against values worked out by hand."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from pbm import (
    PPFE,
    CrowdDatasetMapper,
    PairedDatasetMapper,
    ignored_by_regions,
    match_pairs,
    paired_inference_single_image,
    pairwise_iof,
    r2nms,
)
from pbm.ppfe import visible_mask


def B(*boxes):
    return Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))


def test_iof_by_hand():
    vis = B([0, 0, 10, 20], [5, 5, 5, 9])  # the second has zero area
    anchors = B([5, 0, 15, 20], [0, 0, 100, 100], [50, 50, 60, 60])
    # |A & V| / |V|: half of V; all of V (although IoU is only 200 / 10000); nothing.
    expected = [[0.5, 1.0, 0.0], [0.0, 0.0, 0.0]]
    assert pairwise_iof(vis, anchors).tolist() == expected
    assert pairwise_iou(vis, anchors)[0, 1].item() == pytest.approx(0.02)


def test_paired_rpn_rule_on_constructed_boxes():
    # Person 0: full F0, only the top quarter V0 visible. Person 1: full F1, right half visible.
    full = B([0, 0, 20, 40], [40, 0, 60, 40])
    vis = B([0, 0, 20, 10], [50, 0, 60, 40])
    anchors = B(
        [0, 0, 20, 40],      # F0 itself: IoU 1, IoF 1 -> positive for person 0
        [0, 5, 20, 45],      # IoU(A, F0) = 700 / 900 = 0.78 but IoF(A, V0) = 100 / 200 = 0.5 -> ignored
        [100, 0, 120, 40],   # overlaps nobody -> negative
        [42, 0, 62, 40],     # IoU(A, F1) = 720 / 880 = 0.82, IoF(A, V1) = 1 -> positive for person 1
    )
    iou, iof = pairwise_iou(full, anchors), pairwise_iof(vis, anchors)
    assert iou[0, 1].item() == pytest.approx(7 / 9) and iof[0, 1].item() == pytest.approx(0.5)
    matched, labels = match_pairs(iou, iof, 0.7, 0.7, 0.3)
    assert labels.tolist() == [1, -1, 0, 1]
    assert matched[0].item() == 0 and matched[3].item() == 1


def test_pair_matching_rule_on_quality_matrices():
    full_q = torch.tensor([
        [0.80, 0.75, 0.20, 0.50],
        [0.90, 0.78, 0.10, 0.60],
        [0.10, 0.10, 0.25, 0.65],
    ])
    vis_q = torch.tensor([
        [0.9, 0.9, 0.9, 0.9],
        [0.5, 0.9, 0.9, 0.9],  # pair 1's visible part does not fit sample 0
        [0.9, 0.9, 0.9, 0.9],
    ])
    matched, labels = match_pairs(full_q, vis_q, 0.7, 0.7, 0.3)
    # 0: pair 1 has the better full IoU (0.9) but fails its visible test -> pair 0;
    # 1: both pairs qualify -> the better full IoU (pair 1); 2: best full IoU 0.25 < 0.3 ->
    # negative; 3: best full IoU 0.65, no pair qualifies -> ignored.
    assert labels.tolist() == [1, 1, 0, -1]
    assert matched[:2].tolist() == [0, 1]
    # Low-quality matches: pair 2 has no positive; its best qualifying sample (3, 0.65) joins it.
    matched, labels = match_pairs(full_q, vis_q, 0.7, 0.7, 0.3, allow_low_quality_matches=True)
    assert labels.tolist() == [1, 1, 0, 1]
    assert matched.tolist()[:2] == [0, 1] and matched[3].item() == 2
    # No ground truth: everything is a negative.
    matched, labels = match_pairs(torch.zeros(0, 5), torch.zeros(0, 5), 0.7, 0.7, 0.3, True)
    assert labels.tolist() == [0] * 5 and matched.tolist() == [0] * 5


# Two people side by side, full boxes overlapping (IoU 640 / 960 = 0.67), visible halves
# disjoint; and a duplicate of person a (full IoU 760 / 840, visible IoU 400 / 440 = 0.91).
FULL = [[0, 0, 20, 40], [4, 0, 24, 40], [1, 0, 21, 40]]
VIS = [[0, 0, 10, 40], [14, 0, 24, 40], [0, 0, 11, 40]]
SCORES = [0.9, 0.8, 0.7]


def test_r2nms_keeps_two_overlapping_people_and_removes_a_duplicate():
    full, vis = torch.tensor(FULL, dtype=torch.float), torch.tensor(VIS, dtype=torch.float)
    scores = torch.tensor(SCORES)
    classes = torch.zeros(3, dtype=torch.long)
    assert pairwise_iou(B(*FULL[:1]), B(*FULL[1:2])).item() == pytest.approx(2 / 3)
    assert r2nms(vis, scores, classes, 0.5).tolist() == [0, 1]
    # Greedy NMS on the full boxes loses person b with the duplicate.
    assert r2nms(full, scores, classes, 0.5).tolist() == [0]


@pytest.mark.parametrize("nms, kept", [("r2nms", [0, 1]), ("greedy", [0])])
def test_paired_inference_keeps_full_boxes_of_the_kept_pairs(nms, kept):
    # Scores of (person, background); 3 pairs, one class, class-specific boxes (R x 4).
    probs = torch.tensor([[s, 1 - s] for s in SCORES])
    inst = paired_inference_single_image(
        torch.tensor(FULL, dtype=torch.float), torch.tensor(VIS, dtype=torch.float), probs,
        (50, 50), score_thresh=0.05, nms_thresh=0.5, topk=100, nms=nms,
    )
    assert inst.pred_boxes.tensor.tolist() == [FULL[i] for i in kept]
    assert inst.pred_vis_boxes.tensor.tolist() == [VIS[i] for i in kept]
    assert inst.scores.tolist() == pytest.approx([SCORES[i] for i in kept])


def test_visible_mask_by_hand():
    # A 70 x 70 full box on a 7 x 7 grid: cell centres at 5, 15, ..., 65.
    full = torch.tensor([[0.0, 0, 70, 70], [0, 0, 70, 70]])
    vis = torch.tensor([[0.0, 0, 30, 70], [20, 10, 50, 40]])
    m = visible_mask(full, vis, 7)
    expected = torch.zeros(2, 1, 7, 7)
    expected[0, 0, :, :3] = 1             # centres 5, 15, 25 are left of x = 30
    expected[1, 0, 1:4, 2:5] = 1          # x centres 25, 35, 45; y centres 15, 25, 35
    assert torch.equal(m, expected)


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_ppfe_fusion(fusion):
    full_feat, vis_feat = torch.randn(2, 4, 7, 7), torch.randn(2, 4, 7, 7)
    full = torch.tensor([[0.0, 0, 70, 70], [0, 0, 70, 70]])
    vis = torch.tensor([[0.0, 0, 30, 70], [20, 10, 50, 40]])
    out = PPFE(fusion)(full_feat, vis_feat, full, vis)
    assert out.shape == (2, 8, 7, 7)
    mask = visible_mask(full, vis, 7) if fusion == "attention" else 1.0
    assert torch.equal(out[:, :4], full_feat * mask)
    assert torch.equal(out[:, 4:], vis_feat)
    if fusion == "attention":
        assert (out[0, :4, :, 3:] == 0).all() and (out[0, :4, :, :3] == full_feat[0, :, :, :3]).all()


def test_bad_switches_fail_clearly():
    with pytest.raises(ValueError, match="MODEL.PBM.FUSION"):
        PPFE("sum")


def test_mapper_flips_the_visible_box_with_the_image():
    d = {"file_name": "x.png", "height": 40, "width": 60, "annotations": [
        {"bbox": [1, 2, 10, 30], "vis_bbox": [1, 2, 10, 15], "bbox_mode": BoxMode.XYWH_ABS,
         "category_id": 0, "iscrowd": 0},
        {"bbox": [30, 0, 10, 10], "bbox_mode": BoxMode.XYWH_ABS,
         "category_id": 0, "iscrowd": 1},  # an ignore region: kept, marked, its own visible box
    ]}
    out = _mapper_call(d)
    inst = out["instances"]
    # XYXY [1, 2, 11, 32] / [1, 2, 11, 17] mirrored in a 60 px wide image: x -> 60 - x.
    assert inst.gt_boxes.tensor.tolist() == [[49, 2, 59, 32], [20, 0, 30, 10]]
    assert inst.gt_vis_boxes.tensor.tolist() == [[49, 2, 59, 17], [20, 0, 30, 10]]
    assert inst.gt_ignore.tolist() == [False, True]
    # The baseline's mapper: the same boxes and ignore marks, no visible boxes.
    base = _mapper_call(d, CrowdDatasetMapper)["instances"]
    assert base.gt_boxes.tensor.tolist() == inst.gt_boxes.tensor.tolist() and not base.has("gt_vis_boxes")
    assert base.gt_ignore.tolist() == [False, True]


def test_ignore_rule_of_the_crowddet_baseline():
    """A RoI is ignored when its IoU with every person is < 0.5 and at least half of it lies
    in an ignore region (CrowdDet's fpn_roi_target)."""
    people = Boxes(torch.tensor([[0.0, 0, 10, 20]]))
    regions = Boxes(torch.tensor([[50.0, 0, 100, 50]]))
    rois = Boxes(torch.tensor([
        [0.0, 0, 10, 20],     # the person (IoU 1): not ignored, even if a region covered it
        [60, 10, 70, 20],     # inside the region (1.0), IoU 0 with the person: ignored
        [40, 0, 60, 10],      # half inside (100 / 200 = 0.5): ignored
        [30, 0, 60, 10],      # a third inside: background
        [20, 20, 30, 30],     # nowhere: background
    ]))
    iou = pairwise_iou(people, rois)
    assert ignored_by_regions(rois, iou, regions).tolist() == [False, True, True, False, False]
    assert ignored_by_regions(rois, iou, regions[:0]).tolist() == [False] * 5
    assert ignored_by_regions(rois, iou[:0], regions).tolist() == [False, True, True, False, False]


def test_mapper_drops_masks_and_keypoints():
    """A person with a polygon and keypoints: flipping keypoints would need flip indices."""
    d = {"file_name": "x.png", "height": 40, "width": 60, "annotations": [
        {"bbox": [1, 2, 10, 30], "vis_bbox": [1, 2, 10, 15], "bbox_mode": BoxMode.XYWH_ABS,
         "category_id": 0, "iscrowd": 0, "segmentation": [[1, 2, 11, 2, 11, 32, 1, 32]],
         "keypoints": [5.0, 5.0, 2.0] * 17},
    ]}
    inst = _mapper_call(d)["instances"]
    assert inst.gt_boxes.tensor.tolist() == [[49, 2, 59, 32]]
    assert not inst.has("gt_masks") and not inst.has("gt_keypoints")


def test_mapper_without_visible_boxes_fails_clearly():
    d = {"file_name": "x.png", "height": 40, "width": 60, "annotations": [
        {"bbox": [1, 2, 10, 30], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]}
    with pytest.raises(ValueError, match="no visible box"):
        _mapper_call(d)


def _mapper_call(d, mapper=PairedDatasetMapper):
    """Runs the mapper on an in-memory 40 x 60 image instead of reading ``file_name``."""
    import detectron2.data.detection_utils as utils

    real = utils.read_image
    utils.read_image = lambda *a, **k: np.zeros((40, 60, 3), np.uint8)
    try:
        return mapper(is_train=True, augmentations=[T.RandomFlip(prob=1.0)], image_format="BGR")(d)
    finally:
        utils.read_image = real
